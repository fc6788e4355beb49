/*!
Member commands while `seeder sync` holds the home. A home is one sled database that one
process at a time may open, so a `seeder put` typed while `seeder sync --watch` runs cannot
open it. Instead the syncing process listens on `member.sock` in the home (0600; the home
folder itself is 0700, so file permissions are the authentication) and runs the command for
the caller: the caller sends its arguments and folder, the syncing process runs the same
code a direct call would, streams stdout and stderr back and ends with the exit code. New
data written this way is announced to the connected peers at once.

Not for remote use or for other users: the socket carries no authentication of its own.

Protocol: the caller sends one JSON line `{"args": [...], "cwd": "..."}` (at most
[`MAX_REQUEST`] bytes); the answer is frames of one tag byte (1 stdout, 2 stderr, 0 exit),
a u32-LE length and that many bytes (at most [`MAX_CHUNK`]); the exit frame carries one byte.
*/

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use serde::{Deserialize, Serialize};

use crate::fs::home::Home;

use super::{exit_code, member_command, Cli, Failure, Io};

/// The socket's file name in the home.
pub const SOCKET: &str = "member.sock";

/// A request is a command line: 64 KiB is far more than any real one, and bounds what a
/// caller can make us buffer.
const MAX_REQUEST: u64 = 64 * 1024;

/// Output travels in frames of at most this many bytes (a `get -` of a large file streams).
const MAX_CHUNK: usize = 64 * 1024;

const TAG_EXIT: u8 = 0;
const TAG_OUT: u8 = 1;
const TAG_ERR: u8 = 2;

#[derive(Serialize, Deserialize)]
struct Request {
    args: Vec<String>,
    cwd: PathBuf,
}

/// A connection to the syncing process holding `home`, if one is running. A socket file
/// left by a process that died refuses the connection, and the caller opens the home itself.
pub fn connect(home: &Path) -> Option<UnixStream> {
    UnixStream::connect(home.join(SOCKET)).ok()
}

/// Send this process's command line to the syncing process, copy its output to ours and
/// return its exit code.
pub fn forward(mut stream: UnixStream) -> Result<u8> {
    let args = std::env::args_os()
        .map(|a| {
            a.into_string()
                .map_err(|a| anyhow::anyhow!("argument {a:?} is not UTF-8"))
        })
        .collect::<Result<Vec<_>>>()
        .context(Failure::BadInput)?;
    let request = Request {
        args,
        cwd: std::env::current_dir().context("the current folder")?,
    };
    let mut line = serde_json::to_vec(&request).context("encoding the request")?;
    line.push(b'\n');
    stream
        .write_all(&line)
        .context("sending the command to the syncing process")?;
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let mut out = stdout.lock();
    let mut err = stderr.lock();
    let mut buf = vec![0u8; MAX_CHUNK];
    loop {
        let mut header = [0u8; 5];
        stream
            .read_exact(&mut header)
            .context("the syncing process ended during the command")?;
        let len = u32::from_le_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if len > MAX_CHUNK {
            anyhow::bail!("the syncing process sent a frame of {len} bytes");
        }
        let chunk = &mut buf[..len];
        stream
            .read_exact(chunk)
            .context("the syncing process ended during the command")?;
        match header[0] {
            TAG_OUT => out.write_all(chunk)?,
            TAG_ERR => err.write_all(chunk)?,
            TAG_EXIT => {
                out.flush()?;
                err.flush()?;
                return Ok(chunk.first().copied().unwrap_or(5));
            }
            t => anyhow::bail!("the syncing process sent a frame of unknown kind {t}"),
        }
    }
}

/// Serve commands for `home` on a thread of its own until the process ends. `after` runs
/// after each command (to announce new data). The socket file is removed by [`Server`]'s drop.
pub fn serve(home: Arc<Home>, after: impl Fn() + Send + 'static) -> Result<Server> {
    let path = home.dir().join(SOCKET);
    // We hold the home's lock, so a socket file left here belongs to a process that died.
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)
        .with_context(|| format!("cannot listen on {}", path.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot restrict {}", path.display()))?;
    }
    std::thread::Builder::new()
        .name("member-commands".into())
        .spawn(move || {
            // One command at a time: they share the home as a single process's commands would.
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => {
                        if let Err(e) = run_one(&home, stream) {
                            tracing::warn!(error = %e, "forwarded command");
                        }
                        after();
                    }
                    Err(e) => tracing::warn!(error = %e, "accepting a member command"),
                }
            }
        })
        .context("cannot start the command thread")?;
    Ok(Server { path })
}

/// Removes the socket when syncing ends.
pub struct Server {
    path: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Writes one kind of output as frames.
struct Frames<'a> {
    stream: &'a UnixStream,
    tag: u8,
}

impl Write for Frames<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len().min(MAX_CHUNK);
        send_frame(self.stream, self.tag, &buf[..n])?;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn send_frame(mut stream: &UnixStream, tag: u8, data: &[u8]) -> std::io::Result<()> {
    let mut frame = Vec::with_capacity(5 + data.len());
    frame.push(tag);
    frame.extend_from_slice(&(data.len() as u32).to_le_bytes());
    frame.extend_from_slice(data);
    stream.write_all(&frame)
}

fn run_one(home: &Home, stream: UnixStream) -> Result<()> {
    let mut line = String::new();
    BufReader::new((&stream).take(MAX_REQUEST))
        .read_line(&mut line)
        .context("reading the request")?;
    let request: Request = serde_json::from_str(&line).context("a malformed request")?;
    let mut out = std::io::BufWriter::with_capacity(
        MAX_CHUNK,
        Frames {
            stream: &stream,
            tag: TAG_OUT,
        },
    );
    let mut err = Frames {
        stream: &stream,
        tag: TAG_ERR,
    };
    let code = match Cli::try_parse_from(&request.args) {
        Err(e) => {
            let _ = write!(err, "{}", e.render());
            if e.use_stderr() {
                Failure::BadInput.exit_code()
            } else {
                0
            }
        }
        Ok(cli) => {
            tracing::info!(command = ?request.args.get(1), "running a forwarded command");
            let result = {
                let mut io = Io {
                    out: &mut out,
                    err: &mut err,
                    terminal: false,
                    cwd: request.cwd,
                };
                member_command(home, cli.command, &mut io)
            };
            out.flush().context("sending output")?;
            match result {
                Ok(()) => 0,
                Err(e) => {
                    let msg: Vec<String> = e
                        .chain()
                        .map(|e| e.to_string())
                        .filter(|s| !s.is_empty())
                        .collect();
                    let _ = writeln!(err, "seeder: {}", msg.join(": "));
                    exit_code(&e)
                }
            }
        }
    };
    out.flush().context("sending output")?;
    drop(out);
    send_frame(&stream, TAG_EXIT, &[code]).context("sending the exit code")?;
    Ok(())
}
