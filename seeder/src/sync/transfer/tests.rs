//! A transfer driven in memory with a made-up clock: messages in, stores and events out.
//! What frames and room hold is counted, so the tests see it given back.

use std::cell::Cell;
use std::rc::Rc;

use super::*;

const SPACE: Address = Address([7; 32]);
const FEED: FeedKey = FeedKey([9; 32]);
const KIB: usize = 1024;

/// Something held, counted while alive.
struct Token(Rc<Cell<usize>>);

impl Token {
    fn new(count: &Rc<Cell<usize>>) -> Token {
        count.set(count.get() + 1);
        Token(count.clone())
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// A connection with space 0 open, `FEED` a member, `stored` entries held and `room` bytes
/// left.
struct Conn {
    stored: Cell<u64>,
    room: Cell<u64>,
    rooms: Rc<Cell<usize>>,
    /// What the space's membership log admits of `FEED`.
    admission: Cell<Admission>,
}

impl Conn {
    fn new(room: u64) -> Conn {
        Conn {
            stored: Cell::new(0),
            room: Cell::new(room),
            rooms: Rc::new(Cell::new(0)),
            admission: Cell::new(Admission::Upto(None)),
        }
    }
}

impl Ingest for Conn {
    type Room = Token;
    fn space_of(&self, id: u32) -> Option<Address> {
        (id == 0).then_some(SPACE)
    }
    fn is_member(&self, _space: &Address, feed: &FeedKey) -> bool {
        *feed == FEED
    }
    fn admission(&self, _space: &Address, _feed: &FeedKey) -> Admission {
        self.admission.get()
    }
    fn stored(&self, _feed: &FeedKey) -> u64 {
        self.stored.get()
    }
    fn reserve(&self, _space: &Address, bytes: u64) -> Result<Token, Refusal> {
        if bytes > self.room.get() {
            return Err(Refusal::Quota { held: 0, limit: 0 });
        }
        self.room.set(self.room.get() - bytes);
        Ok(Token::new(&self.rooms))
    }
}

const LIMITS: Limits = Limits {
    coalesce_bytes: 64 * KIB,
    gather_wait: Duration::from_millis(20),
};

fn head(length: u64) -> SignedHead {
    SignedHead {
        feed: FEED,
        length,
        root: [1; 32],
        signature: [2; 64],
    }
}

/// Entries `[start, start + n)` of 16 KiB each, of a feed whose head has `length` entries.
fn data(start: u64, n: usize, length: u64) -> DataMsg {
    DataMsg {
        id: 0,
        feed: FEED,
        start,
        entries: vec![Bytes::from(vec![0; 16 * KIB]); n],
        bytes: n * 16 * KIB,
        head: head(length),
        proof: None,
        prefix: None,
        checkpoint: None,
    }
}

fn stored(length: u64) -> Result<Stored, StoreOutcome> {
    Ok(Stored {
        length,
        complete: None,
        repaired: 0,
        grew: true,
    })
}

fn events(t: &mut Transfer<Token, Token>) -> Vec<TransferEvent> {
    std::iter::from_fn(|| t.poll_event()).collect()
}

struct Run {
    t: Transfer<Token, Token>,
    conn: Conn,
    frames: Rc<Cell<usize>>,
    now: Instant,
}

impl Run {
    fn new(room: u64) -> Run {
        Run {
            t: Transfer::new(LIMITS),
            conn: Conn::new(room),
            frames: Rc::new(Cell::new(0)),
            now: Instant::now(),
        }
    }

    fn send(&mut self, msg: DataMsg) {
        assert!(
            self.t.wants_frame().is_some(),
            "a frame read when none was wanted"
        );
        let hold = Token::new(&self.frames);
        self.t.handle_data(msg, hold, &self.conn, self.now);
    }

    /// Take the next store asked for and report it done.
    fn store(&mut self) -> DataMsg {
        let op = self.t.poll_store().expect("a store is asked for");
        assert_eq!(op.space, SPACE);
        self.conn.stored.set(op.group.end());
        let end = op.group.end();
        self.t.handle_stored(stored(end));
        op.group
    }
}

#[test]
fn consecutive_messages_are_stored_together_up_to_the_coalescing_size() {
    let mut r = Run::new(u64::MAX);
    r.send(data(0, 1, 100));
    r.send(data(1, 2, 100));
    assert!(r.t.poll_store().is_none(), "48 KiB: still gathering");
    r.send(data(3, 3, 100));
    let group = r.store();
    assert_eq!((group.start, group.entries.len()), (0, 6));
    assert_eq!(group.bytes, 96 * KIB);
    assert_eq!(
        r.frames.get(),
        0,
        "the frames' budget is given back once stored"
    );
    assert_eq!(
        events(&mut r.t),
        vec![TransferEvent::Appended {
            id: 0,
            feed: FEED,
            length: 6,
            head: None
        }]
    );
}

#[test]
fn a_group_is_stored_when_no_more_arrives_within_the_gathering_wait() {
    let mut r = Run::new(u64::MAX);
    r.send(data(0, 1, 100));
    assert_eq!(
        r.t.wants_frame(),
        Some(Read::Gather(r.now + LIMITS.gather_wait))
    );
    assert_eq!(r.t.poll_timeout(), Some(r.now + LIMITS.gather_wait));
    r.t.handle_timeout(r.now + Duration::from_millis(19));
    assert!(r.t.poll_store().is_none(), "not yet due");
    // A message within the wait extends it from that message on.
    r.now += Duration::from_millis(15);
    r.send(data(1, 1, 100));
    r.t.handle_timeout(r.now + Duration::from_millis(19));
    assert!(r.t.poll_store().is_none(), "more came: still gathering");
    r.t.handle_timeout(r.now + LIMITS.gather_wait);
    assert_eq!(r.store().entries.len(), 2);
}

#[test]
fn the_last_message_of_a_head_is_stored_at_once() {
    let mut r = Run::new(u64::MAX);
    r.send(data(0, 1, 1));
    assert_eq!(r.store().end(), 1);
}

#[test]
fn the_next_group_is_read_while_one_is_stored_but_never_a_third() {
    let mut r = Run::new(u64::MAX);
    r.send(data(0, 4, 100));
    let first = r.t.poll_store().expect("first group");
    assert_eq!(r.t.wants_frame(), Some(Read::Wait), "read on while storing");
    r.send(data(4, 4, 100));
    assert!(r.t.poll_store().is_none(), "one store at a time");
    assert_eq!(r.t.wants_frame(), None, "two groups in hand: read no more");
    assert_eq!(r.frames.get(), 2, "one frame each");
    r.conn.stored.set(first.group.end());
    r.t.handle_stored(stored(4));
    assert_eq!(r.frames.get(), 1, "the first group's frame is given back");
    assert_eq!(r.store().start, 4);
    assert_eq!(r.t.wants_frame(), Some(Read::Wait));
}

#[test]
fn no_room_stores_what_is_in_hand_then_refuses_the_rest() {
    // Room for three 16 KiB messages.
    let mut r = Run::new(3 * 16 * KIB as u64);
    r.send(data(0, 1, 100));
    r.send(data(1, 1, 100));
    r.send(data(2, 1, 100));
    r.send(data(3, 1, 100));
    assert_eq!(r.t.wants_frame(), None, "nothing more is read");
    assert_eq!(r.conn.rooms.get(), 3);
    let group = r.store();
    assert_eq!(group.entries.len(), 3, "what had room is stored");
    assert_eq!(r.conn.rooms.get(), 0, "room is given back once stored");
    let ev = events(&mut r.t);
    assert!(matches!(ev[0], TransferEvent::Appended { length: 3, .. }));
    assert!(matches!(
        ev[1],
        TransferEvent::Refusing {
            reason: Refusal::Quota { .. },
            ..
        }
    ));
    assert_eq!(ev[2], TransferEvent::Ended { id: 0, feed: FEED });
    assert!(r.t.is_finished());
    assert_eq!(r.frames.get(), 0);
}

#[test]
fn entries_past_a_removed_devices_freeze_point_are_refused_and_never_stored() {
    let mut r = Run::new(u64::MAX);
    r.conn.admission.set(Admission::Upto(Some(5)));
    r.send(data(0, 1, 100));
    r.send(data(1, 2, 100));
    // Would end at 5, past the freeze point at 3: it and all after are refused.
    r.conn.admission.set(Admission::Upto(Some(3)));
    r.send(data(3, 2, 100));
    assert_eq!(r.t.wants_frame(), None, "nothing more is read");
    let group = r.store();
    assert_eq!(
        group.end(),
        3,
        "only what came before the freeze point is stored"
    );
    assert!(r.t.poll_store().is_none());
    let ev = events(&mut r.t);
    assert!(matches!(ev[0], TransferEvent::Appended { length: 3, .. }));
    assert_eq!(
        ev[1],
        TransferEvent::Refusing {
            id: 0,
            feed: FEED,
            reason: Refusal::Removed
        }
    );
    assert_eq!(ev[2], TransferEvent::Ended { id: 0, feed: FEED });
    assert_eq!(
        r.frames.get(),
        0,
        "the refused frame's budget is given back"
    );

    // A batch crossing the point is refused whole: its proof reaches past it.
    let mut r = Run::new(u64::MAX);
    r.conn.admission.set(Admission::Upto(Some(5)));
    r.send(data(3, 4, 100));
    assert!(r.t.poll_store().is_none(), "nothing stored");
    assert_eq!(
        events(&mut r.t),
        vec![
            TransferEvent::Refusing {
                id: 0,
                feed: FEED,
                reason: Refusal::Removed
            },
            TransferEvent::Ended { id: 0, feed: FEED }
        ]
    );
}

#[test]
fn a_feed_the_membership_does_not_admit_is_refused_without_closing() {
    let mut r = Run::new(u64::MAX);
    r.conn.admission.set(Admission::No);
    r.send(data(0, 1, 100));
    assert!(r.t.poll_store().is_none(), "nothing stored");
    assert_eq!(
        events(&mut r.t),
        vec![
            TransferEvent::Refusing {
                id: 0,
                feed: FEED,
                reason: Refusal::Removed
            },
            TransferEvent::Ended { id: 0, feed: FEED }
        ]
    );
    assert!(r.t.is_finished());
}

#[test]
fn a_refusal_waits_for_the_group_being_stored() {
    let mut r = Run::new(4 * 16 * KIB as u64);
    r.send(data(0, 4, 100));
    let first = r.t.poll_store().expect("first group");
    // The next message finds no room: nothing is said until the first group is stored.
    r.send(data(4, 1, 100));
    assert!(events(&mut r.t).is_empty());
    assert!(!r.t.is_finished());
    r.conn.stored.set(first.group.end());
    r.t.handle_stored(stored(4));
    let ev = events(&mut r.t);
    assert!(matches!(ev[0], TransferEvent::Appended { length: 4, .. }));
    assert!(matches!(ev[1], TransferEvent::Refusing { .. }));
    assert!(matches!(ev[2], TransferEvent::Ended { .. }));
}

#[test]
fn entries_already_held_take_no_room() {
    let mut r = Run::new(0);
    r.conn.stored.set(10);
    r.send(data(0, 4, 100));
    r.t.handle_not_ready();
    assert_eq!(
        r.store().entries.len(),
        4,
        "a repair of held entries needs no room"
    );
}

#[test]
fn data_for_a_space_not_open_or_a_feed_not_a_member_closes_the_connection() {
    let mut r = Run::new(u64::MAX);
    let mut msg = data(0, 1, 100);
    msg.id = 3;
    r.send(msg);
    assert!(matches!(&events(&mut r.t)[..], [TransferEvent::Close(_)]));
    assert!(r.t.is_finished());
    assert_eq!(r.frames.get(), 0);

    let mut r = Run::new(u64::MAX);
    let mut msg = data(0, 1, 100);
    msg.feed = FeedKey([3; 32]);
    msg.head.feed = msg.feed;
    r.send(msg);
    assert!(matches!(&events(&mut r.t)[..], [TransferEvent::Close(_)]));
}

#[test]
fn a_gap_another_head_or_another_feed_on_the_stream_closes_the_connection() {
    for bad in [
        data(3, 1, 100),
        data(1, 1, 99),
        DataMsg {
            feed: FeedKey([3; 32]),
            ..data(1, 1, 100)
        },
    ] {
        let mut r = Run::new(u64::MAX);
        r.send(data(0, 1, 100));
        r.send(bad);
        assert!(matches!(&events(&mut r.t)[..], [TransferEvent::Close(_)]));
        assert!(r.t.is_finished());
        assert_eq!(r.frames.get(), 0, "nothing of it is kept");
        assert!(r.t.poll_store().is_none());
    }
}

#[test]
fn a_batch_that_does_not_verify_closes_and_a_local_failure_refuses() {
    let mut r = Run::new(u64::MAX);
    r.send(data(0, 1, 1));
    r.t.poll_store().expect("store");
    r.t.handle_stored(Err(StoreOutcome::PeerFault("bad proof".into())));
    assert!(matches!(&events(&mut r.t)[..], [TransferEvent::Close(m)] if m.contains("bad proof")));

    let mut r = Run::new(u64::MAX);
    r.send(data(0, 1, 100));
    r.t.handle_not_ready();
    r.t.poll_store().expect("store");
    r.t.handle_stored(Err(StoreOutcome::Local("I/O error".into())));
    let ev = events(&mut r.t);
    assert!(
        matches!(&ev[0], TransferEvent::Refusing { reason: Refusal::Failed(m), .. } if m == "I/O error")
    );
    assert!(matches!(ev[1], TransferEvent::Ended { .. }));
    assert_eq!(r.t.wants_frame(), None);

    let mut r = Run::new(u64::MAX);
    r.send(data(0, 1, 1));
    r.t.poll_store().expect("store");
    r.t.handle_stored(Err(StoreOutcome::Forked));
    assert!(matches!(
        events(&mut r.t)[0],
        TransferEvent::Refusing {
            reason: Refusal::Frozen,
            ..
        }
    ));
}

#[test]
fn a_close_keeps_what_a_store_under_way_holds_until_it_is_done() {
    let mut r = Run::new(u64::MAX);
    r.send(data(0, 4, 100));
    r.t.poll_store().expect("store");
    r.send(data(9, 1, 100));
    r.send(data(1, 1, 99));
    assert!(r.t.is_finished());
    assert_eq!(
        r.frames.get(),
        1,
        "the group being stored still holds its frame"
    );
    r.t.handle_stored(stored(4));
    assert_eq!(r.frames.get(), 0);
    assert!(
        matches!(&events(&mut r.t)[..], [TransferEvent::Close(_)]),
        "nothing is acknowledged after a close"
    );
}

#[test]
fn a_stream_that_ends_stores_what_it_has_and_ends() {
    let mut r = Run::new(u64::MAX);
    r.send(data(0, 1, 100));
    r.t.handle_end();
    assert_eq!(r.t.wants_frame(), None);
    assert_eq!(r.store().entries.len(), 1);
    let ev = events(&mut r.t);
    assert!(matches!(
        ev[..],
        [TransferEvent::Appended { .. }, TransferEvent::Ended { .. }]
    ));

    let mut r = Run::new(u64::MAX);
    r.t.handle_end();
    assert!(r.t.is_finished(), "an empty stream just ends");
    assert!(events(&mut r.t).is_empty());
}

#[test]
fn a_repair_is_reported_and_not_acknowledged_as_growth() {
    let mut r = Run::new(u64::MAX);
    r.send(data(0, 1, 1));
    r.t.poll_store().expect("store");
    r.t.handle_stored(Ok(Stored {
        length: 5,
        complete: None,
        repaired: 1,
        grew: false,
    }));
    assert_eq!(
        events(&mut r.t),
        vec![TransferEvent::Repaired {
            id: 0,
            feed: FEED,
            count: 1
        }]
    );
}
