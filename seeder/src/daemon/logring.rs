/*!
The daemon's recent log lines, kept in memory for the admin page's log view: a `tracing`
layer that copies each event at `info` or above into a ring of [`CAPACITY`] lines. The
journal (stderr under systemd) stays the full record; this is a window onto its end.

Not for: persistence or search.
*/

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// Lines kept. At ~200 bytes a line, about 400 KiB at most.
pub const CAPACITY: usize = 2000;
/// A longer message is cut here.
pub const MAX_LINE: usize = 1024;

/// One captured line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub at_ms: u64,
    pub level: Level,
    pub target: String,
    pub message: String,
}

/// The ring, shared by the layer and its readers.
#[derive(Clone, Default)]
pub struct LogRing {
    lines: Arc<Mutex<VecDeque<Line>>>,
}

static GLOBAL: OnceLock<LogRing> = OnceLock::new();

impl LogRing {
    /// The process's ring (installed by the CLI's tracing setup).
    pub fn global() -> &'static LogRing {
        GLOBAL.get_or_init(LogRing::default)
    }

    pub fn push(&self, line: Line) {
        let mut l = self.lines.lock().expect("log ring lock");
        if l.len() >= CAPACITY {
            l.pop_front();
        }
        l.push_back(line);
    }

    /// The newest `limit` lines at `min` or more severe, oldest first.
    pub fn recent(&self, min: Level, limit: usize) -> Vec<Line> {
        let l = self.lines.lock().expect("log ring lock");
        // tracing orders levels by verbosity: ERROR < WARN < INFO.
        let mut v: Vec<Line> = l
            .iter()
            .rev()
            .filter(|x| x.level <= min)
            .take(limit)
            .cloned()
            .collect();
        v.reverse();
        v
    }
}

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if self.0.len() >= MAX_LINE {
            return;
        }
        if field.name() == "message" {
            let mut m = format!("{value:?}");
            if !self.0.is_empty() {
                m.push(' ');
                m.push_str(&self.0);
            }
            self.0 = m;
        } else {
            if !self.0.is_empty() {
                self.0.push(' ');
            }
            let _ = write!(self.0, "{}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }
}

impl<S: Subscriber> Layer<S> for LogRing {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() > Level::INFO {
            return;
        }
        let mut f = Fields(String::new());
        event.record(&mut f);
        let mut message = f.0;
        if message.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.push(Line {
            at_ms,
            level: *meta.level(),
            target: meta.target().to_string(),
            message,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn events_at_info_and_above_are_kept_newest_last_and_bounded() {
        let ring = LogRing::default();
        let subscriber = tracing_subscriber::registry().with(ring.clone());
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!("pushed out by newer lines");
            for i in 0..CAPACITY {
                tracing::info!(i, "filler");
            }
            tracing::debug!("not kept");
            tracing::warn!("disk almost full");
            tracing::error!("last");
        });
        let all = ring.recent(Level::INFO, usize::MAX);
        assert_eq!(all.len(), CAPACITY);
        assert_eq!(all.last().map(|l| l.message.as_str()), Some("last"));
        let warn = ring.recent(Level::WARN, 10);
        assert_eq!(
            warn.iter().map(|l| l.message.as_str()).collect::<Vec<_>>(),
            vec!["disk almost full", "last"]
        );
        assert!(!all.iter().any(|l| l.message == "not kept"));
        let ring2 = LogRing::default();
        let subscriber = tracing_subscriber::registry().with(ring2.clone());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(peer = "ab", "peer connected");
        });
        assert_eq!(
            ring2.recent(Level::INFO, 1)[0].message,
            "peer connected peer=\"ab\""
        );
    }
}
