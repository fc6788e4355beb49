//! Scenario and property tests of the merged view, with devices simulated in memory: each
//! device has its own feed and holds a prefix of every other feed; "learning" moves entries the
//! way exchanging bundles (or a seeder relaying) would.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::*;
use crate::feed::FeedKey;

fn key(b: u8) -> FeedKey {
    FeedKey([b; 32])
}

fn path(s: &str) -> Path {
    Path::new(s).expect("valid path")
}

/// Devices 0..n, device `d` writing feed `key(d + 1)`.
struct Sim {
    keys: Vec<FeedKey>,
    /// Every feed's entries, as written.
    logs: Vec<Vec<Record>>,
    /// `holds[d][f]`: how many entries of feed `f` device `d` has applied.
    holds: Vec<Vec<usize>>,
    views: Vec<View>,
}

impl Sim {
    fn new(n: usize) -> Sim {
        Sim {
            keys: (1..=n as u8).map(key).collect(),
            logs: vec![Vec::new(); n],
            holds: vec![vec![0; n]; n],
            views: (0..n).map(|_| View::new()).collect(),
        }
    }

    fn append(&mut self, d: usize, record: Record) -> VersionId {
        let seq = self.logs[d].len() as u64;
        self.logs[d].push(record.clone());
        self.holds[d][d] += 1;
        let op = Op {
            feed: self.keys[d],
            seq,
            record,
        };
        self.views[d].apply(op).expect("own ops are valid");
        VersionId {
            feed: self.keys[d],
            seq,
        }
    }

    fn meta(&self, d: usize, content: &[u8], first: u64) -> FileMeta {
        FileMeta {
            size: content.len() as u64,
            mode: 0o644,
            mtime: Mtime {
                secs: 1_700_000_000 + first as i64,
                nanos: 0,
            },
            hash: *blake3::hash(content).as_bytes(),
            content: ContentRef {
                feed: self.keys[d],
                first,
                count: chunk_count(content.len() as u64),
            },
        }
    }

    fn put(&mut self, d: usize, p: &str, content: &[u8]) -> VersionId {
        let first = self.logs[d].len() as u64;
        for chunk in content.chunks(CHUNK_SIZE) {
            self.append(d, Record::Chunk(chunk.to_vec()));
        }
        let meta = self.meta(d, content, first);
        let clock = self.next_clock(d);
        self.append(
            d,
            Record::Put {
                path: path(p),
                meta,
                clock,
            },
        )
    }

    fn delete(&mut self, d: usize, p: &str) -> VersionId {
        let clock = self.next_clock(d);
        self.append(
            d,
            Record::Delete {
                path: path(p),
                clock,
            },
        )
    }

    fn rename(&mut self, d: usize, from: &str, to: &str) -> VersionId {
        let meta = self.views[d]
            .get(&path(from))
            .expect("renamed file exists")
            .meta
            .clone();
        let clock = self.next_clock(d);
        self.append(
            d,
            Record::Rename {
                from: path(from),
                to: path(to),
                meta,
                clock,
            },
        )
    }

    fn next_clock(&self, d: usize) -> VectorClock {
        self.views[d].clock_for_write(self.keys[d], self.logs[d].len() as u64)
    }

    /// Device `to` learns every entry device `from` holds.
    fn learn(&mut self, to: usize, from: usize) {
        for f in 0..self.keys.len() {
            let upto = self.holds[from][f];
            self.learn_feed_upto(to, f, upto);
        }
    }

    /// Device `to` learns all of feed `f`, and nothing else (as from a seeder that relays only
    /// that feed so far).
    fn learn_feed(&mut self, to: usize, f: usize) {
        let upto = self.logs[f].len();
        self.learn_feed_upto(to, f, upto);
    }

    fn learn_feed_upto(&mut self, to: usize, f: usize, upto: usize) {
        while self.holds[to][f] < upto {
            let seq = self.holds[to][f];
            let op = Op {
                feed: self.keys[f],
                seq: seq as u64,
                record: self.logs[f][seq].clone(),
            };
            self.views[to].apply(op).expect("valid op");
            self.holds[to][f] += 1;
        }
    }

    fn learn_everything(&mut self) {
        for d in 0..self.keys.len() {
            for f in 0..self.keys.len() {
                self.learn_feed(d, f);
            }
        }
    }

    fn all_ops(&self) -> Vec<Op> {
        let mut ops = Vec::new();
        for (f, log) in self.logs.iter().enumerate() {
            for (seq, record) in log.iter().enumerate() {
                ops.push(Op {
                    feed: self.keys[f],
                    seq: seq as u64,
                    record: record.clone(),
                });
            }
        }
        ops
    }

    /// A file's content, read through its content reference and checked against its hash.
    fn read(&self, file: &FileState) -> Vec<u8> {
        let f = self
            .keys
            .iter()
            .position(|k| *k == file.meta.content.feed)
            .expect("known feed");
        let mut out = Vec::new();
        for seq in file.meta.content.seqs() {
            match &self.logs[f][seq as usize] {
                Record::Chunk(data) => out.extend_from_slice(data),
                other => panic!("content points at {other:?}"),
            }
        }
        assert_eq!(*blake3::hash(&out).as_bytes(), file.meta.hash);
        out
    }

    fn content(&self, d: usize, p: &str) -> Option<Vec<u8>> {
        self.views[d].get(&path(p)).map(|f| self.read(f))
    }
}

fn loser_ids(view: &View, p: &str) -> Vec<VersionId> {
    let conflicts = view.conflicts(Some(&path(p)));
    conflicts
        .iter()
        .filter(|c| c.path.as_str() == p)
        .flat_map(|c| c.losers.iter().map(|v| v.id))
        .collect()
}

#[test]
fn sequential_edits_have_no_conflict() {
    let mut sim = Sim::new(2);
    sim.put(0, "notes.txt", b"one");
    sim.put(0, "notes.txt", b"two");
    sim.learn(1, 0);
    let last = sim.put(1, "notes.txt", b"three");
    sim.learn(0, 1);
    for d in 0..2 {
        assert_eq!(sim.content(d, "notes.txt").as_deref(), Some(&b"three"[..]));
        assert_eq!(
            sim.views[d]
                .get(&path("notes.txt"))
                .expect("exists")
                .version,
            last
        );
        assert!(sim.views[d].conflicts(None).is_empty());
        assert_eq!(sim.views[d].history(Some(&path("notes.txt"))).len(), 3);
    }
}

#[test]
fn concurrent_edits_the_larger_clock_sum_wins() {
    let mut sim = Sim::new(3);
    sim.put(0, "plan.txt", b"base");
    sim.learn(1, 0);
    // Device 0 (the smaller key) also knows device 2's work: its edit shows more knowledge.
    sim.put(2, "other.txt", b"x");
    sim.learn(0, 2);
    let a = sim.put(0, "plan.txt", b"edit by 0");
    let b = sim.put(1, "plan.txt", b"edit by 1");
    assert!(
        sim.views[0].version(&a).expect("a").clock.sum()
            > sim.views[1].version(&b).expect("b").clock.sum()
    );
    sim.learn_everything();
    for d in 0..3 {
        let view = &sim.views[d];
        assert_eq!(
            sim.content(d, "plan.txt").as_deref(),
            Some(&b"edit by 0"[..])
        );
        assert_eq!(loser_ids(view, "plan.txt"), [b]);
        // The loser stays readable through its version id, as a person would type it.
        let id = view.resolve(&b.to_string()).expect("resolves");
        let loser = view
            .version(&id)
            .expect("kept")
            .file_at(&path("plan.txt"))
            .expect("a put");
        assert_eq!(sim.read(loser), b"edit by 1");
        assert!(matches!(
            view.list(None)[..],
            [
                ListEntry::File {
                    conflicted: false,
                    ..
                },
                ListEntry::File {
                    conflicted: true,
                    ..
                }
            ]
        ));
    }
}

#[test]
fn concurrent_edits_with_equal_sums_go_to_the_larger_feed_key() {
    let mut sim = Sim::new(2);
    sim.put(0, "plan.txt", b"base");
    sim.learn(1, 0);
    let a = sim.put(0, "plan.txt", b"edit by 0");
    let b = sim.put(1, "plan.txt", b"edit by 1");
    assert_eq!(
        sim.views[0].version(&a).expect("a").clock.sum(),
        sim.views[1].version(&b).expect("b").clock.sum()
    );
    sim.learn_everything();
    for d in 0..2 {
        assert_eq!(
            sim.content(d, "plan.txt").as_deref(),
            Some(&b"edit by 1"[..])
        );
        assert_eq!(loser_ids(&sim.views[d], "plan.txt"), [a]);
        let c = &sim.views[d].conflicts(None)[0];
        assert_eq!(c.winner.id, b);
    }
}

#[test]
fn an_edit_beats_a_concurrent_delete_even_with_a_smaller_clock() {
    let mut sim = Sim::new(3);
    sim.put(0, "budget.ods", b"v1");
    sim.learn(1, 0);
    sim.put(2, "other", b"x");
    sim.learn(0, 2);
    let del = sim.delete(0, "budget.ods");
    let edit = sim.put(1, "budget.ods", b"v2");
    assert!(
        sim.views[0].version(&del).expect("del").clock.sum()
            > sim.views[1].version(&edit).expect("edit").clock.sum()
    );
    sim.learn_everything();
    for d in 0..3 {
        let view = &sim.views[d];
        assert_eq!(sim.content(d, "budget.ods").as_deref(), Some(&b"v2"[..]));
        assert_eq!(loser_ids(view, "budget.ods"), [del]);
        let loser = view.version(&del).expect("kept");
        assert!(matches!(&loser.change, Change::Delete(p) if p.as_str() == "budget.ods"));
    }
}

#[test]
fn concurrent_deletes_leave_nothing_and_no_conflict() {
    let mut sim = Sim::new(2);
    sim.put(0, "tmp", b"x");
    sim.learn(1, 0);
    sim.delete(0, "tmp");
    sim.delete(1, "tmp");
    sim.learn_everything();
    for view in &sim.views {
        assert_eq!(view.get(&path("tmp")), None);
        assert!(view.conflicts(None).is_empty());
        assert_eq!(view.heads(&path("tmp")).len(), 2);
        assert!(view.list(None).is_empty());
    }
}

#[test]
fn a_rename_and_a_concurrent_edit_keep_both_files() {
    let mut sim = Sim::new(2);
    sim.put(0, "draft.txt", b"original");
    sim.learn(1, 0);
    let mv = sim.rename(0, "draft.txt", "final/report.txt");
    sim.put(1, "draft.txt", b"edited");
    sim.learn_everything();
    for d in 0..2 {
        let view = &sim.views[d];
        assert_eq!(sim.content(d, "draft.txt").as_deref(), Some(&b"edited"[..]));
        assert_eq!(
            sim.content(d, "final/report.txt").as_deref(),
            Some(&b"original"[..])
        );
        assert_eq!(loser_ids(view, "draft.txt"), [mv]);
        assert_eq!(view.conflicts(None).len(), 1);
        let renamed = view.get(&path("final/report.txt")).expect("exists");
        assert_eq!(renamed.version, mv);
        // The rename points at the original chunks in device 0's feed: nothing was copied.
        assert_eq!(renamed.meta.content.first, 0);
    }
}

#[test]
fn a_rename_moves_the_file() {
    let mut sim = Sim::new(2);
    sim.put(0, "a.txt", b"content");
    sim.learn(1, 0);
    sim.rename(1, "a.txt", "dir/b.txt");
    sim.learn(0, 1);
    for d in 0..2 {
        assert_eq!(sim.content(d, "a.txt"), None);
        assert_eq!(
            sim.content(d, "dir/b.txt").as_deref(),
            Some(&b"content"[..])
        );
        assert!(sim.views[d].conflicts(None).is_empty());
    }
}

#[test]
fn delete_then_recreate_has_no_conflict() {
    let mut sim = Sim::new(2);
    sim.put(0, "log.txt", b"old");
    sim.delete(0, "log.txt");
    assert_eq!(sim.views[0].get(&path("log.txt")), None);
    sim.learn(1, 0);
    sim.put(1, "log.txt", b"new");
    sim.learn(0, 1);
    sim.delete(0, "log.txt");
    sim.put(0, "log.txt", b"newest");
    sim.learn(1, 0);
    for d in 0..2 {
        assert_eq!(sim.content(d, "log.txt").as_deref(), Some(&b"newest"[..]));
        assert!(sim.views[d].conflicts(None).is_empty());
        assert_eq!(sim.views[d].heads(&path("log.txt")).len(), 1);
    }
}

#[test]
fn a_conflict_ends_when_someone_writes_after_seeing_it() {
    let mut sim = Sim::new(3);
    sim.put(0, "f", b"base");
    sim.learn(1, 0);
    sim.put(0, "f", b"zero");
    let one = sim.put(1, "f", b"one");
    sim.learn_everything();
    assert_eq!(sim.views[2].conflicts(None).len(), 1);
    // Keep the loser's content: a put that references its chunks and follows both heads.
    let loser = sim.views[2]
        .version(&one)
        .expect("kept")
        .file()
        .expect("a put")
        .clone();
    let clock = sim.next_clock(2);
    let kept = sim.append(
        2,
        Record::Put {
            path: path("f"),
            meta: loser.meta.clone(),
            clock,
        },
    );
    sim.learn_everything();
    for d in 0..3 {
        assert!(sim.views[d].conflicts(None).is_empty());
        assert_eq!(sim.views[d].get(&path("f")).expect("exists").version, kept);
        assert_eq!(sim.content(d, "f").as_deref(), Some(&b"one"[..]));
    }
}

#[test]
fn conflicts_of_a_directory_include_everything_below_it() {
    let mut sim = Sim::new(2);
    for p in ["d/x", "d/e/y", "dz", "top"] {
        sim.put(0, p, b"base");
    }
    sim.learn(1, 0);
    for p in ["d/x", "d/e/y", "dz", "top"] {
        sim.put(0, p, b"zero");
        sim.put(1, p, b"one");
    }
    sim.learn_everything();
    let view = &sim.views[0];
    let at = |p: Option<&str>| -> Vec<String> {
        let p = p.map(path);
        view.conflicts(p.as_ref())
            .iter()
            .map(|c| c.path.to_string())
            .collect()
    };
    assert_eq!(at(None), ["d/e/y", "d/x", "dz", "top"]);
    assert_eq!(at(Some("d")), ["d/e/y", "d/x"]);
    assert_eq!(at(Some("d/x")), ["d/x"]);
    assert!(at(Some("nothing")).is_empty());
}

#[test]
fn listing_shows_direct_children_and_marks_directories() {
    let mut sim = Sim::new(1);
    for p in [
        "a", "b/c", "b/d/e", "b/d/f", "b-x", "b0", "z/y", "x", "x/inner",
    ] {
        sim.put(0, p, p.as_bytes());
    }
    let view = &sim.views[0];
    let show = |entries: Vec<ListEntry<'_>>| -> Vec<String> {
        entries
            .iter()
            .map(|e| format!("{}{}", e.path(), if e.is_dir() { "/" } else { "" }))
            .collect()
    };
    assert_eq!(
        show(view.list(None)),
        ["a", "b/", "b-x", "b0", "x/", "x", "z/"]
    );
    assert_eq!(show(view.list(Some(&path("b")))), ["b/c", "b/d/"]);
    assert_eq!(show(view.list(Some(&path("b/d")))), ["b/d/e", "b/d/f"]);
    assert!(view.list(Some(&path("a"))).is_empty());
    assert!(view.list(Some(&path("nope"))).is_empty());
    assert_eq!(
        show(view.list_recursive(Some(&path("b")))),
        ["b/c", "b/d/e", "b/d/f"]
    );
    assert_eq!(view.list_recursive(None).len(), 9);
    assert!(view.is_dir(&path("b/d")));
    assert!(!view.is_dir(&path("b/c")));
    assert!(!view.is_dir(&path("b-")));
}

#[test]
fn deleting_the_last_file_removes_the_directory() {
    let mut sim = Sim::new(1);
    sim.put(0, "d/only", b"x");
    assert!(sim.views[0].is_dir(&path("d")));
    sim.delete(0, "d/only");
    assert!(!sim.views[0].is_dir(&path("d")));
    assert!(sim.views[0].list(None).is_empty());
}

#[test]
fn empty_files_have_no_chunks() {
    let mut sim = Sim::new(1);
    sim.put(0, "empty", b"");
    let file = sim.views[0].get(&path("empty")).expect("exists");
    assert_eq!(file.meta.content.count, 0);
    assert_eq!(sim.read(file), b"");
}

#[test]
fn large_files_span_several_chunks() {
    let mut sim = Sim::new(1);
    let content: Vec<u8> = (0..CHUNK_SIZE * 2 + 10).map(|i| i as u8).collect();
    sim.put(0, "big.bin", &content);
    let file = sim.views[0].get(&path("big.bin")).expect("exists");
    assert_eq!(file.meta.content.count, 3);
    assert_eq!(sim.read(file), content);
}

#[test]
fn history_lists_every_op_after_those_it_follows() {
    let mut sim = Sim::new(2);
    sim.put(0, "a", b"1");
    sim.learn(1, 0);
    sim.put(1, "a", b"2");
    sim.put(0, "b", b"3");
    sim.learn_everything();
    sim.rename(0, "a", "c");
    sim.learn_everything();
    for view in &sim.views {
        let h = view.history(None);
        assert_eq!(h.len(), 4);
        for (i, later) in h.iter().enumerate() {
            for earlier in &h[i + 1..] {
                assert!(
                    !later.follows(earlier),
                    "{} listed before {}",
                    later.id,
                    earlier.id
                );
            }
        }
        assert_eq!(view.history(Some(&path("a"))).len(), 3);
        assert_eq!(view.history(Some(&path("c"))).len(), 1);
    }
}

#[test]
fn chunks_and_repeated_ops_do_not_change_the_view() {
    let mut sim = Sim::new(1);
    sim.put(0, "a", b"x");
    let ops = sim.all_ops();
    let mut view = View::new();
    assert_eq!(view.apply(ops[0].clone()), Ok(false), "a chunk");
    assert_eq!(view.apply(ops[1].clone()), Ok(true));
    assert_eq!(view.apply(ops[1].clone()), Ok(false));
    assert_eq!(view.len(), 1);
    assert_eq!(view.history(None).len(), 1);
}

#[test]
fn ops_whose_clock_does_not_count_themselves_are_refused() {
    let clock = |n| [(key(1), n)].into_iter().collect::<VectorClock>();
    let delete = |seq, c| Op {
        feed: key(1),
        seq,
        record: Record::Delete {
            path: path("a"),
            clock: c,
        },
    };
    let mut view = View::new();
    for (seq, c) in [
        (3, clock(3)),
        (3, clock(5)),
        (0, VectorClock::new()),
        (u64::MAX, clock(u64::MAX)),
    ] {
        assert!(
            matches!(view.apply(delete(seq, c)), Err(FsError::BadOp { op, .. }) if op.seq == seq)
        );
    }
    assert_eq!(view.apply(delete(3, clock(4))), Ok(true));
}

#[test]
fn ops_naming_content_their_writer_had_not_seen_are_refused() {
    let sim = Sim::new(2);
    let put = |content: ContentRef, clock: VectorClock| Op {
        feed: key(1),
        seq: 5,
        record: Record::Put {
            path: path("a"),
            meta: FileMeta {
                content,
                ..sim.meta(0, b"x", 0)
            },
            clock,
        },
    };
    let own = |first| ContentRef {
        feed: key(1),
        first,
        count: 1,
    };
    let other = |first| ContentRef {
        feed: key(2),
        first,
        count: 1,
    };
    let clock: VectorClock = [(key(1), 6), (key(2), 3)].into_iter().collect();
    let mut view = View::new();
    // Own feed: the chunk must come before the op itself.
    assert!(matches!(
        view.apply(put(own(5), clock.clone())),
        Err(FsError::BadOp { .. })
    ));
    // Another feed: the chunk must be within the writer's clock.
    assert!(matches!(
        view.apply(put(other(3), clock.clone())),
        Err(FsError::BadOp { .. })
    ));
    assert_eq!(view.apply(put(other(2), clock.clone())), Ok(true));
    let mut view = View::new();
    assert_eq!(view.apply(put(own(4), clock)), Ok(true));
}

#[test]
fn invalid_records_are_refused_by_apply() {
    let mut view = View::new();
    let op = Op {
        feed: key(1),
        seq: 0,
        record: Record::Device {
            name: String::new(),
        },
    };
    assert!(matches!(view.apply(op), Err(FsError::Malformed(_))));
}

#[test]
fn the_latest_device_name_counts_in_any_order() {
    let name = |seq, n: &str| Op {
        feed: key(1),
        seq,
        record: Record::Device { name: n.into() },
    };
    let mut view = View::new();
    assert_eq!(view.apply(name(4, "new")), Ok(true));
    assert_eq!(view.apply(name(1, "old")), Ok(false));
    assert_eq!(view.device_name(&key(1)), Some("new"));
    assert_eq!(view.device_name(&key(2)), None);
}

#[test]
fn version_ids_resolve_by_any_unambiguous_prefix() {
    let mut a = [0xab; 32];
    a[4] = 0x01;
    let mut b = [0xab; 32];
    b[4] = 0x02;
    let mut view = View::new();
    for (feed, p) in [(FeedKey(a), "x"), (FeedKey(b), "y")] {
        let op = Op {
            feed,
            seq: 0,
            record: Record::Delete {
                path: path(p),
                clock: [(feed, 1)].into_iter().collect(),
            },
        };
        view.apply(op).expect("valid");
    }
    let id_a = VersionId {
        feed: FeedKey(a),
        seq: 0,
    };
    assert_eq!(
        view.resolve("abababab:0"),
        Err(FsError::AmbiguousVersion("abababab:0".into()))
    );
    assert_eq!(view.resolve("abababab01:0"), Ok(id_a));
    assert_eq!(view.resolve(&id_a.full()), Ok(id_a));
    assert_eq!(
        view.resolve("abababab01:1"),
        Err(FsError::NoSuchVersion("abababab01:1".into()))
    );
    assert_eq!(
        view.resolve("cd:0"),
        Err(FsError::NoSuchVersion("cd:0".into()))
    );
    assert!(matches!(
        view.resolve("nonsense"),
        Err(FsError::BadVersionId(_))
    ));
}

#[test]
fn clock_for_write_follows_everything_applied() {
    let mut sim = Sim::new(3);
    sim.put(0, "a", b"x");
    sim.put(2, "b", b"y");
    sim.learn(1, 0);
    sim.learn(1, 2);
    let clock = sim.next_clock(1);
    assert_eq!(clock.get(&key(1)), 2);
    assert_eq!(clock.get(&key(2)), 1);
    assert_eq!(clock.get(&key(3)), 2);
    for v in sim.views[1].history(None) {
        assert!(clock.has_seen(&v.id.feed, v.id.seq));
    }
}

// ---- properties ------------------------------------------------------------------------------

const PATHS: [&str; 5] = ["a", "b", "d/a", "d/b", "d/e/f"];

#[derive(Clone, Debug)]
enum Step {
    Put {
        dev: usize,
        path: usize,
        byte: u8,
        len: usize,
    },
    Delete {
        dev: usize,
        path: usize,
    },
    Rename {
        dev: usize,
        from: usize,
        to: usize,
    },
    /// `to` learns everything `from` holds.
    Learn {
        to: usize,
        from: usize,
    },
    /// `to` learns one whole feed and nothing else.
    LearnFeed {
        to: usize,
        feed: usize,
    },
}

fn arb_step() -> impl Strategy<Value = Step> {
    let dev = 0usize..3;
    let p = 0usize..PATHS.len();
    prop_oneof![
        4 => (dev.clone(), p.clone(), any::<u8>(), 0usize..3)
            .prop_map(|(dev, path, byte, len)| Step::Put { dev, path, byte, len }),
        2 => (dev.clone(), p.clone()).prop_map(|(dev, path)| Step::Delete { dev, path }),
        2 => (dev.clone(), p.clone(), p.clone())
            .prop_map(|(dev, from, to)| Step::Rename { dev, from, to }),
        3 => (dev.clone(), dev.clone()).prop_map(|(to, from)| Step::Learn { to, from }),
        1 => (dev.clone(), dev).prop_map(|(to, feed)| Step::LearnFeed { to, feed }),
    ]
}

fn run(steps: &[Step]) -> Sim {
    let mut sim = Sim::new(3);
    for step in steps {
        match *step {
            Step::Put {
                dev,
                path,
                byte,
                len,
            } => {
                sim.put(dev, PATHS[path], &vec![byte; len]);
            }
            Step::Delete { dev, path } => {
                sim.delete(dev, PATHS[path]);
            }
            Step::Rename { dev, from, to } => {
                if from != to && sim.views[dev].get(&self::path(PATHS[from])).is_some() {
                    sim.rename(dev, PATHS[from], PATHS[to]);
                }
            }
            Step::Learn { to, from } => sim.learn(to, from),
            Step::LearnFeed { to, feed } => sim.learn_feed(to, feed),
        }
    }
    sim
}

/// Everything a member sees: files (with winner and conflict mark), conflicts, history.
type Snapshot = (
    Vec<(String, VersionId, bool)>,
    Vec<(String, VersionId, Vec<VersionId>)>,
    Vec<VersionId>,
    VectorClock,
);

fn snapshot(view: &View) -> Snapshot {
    let files = view
        .list_recursive(None)
        .into_iter()
        .map(|e| match e {
            ListEntry::File { file, conflicted } => {
                (file.path.to_string(), file.version, conflicted)
            }
            ListEntry::Dir(p) => panic!("recursive listing holds only files, got {p}"),
        })
        .collect();
    let conflicts = view
        .conflicts(None)
        .into_iter()
        .map(|c| {
            (
                c.path.to_string(),
                c.winner.id,
                c.losers.iter().map(|v| v.id).collect(),
            )
        })
        .collect();
    let history = view.history(None).into_iter().map(|v| v.id).collect();
    (files, conflicts, history, view.frontier().clone())
}

/// The rules of the view, computed the slow and obvious way from the whole set of ops.
fn reference(
    ops: &[Op],
) -> (
    BTreeMap<String, VersionId>,
    BTreeMap<String, BTreeSet<VersionId>>,
) {
    let mut view = View::new();
    let mut versions = Vec::new();
    for op in ops {
        let id = VersionId {
            feed: op.feed,
            seq: op.seq,
        };
        if view.apply(op.clone()).expect("valid") {
            versions.push(view.version(&id).expect("just applied").clone());
        }
    }
    let mut files = BTreeMap::new();
    let mut conflicts = BTreeMap::new();
    let all_paths: BTreeSet<&Path> = versions.iter().flat_map(|v| v.paths()).collect();
    for p in all_paths {
        let on: Vec<&Version> = versions
            .iter()
            .filter(|v| v.paths().any(|q| q == p))
            .collect();
        let heads: Vec<&Version> = on
            .iter()
            .copied()
            .filter(|a| !on.iter().any(|b| b.id != a.id && b.follows(a)))
            .collect();
        let winner = heads
            .iter()
            .filter(|v| v.file_at(p).is_some())
            .max_by_key(|v| (v.clock.sum(), v.id.feed, v.id.seq));
        if let Some(w) = winner {
            files.insert(p.to_string(), w.id);
            if heads.len() > 1 {
                let losers = heads
                    .iter()
                    .map(|v| v.id)
                    .filter(|id| *id != w.id)
                    .collect();
                conflicts.insert(p.to_string(), losers);
            }
        }
    }
    (files, conflicts)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn every_member_computes_the_same_view_in_any_order(
        steps in prop::collection::vec(arb_step(), 1..48),
        seeds in prop::array::uniform3(any::<u64>()),
    ) {
        let mut sim = run(&steps);
        sim.learn_everything();
        let ops = sim.all_ops();

        let expected = snapshot(&sim.views[0]);
        for view in &sim.views[1..] {
            prop_assert_eq!(&snapshot(view), &expected);
        }
        for seed in seeds {
            let mut shuffled = ops.clone();
            shuffled.shuffle(&mut StdRng::seed_from_u64(seed));
            let mut view = View::new();
            for op in shuffled {
                view.apply(op).expect("valid op");
            }
            prop_assert_eq!(&snapshot(&view), &expected);
        }

        // And the view is what the rules say, computed by brute force.
        let (files, conflicts) = reference(&ops);
        let view = &sim.views[0];
        let got_files: BTreeMap<String, VersionId> =
            expected.0.iter().map(|(p, v, _)| (p.clone(), *v)).collect();
        prop_assert_eq!(got_files, files);
        let got_conflicts: BTreeMap<String, BTreeSet<VersionId>> = view
            .conflicts(None)
            .into_iter()
            .map(|c| (c.path.to_string(), c.losers.iter().map(|v| v.id).collect()))
            .collect();
        prop_assert_eq!(got_conflicts, conflicts);

        // Every listed file and every loser is readable.
        for (p, _, _) in &expected.0 {
            let file = view.get(&path(p)).expect("listed file exists");
            sim.read(file);
        }
        for c in view.conflicts(None) {
            for loser in c.losers {
                if let Some(file) = loser.file_at(c.path) {
                    sim.read(file);
                }
            }
        }

        // History is causal.
        let history = view.history(None);
        for (i, later) in history.iter().enumerate() {
            for earlier in &history[i + 1..] {
                prop_assert!(!later.follows(earlier));
            }
        }
    }
}

/// 10,000 paths written concurrently by 5 devices: 50,000 ops, every path a 5-way conflict.
#[test]
fn ten_thousand_paths_by_five_devices_merge_in_any_order() {
    const PATHS: u64 = 10_000;
    const DEVICES: u8 = 5;
    let mut ops = Vec::new();
    for i in 0..PATHS {
        for d in 1..=DEVICES {
            // Entry 2i is the chunk, 2i + 1 the put; every device has seen every other device's
            // previous rounds but not this one, so the puts of round i are concurrent.
            let seq = 2 * i + 1;
            let clock: VectorClock = (1..=DEVICES)
                .map(|e| (key(e), if e == d { seq + 1 } else { 2 * i }))
                .collect();
            ops.push(Op {
                feed: key(d),
                seq,
                record: Record::Put {
                    path: path(&format!("dir{}/file{i}", i / 100)),
                    meta: FileMeta {
                        size: 10,
                        mode: 0o600,
                        mtime: Mtime::default(),
                        hash: [d; 32],
                        content: ContentRef {
                            feed: key(d),
                            first: 2 * i,
                            count: 1,
                        },
                    },
                    clock,
                },
            });
        }
    }
    let build = |ops: Vec<Op>| {
        let start = std::time::Instant::now();
        let mut view = View::new();
        for op in ops {
            view.apply(op).expect("valid op");
        }
        (view, start.elapsed())
    };
    let (view, elapsed) = build(ops.clone());
    eprintln!("built a view of {} ops in {elapsed:?}", view.len());
    assert_eq!(view.len(), 50_000);
    assert_eq!(view.list(None).len(), 100);
    assert_eq!(view.list_recursive(None).len(), PATHS as usize);
    let conflicts = view.conflicts(None);
    assert_eq!(conflicts.len(), PATHS as usize);
    assert!(conflicts
        .iter()
        .all(|c| c.winner.id.feed == key(DEVICES) && c.losers.len() == 4));

    ops.reverse();
    let (reversed, _) = build(ops);
    assert_eq!(snapshot(&reversed), snapshot(&view));
}
