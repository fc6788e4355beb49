/*!
Per-space totals (feeds, entries, bytes, whether every feed is complete), kept current as
feeds change instead of summed over every feed on each request: the admin dashboard, its
spaces page, `/api/v1/status` and every quota check read them, and at 10,000 feeds the sum
was most of a dashboard request's time.

How they stay exact:
- the [`Registry`](super::registry::Registry) builds them once when it opens (from its member
  table and the store) and again when a space is added back, and tells them of each member
  taken in and each space removed;
- the store tells them of every feed's new size after each append, fork and delete
  ([`FeedWatcher`]). A call carries the feed's new size, not a difference, so a rebuild racing
  an append can't count it twice.

Nothing is persisted: rebuilding at open reads each member feed's metadata once (a few ms per
thousand feeds), and can't disagree with the store after a crash.

Memory: one record per member feed of a held space (its size and its spaces, about 100 bytes),
so 1 MiB at 10,000 feeds; one per held space.
*/

use std::collections::HashMap;
use std::sync::Mutex;

use crate::feed::FeedKey;
use crate::space::Address;
use crate::store::{FeedSize, FeedWatcher};

/// What a held space holds, summed over its member feeds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpaceTotals {
    /// Member feeds (stored or not yet).
    pub feeds: u64,
    /// Entries stored.
    pub entries: u64,
    /// Bytes of entry data stored.
    pub bytes: u64,
    /// Member feeds missing entries of their newest known head, or frozen by a fork.
    pub incomplete: u64,
}

impl SpaceTotals {
    /// Every member feed holds all it is known to have.
    pub fn complete(&self) -> bool {
        self.incomplete == 0
    }

    fn add(&mut self, s: FeedSize) {
        self.entries += s.entries;
        self.bytes += s.bytes;
        self.incomplete += u64::from(!s.complete);
    }

    fn sub(&mut self, s: FeedSize) {
        self.entries = self.entries.saturating_sub(s.entries);
        self.bytes = self.bytes.saturating_sub(s.bytes);
        self.incomplete = self.incomplete.saturating_sub(u64::from(!s.complete));
    }
}

struct Member {
    size: FeedSize,
    /// The held spaces this feed is a member of (almost always one).
    spaces: Vec<Address>,
}

#[derive(Default)]
struct Inner {
    feeds: HashMap<FeedKey, Member>,
    spaces: HashMap<Address, SpaceTotals>,
}

/// See the module comment.
#[derive(Default)]
pub struct Totals {
    inner: Mutex<Inner>,
}

impl Totals {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .expect("space totals poisoned: a thread panicked while holding them")
    }

    /// The totals of `space`, if it is held.
    pub fn space(&self, space: &Address) -> Option<SpaceTotals> {
        self.lock().spaces.get(space).copied()
    }

    /// Start over from `spaces`, each with its member feeds. `size` reads a feed's size now;
    /// it is called with the totals locked, so a store change racing the rebuild is applied
    /// after it (as an absolute size), never lost.
    pub fn rebuild<E>(
        &self,
        spaces: impl IntoIterator<Item = (Address, Vec<FeedKey>)>,
        mut size: impl FnMut(&FeedKey) -> Result<FeedSize, E>,
    ) -> Result<(), E> {
        let mut inner = self.lock();
        let mut fresh = Inner::default();
        for (space, feeds) in spaces {
            fresh.spaces.entry(space).or_default();
            for feed in feeds {
                let s = size(&feed)?;
                fresh.add_member(space, feed, s);
            }
        }
        *inner = fresh;
        Ok(())
    }

    /// `feed` became a member of `space` (nothing happens if it was, or if `space` isn't
    /// held); `size` reads its size now, as in [`Totals::rebuild`].
    pub fn add_member<E>(
        &self,
        space: Address,
        feed: FeedKey,
        size: impl FnOnce(&FeedKey) -> Result<FeedSize, E>,
    ) -> Result<(), E> {
        let mut inner = self.lock();
        if !inner.spaces.contains_key(&space)
            || inner
                .feeds
                .get(&feed)
                .is_some_and(|m| m.spaces.contains(&space))
        {
            return Ok(());
        }
        let s = size(&feed)?;
        inner.add_member(space, feed, s);
        Ok(())
    }

    /// `space` is no longer held: its totals go, and its feeds stop counting for it.
    pub fn remove_space(&self, space: &Address) {
        let mut inner = self.lock();
        if inner.spaces.remove(space).is_none() {
            return;
        }
        inner.feeds.retain(|_, m| {
            m.spaces.retain(|a| a != space);
            !m.spaces.is_empty()
        });
    }
}

impl Inner {
    fn add_member(&mut self, space: Address, feed: FeedKey, size: FeedSize) {
        let member = self.feeds.entry(feed).or_insert(Member {
            size,
            spaces: Vec::new(),
        });
        if member.spaces.contains(&space) {
            return;
        }
        member.spaces.push(space);
        let size = member.size;
        let t = self.spaces.entry(space).or_default();
        t.feeds += 1;
        t.add(size);
    }
}

impl FeedWatcher for Totals {
    fn feed_changed(&self, feed: &FeedKey, size: Option<FeedSize>) {
        let mut inner = self.lock();
        let Inner { feeds, spaces } = &mut *inner;
        let Some(member) = feeds.get_mut(feed) else {
            return;
        };
        let new = size.unwrap_or(FeedSize::ABSENT);
        for space in &member.spaces {
            if let Some(t) = spaces.get_mut(space) {
                t.sub(member.size);
                t.add(new);
            }
        }
        member.size = new;
    }
}
