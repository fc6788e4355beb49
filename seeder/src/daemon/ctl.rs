/*!
The control socket: how `seeder ctl` (run as root or the service's user on the device) talks
to the running daemon. A Unix socket `control.sock` in the data folder, mode 0600: the file's
permissions are the authentication. One JSON request per line, one JSON response per line.

The server side is [`serve`], which takes any [`CtlBackend`] (the daemon implements it over its
registry and store); the client side is [`request`]. Requests ([`MAX_REQUEST`]) and responses
([`MAX_LINE`]) are bounded, and so is every wait on a client ([`REQUEST_WAIT`],
[`ANSWER_WAIT`]); every connection is handled on its own task, so a stuck client holds up
nobody.
*/

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// The socket's file name in the data folder.
pub const SOCKET_NAME: &str = "control.sock";

/// Longest response line the client reads: a status with thousands of spaces fits.
pub const MAX_LINE: usize = 1 << 20;

/// Longest request line the daemon reads: the longest request is a space add with a seed code
/// and a name, a few hundred bytes. With [`MAX_CONNECTIONS`] clients this bounds what they can
/// make the daemon buffer to 8 MiB.
pub const MAX_REQUEST: usize = 64 << 10;

/// How long writing an answer may take before the connection is closed: `seeder ctl` reads it
/// at once; a client that doesn't read must not keep its slot.
pub const ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Control connections open at once; more wait to be accepted. Each is a task and a file
/// descriptor, held at most [`REQUEST_WAIT`] while idle, so idle clients can't lock a person
/// out: with this many, a new one is taken within that time.
const MAX_CONNECTIONS: usize = 128;

/// Requests being answered at once (each on the blocking pool): control is for a person and a
/// few scripts.
const MAX_ANSWERING: usize = 16;

/// How long a connection may take to send its (next) request line before it is closed.
pub const REQUEST_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// What `seeder ctl` can ask.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum CtlRequest {
    Status,
    SpaceAdd {
        code: String,
        name: Option<String>,
        quota: Option<u64>,
    },
    SpaceRemove {
        name: String,
        purge: bool,
    },
    SpaceList,
    PeerAdd {
        peer: String,
    },
    /// Stop dialing a partner: its node id or a unique start of it.
    PeerRemove {
        node: String,
    },
    PeerList,
    SetupCode,
    /// Use this setup code (only while unclaimed).
    SetSetupCode {
        code: String,
    },
    ResetPassword,
    /// The board's claim button was pressed (from `seeder board`).
    ButtonPressed,
    /// Read back and check every held entry now (the daily scrub, at once); damaged entries
    /// are then fetched again from the next peer that holds them.
    Scrub,
}

/// The answer: a JSON value for the client to print, or an error message for a person.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum CtlResponse {
    Ok { value: serde_json::Value },
    Error { message: String, not_found: bool },
}

/// The daemon's side of the control socket.
pub trait CtlBackend: Send + Sync + 'static {
    fn handle(&self, request: CtlRequest) -> CtlResponse;
}

/// Errors of the control socket.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CtlError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no seeder is running with data folder {0} (no control socket there)")]
    NotRunning(PathBuf),
    #[error("the daemon's answer is not understood: {0}")]
    BadResponse(String),
    #[error("response over {MAX_LINE} bytes")]
    TooLong,
}

/// Bind the control socket in `dir` (replacing a stale one) with mode 0600.
pub fn bind(dir: &Path) -> Result<UnixListener, CtlError> {
    let path = dir.join(SOCKET_NAME);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(CtlError::Io {
                what: "cannot replace",
                path,
                source,
            })
        }
    }
    let listener = UnixListener::bind(&path).map_err(|source| CtlError::Io {
        what: "cannot listen on",
        path: path.clone(),
        source,
    })?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        CtlError::Io {
            what: "cannot restrict",
            path,
            source,
        }
    })?;
    Ok(listener)
}

/// Answer requests on `listener` until `shutdown` completes.
pub async fn serve(
    listener: UnixListener,
    backend: Arc<dyn CtlBackend>,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let answering = Arc::new(tokio::sync::Semaphore::new(MAX_ANSWERING));
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => return,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "control socket accept failed");
                continue;
            }
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (backend, answering) = (backend.clone(), answering.clone());
        tokio::spawn(async move {
            if let Err(e) = connection(stream, backend, answering).await {
                tracing::debug!(error = %e, "control connection ended");
            }
            drop(permit);
        });
    }
}

async fn connection(
    stream: UnixStream,
    backend: Arc<dyn CtlBackend>,
    answering: Arc<tokio::sync::Semaphore>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read).take(MAX_REQUEST as u64 + 1);
    let mut line = String::new();
    loop {
        line.clear();
        let n = match tokio::time::timeout(REQUEST_WAIT, read.read_line(&mut line)).await {
            Ok(n) => n?,
            // Idle (or a request trickling in): closed, the slot goes to someone else.
            Err(_) => return Ok(()),
        };
        if n == 0 {
            return Ok(());
        }
        if n > MAX_REQUEST {
            let refusal = CtlResponse::Error {
                message: format!("request over {MAX_REQUEST} bytes"),
                not_found: false,
            };
            let mut out = serde_json::to_vec(&refusal).map_err(std::io::Error::other)?;
            out.push(b'\n');
            return answer(&mut write, &out).await;
        }
        let response = match serde_json::from_str::<CtlRequest>(line.trim_end()) {
            Ok(req) => {
                let backend = backend.clone();
                let turn = answering
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(std::io::Error::other)?;
                tokio::task::spawn_blocking(move || {
                    let _turn = turn;
                    backend.handle(req)
                })
                .await
                .unwrap_or_else(|_| CtlResponse::Error {
                    message: "the daemon failed to answer; see its log".into(),
                    not_found: false,
                })
            }
            Err(e) => CtlResponse::Error {
                message: format!("request not understood: {e}"),
                not_found: false,
            },
        };
        let mut out = serde_json::to_vec(&response).map_err(std::io::Error::other)?;
        out.push(b'\n');
        answer(&mut write, &out).await?;
        read.set_limit(MAX_REQUEST as u64 + 1);
    }
}

/// Write an answer within [`ANSWER_WAIT`].
async fn answer(write: &mut tokio::net::unix::OwnedWriteHalf, out: &[u8]) -> std::io::Result<()> {
    tokio::time::timeout(ANSWER_WAIT, write.write_all(out))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "the client read nothing"))?
}

/// Send one request to the daemon whose data folder is `dir` (blocking; for the CLI).
pub fn request(dir: &Path, req: &CtlRequest) -> Result<CtlResponse, CtlError> {
    use std::io::{BufRead, Read, Write};
    let path = dir.join(SOCKET_NAME);
    let mut stream = match std::os::unix::net::UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(CtlError::NotRunning(dir.to_path_buf()))
        }
        Err(source) => {
            return Err(CtlError::Io {
                what: "cannot connect to",
                path,
                source,
            })
        }
    };
    let io = |source| CtlError::Io {
        what: "talking to",
        path: path.clone(),
        source,
    };
    // A daemon that stops answering must not hang the command: a scrub reads every entry,
    // anything else answers at once.
    let wait = match req {
        CtlRequest::Scrub => std::time::Duration::from_secs(3600),
        _ => std::time::Duration::from_secs(60),
    };
    stream.set_read_timeout(Some(wait)).map_err(io)?;
    stream
        .set_write_timeout(Some(std::time::Duration::from_secs(10)))
        .map_err(io)?;
    let mut line = serde_json::to_vec(req).map_err(|e| CtlError::BadResponse(e.to_string()))?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io)?;
    let mut reader = std::io::BufReader::new(stream).take(MAX_LINE as u64 + 1);
    let mut answer = String::new();
    reader.read_line(&mut answer).map_err(io)?;
    if answer.len() > MAX_LINE {
        return Err(CtlError::TooLong);
    }
    serde_json::from_str(answer.trim_end()).map_err(|e| CtlError::BadResponse(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;

    impl CtlBackend for Echo {
        fn handle(&self, request: CtlRequest) -> CtlResponse {
            match request {
                CtlRequest::SpaceRemove { name, .. } => CtlResponse::Error {
                    message: format!("no space named {name:?}"),
                    not_found: true,
                },
                other => CtlResponse::Ok {
                    value: serde_json::to_value(other).expect("requests serialize"),
                },
            }
        }
    }

    #[tokio::test]
    async fn requests_round_trip_through_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let listener = bind(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(SOCKET_NAME))
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
            .unwrap();
        assert_eq!(mode, 0o600);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, Arc::new(Echo), async {
            let _ = stopped.await;
        }));
        let d = dir.path().to_path_buf();
        let answers = tokio::task::spawn_blocking(move || {
            let a = request(
                &d,
                &CtlRequest::SpaceAdd {
                    code: "seed-x".into(),
                    name: None,
                    quota: Some(5),
                },
            );
            let b = request(
                &d,
                &CtlRequest::SpaceRemove {
                    name: "x".into(),
                    purge: true,
                },
            );
            (a, b)
        })
        .await
        .unwrap();
        match answers.0.unwrap() {
            CtlResponse::Ok { value } => {
                assert_eq!(value["op"], "space-add");
                assert_eq!(value["quota"], 5);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            answers.1.unwrap(),
            CtlResponse::Error {
                not_found: true,
                ..
            }
        ));
        let _ = stop.send(());
        tokio::time::timeout(std::time::Duration::from_secs(10), server)
            .await
            .expect("server stops on shutdown")
            .unwrap();
    }

    #[tokio::test]
    async fn garbage_gets_an_error_not_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let listener = bind(dir.path()).unwrap();
        tokio::spawn(serve(listener, Arc::new(Echo), std::future::pending()));
        let mut s = UnixStream::connect(dir.path().join(SOCKET_NAME))
            .await
            .unwrap();
        s.write_all(b"{not json}\n").await.unwrap();
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).await.unwrap();
        let resp: CtlResponse = serde_json::from_str(line.trim_end()).unwrap();
        assert!(matches!(resp, CtlResponse::Error { .. }));
    }

    #[test]
    fn no_daemon_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = request(dir.path(), &CtlRequest::Status).unwrap_err();
        assert!(matches!(err, CtlError::NotRunning(_)));
        assert!(err.to_string().contains("no seeder is running"));
    }
}
