//! `seeder board`: the appliance's status LED and power button, run as root beside the daemon
//! (see `daemon::board`).

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;

use crate::daemon::board::{self, Host};
use crate::daemon::ctl::{self, CtlRequest, CtlResponse};

#[derive(Debug, Args)]
pub struct BoardArgs {
    /// Data folder of the running daemon (its control socket).
    #[arg(long, default_value = "/var/lib/seeder", value_name = "DIR")]
    data: PathBuf,
    /// The status LED: a name under /sys/class/leds (the Lime2's is
    /// `olinuxino-lime2:green:usr`) or a folder.
    #[arg(long, value_name = "NAME")]
    led: Option<String>,
    /// The power button's input device; `auto` finds the AXP209's (`axp20x-pek`).
    #[arg(long, value_name = "DEVICE")]
    button: Option<String>,
    /// What a long press runs.
    #[arg(long, default_value = "systemctl poweroff", value_name = "COMMAND")]
    shutdown_command: String,
}

struct Daemon {
    data: PathBuf,
    shutdown: Vec<String>,
}

impl Host for Daemon {
    fn status(&self) -> Option<serde_json::Value> {
        match ctl::request(&self.data, &CtlRequest::Status) {
            Ok(CtlResponse::Ok { value }) => Some(value),
            _ => None,
        }
    }

    fn button_pressed(&self) {
        match ctl::request(&self.data, &CtlRequest::ButtonPressed) {
            Ok(CtlResponse::Ok { .. }) => {}
            Ok(CtlResponse::Error { message, .. }) => {
                tracing::warn!(%message, "the daemon refused the button press")
            }
            Err(e) => tracing::warn!(error = %e, "cannot tell the daemon about the button"),
        }
    }

    fn shutdown(&self) {
        let Some((program, args)) = self.shutdown.split_first() else {
            return;
        };
        match std::process::Command::new(program).args(args).status() {
            Ok(s) if s.success() => {}
            Ok(s) => tracing::error!(status = %s, "shutdown command failed"),
            Err(e) => tracing::error!(error = %e, "cannot run the shutdown command"),
        }
    }
}

pub fn run(args: BoardArgs) -> Result<()> {
    let led = args.led.map(|l| {
        if l.contains('/') {
            PathBuf::from(l)
        } else {
            PathBuf::from("/sys/class/leds").join(l)
        }
    });
    let button = match args.button.as_deref() {
        Some("auto") => {
            let found = board::find_power_button();
            if found.is_none() {
                tracing::warn!("no axp20x-pek power button found");
            }
            found
        }
        Some(path) => Some(PathBuf::from(path)),
        None => None,
    };
    let host = Arc::new(Daemon {
        data: args.data,
        shutdown: args
            .shutdown_command
            .split_whitespace()
            .map(str::to_string)
            .collect(),
    });
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(crate::daemon::serve::shutdown_signal());
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
    }
    tracing::info!(?led, ?button, "board support running");
    board::run(host, button, led, stop).context("board support")
}
