//! Three member homes edit one space offline and exchange bundles in random orders; once every
//! device has every feed, they all show the same files, contents and conflicts.
//! (The pure view has its own, larger property test; this one goes through the real homes,
//! encryption, store and bundle files.)

// A panic is how a test fails.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use seeder::fs::home::{FileMeta, Home, Rng};
use seeder::fs::{ListEntry, Mtime, Path};

const PATHS: &[&str] = &["a.txt", "b.txt", "dir/c.txt", "dir/d.txt"];

#[derive(Clone, Debug)]
enum Step {
    Put {
        dev: usize,
        path: usize,
        text: u8,
    },
    Remove {
        dev: usize,
        path: usize,
    },
    Move {
        dev: usize,
        from: usize,
        to: usize,
    },
    /// `from`'s bundle is imported by `to`.
    Send {
        from: usize,
        to: usize,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..3usize, 0..PATHS.len(), any::<u8>()).prop_map(|(dev, path, text)| Step::Put { dev, path, text }),
        1 => (0..3usize, 0..PATHS.len()).prop_map(|(dev, path)| Step::Remove { dev, path }),
        1 => (0..3usize, 0..PATHS.len(), 0..PATHS.len()).prop_map(|(dev, from, to)| Step::Move { dev, from, to }),
        3 => (0..3usize, 0..3usize).prop_map(|(from, to)| Step::Send { from, to }),
    ]
}

/// What a device shows: every file with its content, and every conflict.
fn snapshot(home: &Home) -> (Vec<(String, Vec<u8>)>, Vec<String>) {
    let space = home.space("office").unwrap();
    let view = space.view().unwrap();
    let mut files = Vec::new();
    for entry in view.list_recursive(None) {
        if let ListEntry::File { file, .. } = entry {
            let mut content = Vec::new();
            space.read_content(file, &mut content).unwrap();
            files.push((file.path.to_string(), content));
        }
    }
    let conflicts = view
        .conflicts(None)
        .iter()
        .map(|c| {
            let losers: Vec<String> = c.losers.iter().map(|l| l.id.full()).collect();
            format!("{} {} {:?}", c.path, c.winner.id.full(), losers)
        })
        .collect();
    (files, conflicts)
}

fn send(homes: &[Home], from: usize, to: usize, dir: &std::path::Path) {
    if from == to {
        return;
    }
    let address = *homes[from].space("office").unwrap().address();
    let file = dir.join(format!("{from}-{to}-{}.bundle", rand::random::<u64>()));
    homes[from].export_bundle(&address, &file).unwrap();
    homes[to].import_bundle(&address, &file).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn devices_converge_whatever_the_order_of_bundles(steps in proptest::collection::vec(step(), 1..24)) {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = Rng::default();
        let homes: Vec<Home> = (0..3).map(|i| Home::open(dir.path().join(format!("h{i}"))).unwrap()).collect();
        homes[0].create_space("office", &mut rng).unwrap();
        let invite = homes[0].invite("office").unwrap();
        for h in &homes[1..] {
            h.join(&invite, "office", &mut rng).unwrap();
        }
        let meta = FileMeta { mode: 0o644, mtime: Mtime::default() };
        for s in steps {
            match s {
                Step::Put { dev, path, text } => {
                    let space = homes[dev].space("office").unwrap();
                    let content = format!("{text} from {dev}").into_bytes();
                    space.put(&Path::new(PATHS[path]).unwrap(), &mut content.as_slice(), meta, &mut |_| {}).unwrap();
                }
                Step::Remove { dev, path } => {
                    let space = homes[dev].space("office").unwrap();
                    let p = Path::new(PATHS[path]).unwrap();
                    if space.view().unwrap().get(&p).is_some() {
                        space.remove(&p).unwrap();
                    }
                }
                Step::Move { dev, from, to } => {
                    let space = homes[dev].space("office").unwrap();
                    let from = Path::new(PATHS[from]).unwrap();
                    if space.view().unwrap().get(&from).is_some() {
                        space.rename(&from, &Path::new(PATHS[to]).unwrap()).unwrap();
                    }
                }
                Step::Send { from, to } => send(&homes, from, to, dir.path()),
            }
        }
        // Everyone hears everyone (twice round, so relayed feeds arrive too).
        for _ in 0..2 {
            for from in 0..3 {
                for to in 0..3 {
                    send(&homes, from, to, dir.path());
                }
            }
        }
        let first = snapshot(&homes[0]);
        prop_assert_eq!(&snapshot(&homes[1]), &first);
        prop_assert_eq!(&snapshot(&homes[2]), &first);
    }
}
