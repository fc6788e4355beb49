/*!
One incoming data stream — the peer sending entries of one feed — as a state machine: pure,
like [`Session`](super::Session). No sockets, no store, no clock: the driver reads frames and
feeds them in ([`Transfer::handle_data`], [`Transfer::handle_end`],
[`Transfer::handle_not_ready`]), tells it the time ([`Transfer::handle_timeout`], when
[`Transfer::poll_timeout`] comes), carries out the stores it asks for
([`Transfer::poll_store`], then [`Transfer::handle_stored`]) and passes on what came of it
([`Transfer::poll_event`]). [`Transfer::wants_frame`] says whether, and how long, to wait for
the next frame.

What it decides:
- **admission**: data only for a space opened on this connection and a member feed of it, one
  feed per stream, the messages of a group consecutive and against one head; in a governed
  space only what its membership log admits: a message of a feed it does not admit, or
  reaching past a removed device's freeze point, is refused ([`Refusal::Removed`]) with
  whatever comes after it, and never stored;
- **room**: every message that grows the feed reserves its bytes ([`Ingest::reserve`]) before
  it is stored; when there is none, what is in hand is stored and the rest refused;
- **coalescing**: consecutive messages are gathered into one store of up to
  [`Limits::coalesce_bytes`] while more keeps arriving within [`Limits::gather_wait`], so the
  disk sees one fdatasync per few MiB instead of one per message;
- **pipelining**: one group is stored while the next is read; never more than two in hand, so
  what a stream holds is bounded by two groups (and by the frame budgets below it);
- **outcomes**: stored → [`TransferEvent::Appended`] (acknowledged to the peer) and
  [`TransferEvent::Repaired`]; the peer's fault → [`TransferEvent::Close`]; this node's
  (disk, quota, a frozen feed) → [`TransferEvent::Refusing`] and no more is read.

Not here: reading frames and their memory budget (`net::frames`), verifying and storing (the
driver's store step, whose outcome comes back as [`StoreOutcome`]).
*/

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::feed::{ConsistencyProof, FeedKey, Hash, PrefixHead, SignedHead};
use crate::space::members::Admission;
use crate::space::Address;
use crate::wire::{Message, Refusal};

/// One `Data` message, taken apart.
#[derive(Debug)]
pub struct DataMsg {
    pub id: u32,
    pub feed: FeedKey,
    pub start: u64,
    /// Slices of the frames they came in.
    pub entries: Vec<Bytes>,
    /// Bytes of entries.
    pub bytes: usize,
    pub head: SignedHead,
    pub proof: Option<ConsistencyProof>,
    pub prefix: Option<(Hash, ConsistencyProof)>,
    pub checkpoint: Option<Box<PrefixHead>>,
}

impl DataMsg {
    /// A `Data` message taken apart; `None` for any other message.
    pub fn from_message(msg: Message) -> Option<DataMsg> {
        match msg {
            Message::Data {
                space,
                feed,
                start,
                entries,
                head,
                proof,
                prefix,
                checkpoint,
            } => Some(DataMsg {
                id: space,
                feed,
                start,
                bytes: entries.iter().map(Bytes::len).sum(),
                entries,
                head,
                proof,
                prefix,
                checkpoint,
            }),
            _ => None,
        }
    }

    /// The index after its last entry.
    pub fn end(&self) -> u64 {
        self.start + self.entries.len() as u64
    }
}

/// What a transfer needs to know of this connection and node, answered at once.
pub trait Ingest {
    /// Room taken for bytes until they are stored (or not): given back when dropped.
    type Room;
    /// The space opened on this connection under `id`.
    fn space_of(&self, id: u32) -> Option<Address>;
    /// Whether `feed` is a member feed of `space` here.
    fn is_member(&self, space: &Address, feed: &FeedKey) -> bool;
    /// How far the membership log of `space` admits `feed`'s entries (all of them in a space
    /// from before roles).
    fn admission(&self, space: &Address, feed: &FeedKey) -> Admission;
    /// Entries of `feed` stored here.
    fn stored(&self, feed: &FeedKey) -> u64;
    /// Take room for `bytes` more of `space`, or say why not.
    fn reserve(&self, space: &Address, bytes: u64) -> Result<Self::Room, Refusal>;
}

/// The sizes and waits a transfer works with.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Entry bytes gathered into one store at most (plus the message that crosses it).
    pub coalesce_bytes: usize,
    /// How long gathering waits for the next message to begin before storing what it has
    /// (counted from the last message taken).
    pub gather_wait: Duration,
}

/// What storing a group did.
#[derive(Debug)]
pub struct Stored {
    /// Entries stored now.
    pub length: u64,
    /// The head the group completed, if it did.
    pub complete: Option<SignedHead>,
    /// Damaged entries rewritten with the group's copies.
    pub repaired: u64,
    /// Whether new entries were appended.
    pub grew: bool,
}

/// Why a group was not stored.
#[derive(Debug)]
pub enum StoreOutcome {
    /// The data doesn't verify: the peer's fault.
    PeerFault(String),
    /// This node can't take it (disk, index): not the peer's fault.
    Local(String),
    /// The writer forked: the evidence is recorded and the feed frozen. The peer only passed
    /// on what the writer signed.
    Forked,
}

/// What came of the transfer, for the connection.
#[derive(Debug, PartialEq, Eq)]
pub enum TransferEvent {
    /// New entries of `feed` are stored: `length` in all; `head` if the group completed it.
    Appended {
        id: u32,
        feed: FeedKey,
        length: u64,
        head: Option<SignedHead>,
    },
    /// Damaged entries of `feed` were rewritten with the peer's copies.
    Repaired { id: u32, feed: FeedKey, count: u64 },
    /// This node takes no more of `feed` on this stream, for `reason`: tell the peer, stop
    /// the stream.
    Refusing {
        id: u32,
        feed: FeedKey,
        reason: Refusal,
    },
    /// The peer broke the protocol: close the connection.
    Close(String),
    /// The transfer of `feed` is over (after everything in hand was stored or refused).
    Ended { id: u32, feed: FeedKey },
}

/// How the driver should read the next frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// Wait as long as it takes for the next frame to begin.
    Wait,
    /// Take the next frame only if it begins by this time and there is budget for it now;
    /// otherwise say [`Transfer::handle_not_ready`].
    Gather(Instant),
}

/// A store asked of the driver: verify `group` on top of what is stored and append it, then
/// say [`Transfer::handle_stored`].
#[derive(Debug)]
pub struct StoreOp {
    pub space: Address,
    pub group: DataMsg,
}

/// What a group holds until it is stored: its frames' charges (`H`) and its room (`R`).
struct Held<H, R> {
    holds: Vec<H>,
    room: Vec<R>,
    /// Refuse the rest once this group is stored (there was no room for more).
    then_refuse: Option<Refusal>,
}

/// A group of consecutive messages, stored in one step.
struct Group<H, R> {
    msg: DataMsg,
    held: Held<H, R>,
}

/// One incoming data stream. `H` is what a received frame holds (its share of the memory
/// budget), `R` the room reserved for bytes; both are dropped once their group is stored.
pub struct Transfer<H, R> {
    limits: Limits,
    /// The stream's space id, feed and space, from its first message on.
    stream: Option<(u32, FeedKey, Address)>,
    /// The group being gathered, and when gathering stops waiting for more.
    gathering: Option<(Group<H, R>, Instant)>,
    /// A whole group waiting for the one being stored.
    ready: Option<Group<H, R>>,
    /// What the group being stored holds.
    storing: Option<Held<H, R>>,
    /// No more frames are read: the stream ended, or the rest is refused.
    reading_done: bool,
    /// Said after everything in hand is stored: the rest of the stream is refused.
    refusal: Option<Refusal>,
    /// `Ended` or `Close` said: nothing more happens.
    finished: bool,
    events: VecDeque<TransferEvent>,
}

impl<H, R> Transfer<H, R> {
    pub fn new(limits: Limits) -> Transfer<H, R> {
        Transfer {
            limits,
            stream: None,
            gathering: None,
            ready: None,
            storing: None,
            reading_done: false,
            refusal: None,
            finished: false,
            events: VecDeque::new(),
        }
    }

    /// Whether the transfer is over: every event after this has been polled, the driver drops it.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Whether to read another frame now, and how.
    pub fn wants_frame(&self) -> Option<Read> {
        if self.finished || self.reading_done || self.ready.is_some() {
            return None;
        }
        match &self.gathering {
            Some((_, by)) => Some(Read::Gather(*by)),
            None => Some(Read::Wait),
        }
    }

    /// When [`Transfer::handle_timeout`] is due next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.gathering.as_ref().map(|(_, by)| *by)
    }

    /// A received data message, with what its frame holds.
    pub fn handle_data<I>(&mut self, msg: DataMsg, hold: H, ingest: &I, now: Instant)
    where
        I: Ingest<Room = R>,
    {
        if self.finished || self.reading_done {
            return;
        }
        let (id, feed, space) = match self.stream {
            Some((id, feed, space)) => {
                if (msg.id, msg.feed) != (id, feed) {
                    return self.close("two feeds on one data stream".into());
                }
                (id, feed, space)
            }
            None => {
                let Some(space) = ingest.space_of(msg.id) else {
                    return self.close(format!("data for space {}, not open", msg.id));
                };
                if msg.head.feed != msg.feed || !ingest.is_member(&space, &msg.feed) {
                    return self.close(format!("data for feed {}, not a member", msg.feed));
                }
                self.stream = Some((msg.id, msg.feed, space));
                (msg.id, msg.feed, space)
            }
        };
        // A removed device's later entries, or a feed the log doesn't admit: what is in hand
        // is stored, nothing from this message on. Members ignore those entries too.
        let admitted = match ingest.admission(&space, &feed) {
            Admission::No => false,
            Admission::Upto(None) => true,
            Admission::Upto(Some(limit)) => msg.end() <= limit,
        };
        if !admitted {
            self.reading_done = true;
            self.refusal = Some(Refusal::Removed);
            self.group_ready();
            return self.settle();
        }
        // Room is taken before anything is written, per message: one transfer can't overrun
        // the disk's reserve or a quota by more than nothing. Entries already held (a repair,
        // or a group still being stored) are counted as growth: that errs towards refusing.
        let room = if msg.end() > ingest.stored(&feed) {
            match ingest.reserve(&space, msg.bytes as u64) {
                Ok(r) => Some(r),
                Err(reason) => {
                    // Store what is in hand, then refuse the rest.
                    self.reading_done = true;
                    self.refusal = Some(reason);
                    self.group_ready();
                    return self.settle();
                }
            }
        } else {
            None
        };
        match self.gathering.take() {
            Some((mut group, _)) => {
                let g = &group.msg;
                if msg.start != g.end() || msg.head != g.head || msg.checkpoint != g.checkpoint {
                    return self.close("data stream out of order".into());
                }
                group.held.holds.push(hold);
                group.held.room.extend(room);
                group.msg.bytes += msg.bytes;
                group.msg.entries.extend(msg.entries);
                group.msg.proof = msg.proof;
                // Gathering goes on while the next message keeps coming within the wait.
                self.gathering = Some((group, now + self.limits.gather_wait));
            }
            None => {
                debug_assert_eq!((msg.id, msg.feed), (id, feed));
                let group = Group {
                    msg,
                    held: Held {
                        holds: vec![hold],
                        room: room.into_iter().collect(),
                        then_refuse: None,
                    },
                };
                self.gathering = Some((group, now + self.limits.gather_wait));
            }
        }
        if let Some((g, _)) = &self.gathering {
            if g.msg.bytes >= self.limits.coalesce_bytes || g.msg.end() >= g.msg.head.length {
                self.group_ready();
            }
        }
        self.settle();
    }

    /// The stream ended cleanly between frames.
    pub fn handle_end(&mut self) {
        if self.finished {
            return;
        }
        self.reading_done = true;
        self.group_ready();
        self.settle();
    }

    /// Nothing more is ready to be read right now (the next frame hasn't begun, or there is
    /// no budget for it at once): store what is in hand.
    pub fn handle_not_ready(&mut self) {
        self.group_ready();
        self.settle();
    }

    /// Time passed: a group gathered long enough is stored.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.gathering.as_ref().is_some_and(|(_, by)| now >= *by) {
            self.group_ready();
        }
        self.settle();
    }

    /// The next store to carry out; one at a time.
    pub fn poll_store(&mut self) -> Option<StoreOp> {
        if self.storing.is_some() || self.finished {
            return None;
        }
        let (_, _, space) = self.stream?;
        let Group { msg, held } = self.ready.take()?;
        // The messages go to the store; what they hold stays here until it is done.
        self.storing = Some(held);
        Some(StoreOp { space, group: msg })
    }

    /// How the store asked by [`Transfer::poll_store`] went.
    pub fn handle_stored(&mut self, outcome: Result<Stored, StoreOutcome>) {
        let Some(held) = self.storing.take() else {
            return;
        };
        let Some((id, feed, _)) = self.stream.filter(|_| !self.finished) else {
            return;
        };
        // Stored (or not): the bytes now count in the store's own figures, and the frames'
        // memory is free.
        let Held { then_refuse, .. } = held;
        match outcome {
            Ok(stored) => {
                if stored.repaired > 0 {
                    self.events.push_back(TransferEvent::Repaired {
                        id,
                        feed,
                        count: stored.repaired,
                    });
                }
                // Only new entries are acknowledged; a repair is answered when it is done.
                if stored.grew {
                    self.events.push_back(TransferEvent::Appended {
                        id,
                        feed,
                        length: stored.length,
                        head: stored.complete,
                    });
                }
                if let Some(reason) = then_refuse {
                    self.refuse(reason);
                }
            }
            Err(StoreOutcome::PeerFault(e)) => return self.close(format!("feed {feed}: {e}")),
            Err(StoreOutcome::Local(e)) => {
                tracing::warn!(%feed, error = %e, "cannot store received data");
                // Tell the sender why and to stop, instead of leaving its stream blocked.
                self.refuse(Refusal::Failed(e.chars().take(200).collect()));
            }
            Err(StoreOutcome::Forked) => self.refuse(Refusal::Frozen),
        }
        self.settle();
    }

    /// The store step itself failed (its task died): the transfer ends without a word to
    /// the peer, which asks again later.
    pub fn handle_store_failed(&mut self) {
        self.storing = None;
        self.ready = None;
        self.gathering = None;
        self.reading_done = true;
        self.settle();
    }

    /// What happened, in order.
    pub fn poll_event(&mut self) -> Option<TransferEvent> {
        self.events.pop_front()
    }

    /// The group being gathered is whole: it waits for its turn to be stored.
    fn group_ready(&mut self) {
        let Some((mut group, _)) = self.gathering.take() else {
            return;
        };
        if self.reading_done {
            group.held.then_refuse = self.refusal.take();
        }
        debug_assert!(
            self.ready.is_none(),
            "a frame was read while a group waited"
        );
        self.ready = Some(group);
    }

    /// Nothing more of this stream is taken: drop what is in hand and say why.
    fn refuse(&mut self, reason: Refusal) {
        self.gathering = None;
        self.ready = None;
        self.reading_done = true;
        self.refusal = Some(reason);
    }

    /// The peer broke the protocol. A store under way keeps what it holds until
    /// [`Transfer::handle_stored`] or the transfer is dropped.
    fn close(&mut self, reason: String) {
        self.gathering = None;
        self.ready = None;
        self.finished = true;
        self.events.push_back(TransferEvent::Close(reason));
    }

    /// Once reading is done and nothing is left in hand: say the refusal, if any, and end.
    fn settle(&mut self) {
        if self.finished
            || !self.reading_done
            || self.gathering.is_some()
            || self.ready.is_some()
            || self.storing.is_some()
        {
            return;
        }
        self.finished = true;
        if let Some((id, feed, _)) = self.stream {
            if let Some(reason) = self.refusal.take() {
                self.events
                    .push_back(TransferEvent::Refusing { id, feed, reason });
            }
            self.events.push_back(TransferEvent::Ended { id, feed });
        }
    }
}

#[cfg(test)]
mod tests;
