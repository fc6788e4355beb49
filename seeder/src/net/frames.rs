/*!
Reading framed messages off a QUIC stream without letting the sender decide how much memory we
hold or for how long: [`wire::Decoder`](crate::wire::Decoder) does the framing; this reads
exactly the bytes the next frame needs, charges the frame's length to a per-connection and a
node-wide byte [`Budget`] as soon as its 4-byte header is in (before any of the body is
buffered), and gives a frame whose body stops arriving [`FRAME_WAIT`] to complete before the
stream is given up as stalled.

A stream that sits between frames holds nothing (no charge, an empty buffer), so it needs no
deadline of its own: QUIC's idle timeout and the connection's admission cover it.

Not here: what messages mean (`sync`), QUIC windows (the parent module), who may connect
(`admission`).
*/

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::NetError;
use crate::wire::{Decoder, Message, WireError, MAX_FRAME_LEN};

/// Frame bytes one connection may hold at once (read, being decoded, or waiting to be stored):
/// two coalesced groups of a transfer ([`COALESCE_BYTES`]), so one group is read while the
/// other is written. A connection that has this much in hand reads nothing more until some
/// is stored; QUIC's flow control then holds its sender back.
///
/// [`COALESCE_BYTES`]: super::driver::COALESCE_BYTES
pub const CONNECTION_FRAME_BYTES: usize = 8 << 20;

/// Frame bytes all connections of the node may hold at once: eight connections at their
/// full [`CONNECTION_FRAME_BYTES`], which is what [`MAX_BATCHES_IN_FLIGHT`] groups being
/// verified at once can use. On the 1 GiB board under a 384 MiB service limit this keeps
/// frames well clear of the store's cache and QUIC's own buffers.
///
/// [`MAX_BATCHES_IN_FLIGHT`]: super::driver::MAX_BATCHES_IN_FLIGHT
pub const NODE_FRAME_BYTES: usize = 64 << 20;

/// Largest frame taken from a peer that hasn't yet proven it knows a space held here. All it
/// may say before that is `Hello`, `OpenSpace` (a few hundred bytes), `Goodbye` or `Error`
/// (512 bytes of text at most).
pub const UNPROVEN_FRAME_LEN: usize = 4 << 10;

/// Time a frame's body has to arrive once its header is in: a 1 MiB data frame over a
/// 1 Mbit/s uplink takes under 10 s. A sender slower than that holds its budget too long and
/// the stream is given up as stalled.
pub const FRAME_WAIT: Duration = Duration::from_secs(30);

/// The byte budgets frames are charged to: one node-wide, one per connection, and the
/// largest frame the connection may send (small until the peer proves itself).
#[derive(Clone)]
pub struct Budget {
    node: Arc<Semaphore>,
    connection: Arc<Semaphore>,
    max_frame: Arc<AtomicUsize>,
    frame_wait: Duration,
}

/// The node-wide budget, shared by every connection's [`Budget`].
pub fn node_budget() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(NODE_FRAME_BYTES))
}

impl Budget {
    /// A connection's budget under the node-wide one. An unproven connection may send frames
    /// of at most [`UNPROVEN_FRAME_LEN`] until [`Budget::prove`].
    pub fn new(node: Arc<Semaphore>, proven: bool) -> Budget {
        Budget {
            node,
            connection: Arc::new(Semaphore::new(CONNECTION_FRAME_BYTES)),
            max_frame: Arc::new(AtomicUsize::new(if proven {
                MAX_FRAME_LEN
            } else {
                UNPROVEN_FRAME_LEN
            })),
            frame_wait: FRAME_WAIT,
        }
    }

    /// Another time for a frame's body to arrive than [`FRAME_WAIT`] (tests).
    pub fn with_frame_wait(mut self, wait: Duration) -> Budget {
        self.frame_wait = wait;
        self
    }

    /// The peer proved it knows a space held here: frames of any size the protocol allows.
    pub fn prove(&self) {
        self.max_frame.store(MAX_FRAME_LEN, Ordering::Relaxed);
    }

    fn max_frame(&self) -> usize {
        self.max_frame.load(Ordering::Relaxed)
    }

    /// Charge `bytes`, waiting for room. Room comes back as other frames are stored or their
    /// streams time out, so the wait is bounded by [`FRAME_WAIT`] plus a store's time.
    ///
    /// A small frame (at most [`UNPROVEN_FRAME_LEN`]: `Hello`, `OpenSpace`, `Want`, `Head`,
    /// `Stored` …) is charged to its connection only, never the node: however many connections
    /// sit on the node's budget with stalled data, every peer can still prove itself and ask
    /// for what it wants. What small frames can hold is bounded by the connection budgets.
    async fn charge(&self, bytes: usize) -> Result<Charge, NetError> {
        let n = permits(bytes);
        // The connection's first: a connection waits on its own frames before it takes any of
        // the node's room, so one busy connection can't sit on the node's budget while blocked.
        let connection = self
            .connection
            .clone()
            .acquire_many_owned(n)
            .await
            .map_err(|_| NetError::Stream("connection budget closed".into()))?;
        if bytes <= UNPROVEN_FRAME_LEN {
            return Ok(Charge {
                bytes,
                _connection: Some(connection),
                _node: None,
            });
        }
        let node = self
            .node
            .clone()
            .acquire_many_owned(n)
            .await
            .map_err(|_| NetError::Stream("node budget closed".into()))?;
        Ok(Charge {
            bytes,
            _connection: Some(connection),
            _node: Some(node),
        })
    }

    /// Charge `bytes` if there is room right now.
    fn try_charge(&self, bytes: usize) -> Option<Charge> {
        let n = permits(bytes);
        let connection = self.connection.clone().try_acquire_many_owned(n).ok()?;
        if bytes <= UNPROVEN_FRAME_LEN {
            return Some(Charge {
                bytes,
                _connection: Some(connection),
                _node: None,
            });
        }
        let node = self.node.clone().try_acquire_many_owned(n).ok()?;
        Some(Charge {
            bytes,
            _connection: Some(connection),
            _node: Some(node),
        })
    }

    /// Bytes of the connection's budget not charged now.
    pub fn connection_room(&self) -> usize {
        self.connection.available_permits()
    }
}

fn permits(bytes: usize) -> u32 {
    // Frames are at most MAX_FRAME_LEN (about 1.1 MiB), far below u32.
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

/// Room a received frame holds in its connection's and the node's budgets, given back when
/// dropped: keep it as long as the message (or what was made of it) is in memory.
#[must_use = "the budget is given back when this is dropped"]
pub struct Charge {
    bytes: usize,
    _connection: Option<OwnedSemaphorePermit>,
    _node: Option<OwnedSemaphorePermit>,
}

impl Charge {
    /// Bytes charged.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl std::fmt::Debug for Charge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Charge({} bytes)", self.bytes)
    }
}

/// What [`Frames::next`] found.
#[derive(Debug)]
pub enum Next {
    /// A whole message, with the budget it holds.
    Message(Box<Message>, Charge),
    /// The stream ended cleanly between frames.
    End,
    /// Asked not to wait: the next frame's header isn't in yet, or there is no room for its
    /// body right now. Nothing is lost; ask again.
    NotYet,
}

/// Messages off one receiving stream.
pub struct Frames {
    recv: quinn::RecvStream,
    decoder: Decoder,
    budget: Budget,
    /// The charge of the frame being read and when its body must be in, kept here so that a
    /// read given up half-way (a `select!` that took another branch) neither loses the charge
    /// nor restarts the frame's deadline.
    pending: Option<(Charge, Instant)>,
}

impl Frames {
    pub fn new(recv: quinn::RecvStream, budget: Budget) -> Frames {
        Frames {
            recv,
            decoder: Decoder::new(),
            budget,
            pending: None,
        }
    }

    /// The next message, waiting as long as it takes for the next frame to begin.
    ///
    /// Both reads are cancel-safe: dropped half-way, nothing read is lost, and the frame being
    /// read keeps its charge and its deadline for the next call.
    pub async fn next(&mut self) -> Result<Next, NetError> {
        self.read(None).await
    }

    /// The next message if its frame begins by `by` and there is room for it at once;
    /// [`Next::NotYet`] otherwise. For gathering what is already on its way.
    pub async fn next_if_ready(&mut self, by: Instant) -> Result<Next, NetError> {
        self.read(Some(by)).await
    }

    /// The next message without its charge, `None` at a clean end: for clients that read
    /// one reply at a time.
    pub async fn message(&mut self) -> Result<Option<Message>, NetError> {
        match self.next().await? {
            Next::Message(m, _) => Ok(Some(*m)),
            Next::End => Ok(None),
            Next::NotYet => Err(NetError::Stream("no message".into())),
        }
    }

    /// Stop the stream: the sender is told (with `code`) to send no more.
    pub fn stop(&mut self, code: u32) {
        let _ = self.recv.stop(code.into());
    }

    async fn read(&mut self, by: Option<Instant>) -> Result<Next, NetError> {
        // The header: exactly its 4 bytes, so nothing of the next frame is read early.
        let len = loop {
            if let Some(len) = self.decoder.frame_len()? {
                break len;
            }
            let need = self.decoder.needed()?;
            let read = self.recv.read_chunk(need, true);
            let chunk = match by {
                Some(by) => match tokio::time::timeout_at(by, read).await {
                    Ok(r) => r,
                    Err(_) => return Ok(Next::NotYet),
                },
                None => read.await,
            };
            match chunk.map_err(|e| NetError::Stream(e.to_string()))? {
                Some(c) => self.decoder.extend(&c.bytes),
                None => {
                    self.decoder.finish()?;
                    return Ok(Next::End);
                }
            }
        };
        let max = self.budget.max_frame();
        if len > max {
            return Err(WireError::FrameTooLarge { len, max }.into());
        }
        // Charged before a byte of the body is buffered.
        if self.pending.is_none() {
            let charge = match by {
                Some(_) => match self.budget.try_charge(4 + len) {
                    Some(c) => c,
                    None => return Ok(Next::NotYet),
                },
                None => self.budget.charge(4 + len).await?,
            };
            self.decoder.reserve_frame();
            self.pending = Some((charge, Instant::now() + self.budget.frame_wait));
        }
        if let Err(e) = self.read_body(len).await {
            // A stream that failed is not read again: its frame's charge goes back now.
            self.pending = None;
            return Err(e);
        }
        let Some((charge, _)) = self.pending.take() else {
            return Err(NetError::Stream("frame read without its charge".into()));
        };
        match self.decoder.decode()? {
            Some(msg) => Ok(Next::Message(Box::new(msg), charge)),
            None => Err(NetError::Stream("frame incomplete after reading it".into())),
        }
    }

    /// The rest of the frame of `len` bytes whose charge is pending, by its deadline.
    async fn read_body(&mut self, len: usize) -> Result<(), NetError> {
        let wait = self.budget.frame_wait;
        loop {
            let need = self.decoder.needed()?;
            if need == 0 {
                break;
            }
            let deadline = self.pending.as_ref().map_or_else(Instant::now, |(_, d)| *d);
            let chunk = tokio::time::timeout_at(deadline, self.recv.read_chunk(need, true))
                .await
                .map_err(|_| {
                    NetError::Stream(format!(
                        "a {len}-byte frame did not arrive within {} ms",
                        wait.as_millis()
                    ))
                })?
                .map_err(|e| NetError::Stream(e.to_string()))?;
            match chunk {
                Some(c) => self.decoder.extend(&c.bytes),
                None => {
                    return Err(WireError::UnexpectedEof {
                        buffered: self.decoder.buffered(),
                    }
                    .into())
                }
            }
        }
        Ok(())
    }
}
