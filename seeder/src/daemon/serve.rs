/*!
`seeder serve`: open the data folder, answer the control socket, tell systemd we're ready,
and shut down cleanly on SIGTERM or Ctrl-C (every acknowledged write is already durable; the
store is flushed last).
*/

use std::path::PathBuf;
use std::sync::Arc;

use super::backend::Daemon;
use super::registry::Registry;
use crate::store::{Store, StoreConfig};

/// Settings of a running daemon.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The data folder: the store, the registry, the control socket.
    pub data: PathBuf,
    /// sled's cache, in bytes (see [`StoreConfig::cache_bytes`]).
    pub cache_bytes: u64,
}

/// Errors that stop the daemon from starting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Registry(#[from] super::registry::RegistryError),
    #[error(transparent)]
    Ctl(#[from] super::ctl::CtlError),
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Run until `shutdown` resolves.
pub async fn run(
    config: ServeConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    let mut sc = StoreConfig::default();
    sc.cache_bytes(config.cache_bytes);
    let store = Store::open(&config.data, &sc)?;
    let registry = Registry::open(&store)?;
    let daemon = Arc::new(Daemon {
        store: store.clone(),
        registry,
        started: std::time::Instant::now(),
    });
    let listener = super::ctl::bind(&config.data)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let ctl = tokio::spawn(super::ctl::serve(listener, daemon.clone(), async move {
        let mut rx = stop_rx;
        let _ = rx.wait_for(|stop| *stop).await;
    }));
    tracing::info!(data = %config.data.display(), "seeder ready");
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::debug!(error = %e, "not under systemd");
    }
    // Under systemd with WatchdogSec, prove liveness at half the interval: if the runtime
    // stalls, the pings stop and systemd restarts the service.
    let watchdog = sd_notify::watchdog_enabled().map(|interval| {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval / 2);
            loop {
                tick.tick().await;
                if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]) {
                    tracing::warn!(error = %e, "watchdog ping failed");
                }
            }
        })
    });
    shutdown.await;
    if let Some(w) = watchdog {
        w.abort();
    }
    tracing::info!("shutting down");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    let _ = stop_tx.send(true);
    let _ = ctl.await;
    let _ = std::fs::remove_file(config.data.join(super::ctl::SOCKET_NAME));
    store.flush()?;
    Ok(())
}
