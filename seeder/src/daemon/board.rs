/*!
The board's status LED and power button, for appliances: `seeder board` runs as root beside the
unprivileged daemon (`seeder-board.service`), reads the power button's input events and drives
the LED through `/sys/class/leds`, talking to the daemon over its control socket.

- LED: heartbeat when healthy, fast blink when something needs the admin (an error warning:
  disk full, forks, damaged data), solid while the admin page waits for a claim button press.
- Button: a short press is passed to the daemon (it confirms a claim the page waits for); a
  press held for [`LONG_PRESS`] shuts the machine down cleanly.

The decisions are pure ([`Button`], [`LedState::from_status`]) and tested without hardware;
the thin loop in [`run`] does the I/O.

Not for: anything the daemon can decide alone. This process holds no data and no secrets.
*/

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Held this long, the power button shuts down.
pub const LONG_PRESS: Duration = Duration::from_secs(4);
/// How often the LED follows the daemon's state.
pub const LED_EVERY: Duration = Duration::from_secs(2);

/// Linux input event types and codes used here (linux/input-event-codes.h).
pub const EV_KEY: u16 = 1;
pub const KEY_POWER: u16 = 116;

/// Size of `struct input_event`: a timeval of two longs, then u16 type, u16 code, i32 value.
/// The kernel keeps two *native* longs even where userspace has a 64-bit time_t.
pub const EVENT_SIZE: usize = 2 * std::mem::size_of::<usize>() + 8;

/// One input event: (type, code, value).
pub type InputEvent = (u16, u16, i32);

/// Decode whole events from `buf`; a trailing partial event is left for the next read.
pub fn parse_events(buf: &[u8]) -> (Vec<InputEvent>, usize) {
    let mut out = Vec::new();
    let mut used = 0;
    while buf.len() - used >= EVENT_SIZE {
        let e = &buf[used..used + EVENT_SIZE];
        let t = 2 * std::mem::size_of::<usize>();
        let kind = u16::from_ne_bytes([e[t], e[t + 1]]);
        let code = u16::from_ne_bytes([e[t + 2], e[t + 3]]);
        let value = i32::from_ne_bytes([e[t + 4], e[t + 5], e[t + 6], e[t + 7]]);
        out.push((kind, code, value));
        used += EVENT_SIZE;
    }
    (out, used)
}

/// Encode an event (for tests and simulators).
pub fn encode_event(kind: u16, code: u16, value: i32) -> Vec<u8> {
    let mut e = vec![0u8; 2 * std::mem::size_of::<usize>()];
    e.extend_from_slice(&kind.to_ne_bytes());
    e.extend_from_slice(&code.to_ne_bytes());
    e.extend_from_slice(&value.to_ne_bytes());
    e
}

/// What a press meant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Press {
    Short,
    Long,
}

/// The power button's state machine: fed key events and clock ticks, it says when a press
/// ended short or became long (once, while still held).
#[derive(Debug, Default)]
pub struct Button {
    down_since: Option<Instant>,
    long_done: bool,
}

impl Button {
    /// A KEY_POWER event: value 1 pressed, 0 released, 2 auto-repeat.
    pub fn key(&mut self, value: i32, now: Instant) -> Option<Press> {
        match value {
            1 => {
                self.down_since = Some(now);
                self.long_done = false;
                None
            }
            0 => {
                let since = self.down_since.take()?;
                if self.long_done {
                    return None;
                }
                if now.saturating_duration_since(since) >= LONG_PRESS {
                    Some(Press::Long)
                } else {
                    Some(Press::Short)
                }
            }
            _ => self.tick(now),
        }
    }

    /// Time passes: a press held long enough becomes long without waiting for the release.
    pub fn tick(&mut self, now: Instant) -> Option<Press> {
        match self.down_since {
            Some(since)
                if !self.long_done && now.saturating_duration_since(since) >= LONG_PRESS =>
            {
                self.long_done = true;
                Some(Press::Long)
            }
            _ => None,
        }
    }
}

/// What the LED shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LedState {
    /// Slow heartbeat: all is well.
    Healthy,
    /// Fast blink: an error the admin should look at, or the daemon is not answering.
    NeedsAdmin,
    /// Solid: the admin page waits for a press of the button.
    WaitingForButton,
}

impl LedState {
    /// From `seeder ctl status --json` (or `None` when the daemon doesn't answer).
    pub fn from_status(status: Option<&serde_json::Value>) -> LedState {
        let Some(s) = status else {
            return LedState::NeedsAdmin;
        };
        if s["waiting_for_button"].as_bool() == Some(true) {
            LedState::WaitingForButton
        } else if s["needs_admin"].as_bool() == Some(true) {
            LedState::NeedsAdmin
        } else {
            LedState::Healthy
        }
    }

    /// The sysfs attributes to write, in order (the trigger first: it creates the others).
    pub fn attributes(self) -> &'static [(&'static str, &'static str)] {
        match self {
            LedState::Healthy => &[("trigger", "heartbeat")],
            LedState::NeedsAdmin => &[
                ("trigger", "timer"),
                ("delay_on", "100"),
                ("delay_off", "100"),
            ],
            LedState::WaitingForButton => &[("trigger", "none"), ("brightness", "255")],
        }
    }
}

/// An LED under `/sys/class/leds/NAME`, written only when its state changes.
pub struct Led {
    dir: PathBuf,
    shown: Option<LedState>,
}

impl Led {
    pub fn new(dir: impl Into<PathBuf>) -> Led {
        Led {
            dir: dir.into(),
            shown: None,
        }
    }

    pub fn show(&mut self, state: LedState) -> std::io::Result<()> {
        if self.shown == Some(state) {
            return Ok(());
        }
        for (attr, value) in state.attributes() {
            std::fs::write(self.dir.join(attr), value)?;
        }
        self.shown = Some(state);
        Ok(())
    }
}

/// The input device of the AXP209's power key (`axp20x-pek`), found by name.
pub fn find_power_button() -> Option<PathBuf> {
    let dir = std::fs::read_dir("/sys/class/input").ok()?;
    for e in dir.filter_map(|e| e.ok()) {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with("event") {
            continue;
        }
        let dev = std::fs::read_to_string(e.path().join("device/name")).unwrap_or_default();
        if dev.trim() == "axp20x-pek" {
            return Some(Path::new("/dev/input").join(name.as_ref()));
        }
    }
    None
}

/// What `run` talks to: the daemon (status, button presses) and the machine (shutdown).
pub trait Host: Send + Sync + 'static {
    fn status(&self) -> Option<serde_json::Value>;
    fn button_pressed(&self);
    fn shutdown(&self);
}

/// Read button events from `input` (until it ends) and keep `led` current, until `stop`.
pub fn run(
    host: std::sync::Arc<dyn Host>,
    input: Option<PathBuf>,
    led: Option<PathBuf>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::io::Result<()> {
    use std::sync::atomic::Ordering;
    if let Some(path) = input {
        let mut file = std::fs::File::open(&path)?;
        let host = host.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (tx, rx) = std::sync::mpsc::sync_channel::<i32>(64);
            // The reader blocks in read(); the clock ticks here so a long press acts while
            // the button is still held.
            std::thread::spawn(move || {
                let mut buf = vec![0u8; EVENT_SIZE * 64];
                let mut filled = 0;
                loop {
                    match file.read(&mut buf[filled..]) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => filled += n,
                    }
                    let (events, used) = parse_events(&buf[..filled]);
                    buf.copy_within(used..filled, 0);
                    filled -= used;
                    for (kind, code, value) in events {
                        if kind == EV_KEY && code == KEY_POWER && tx.send(value).is_err() {
                            return;
                        }
                    }
                }
            });
            let mut button = Button::default();
            while !stop.load(Ordering::Relaxed) {
                let press = match rx.recv_timeout(Duration::from_millis(200)) {
                    Ok(v) => button.key(v, Instant::now()),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => button.tick(Instant::now()),
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                };
                match press {
                    Some(Press::Short) => {
                        tracing::info!("power button pressed");
                        host.button_pressed();
                    }
                    Some(Press::Long) => {
                        tracing::warn!("power button held: shutting down");
                        host.shutdown();
                    }
                    None => {}
                }
            }
        });
    }
    let mut led = led.map(Led::new);
    while !stop.load(Ordering::Relaxed) {
        if let Some(led) = led.as_mut() {
            let state = LedState::from_status(host.status().as_ref());
            if let Err(e) = led.show(state) {
                tracing::warn!(error = %e, "cannot set the LED");
            }
        }
        let until = Instant::now() + LED_EVERY;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_presses_pass_and_long_presses_act_while_still_held() {
        let t = Instant::now();
        let mut b = Button::default();
        assert_eq!(b.key(1, t), None);
        assert_eq!(b.key(0, t + Duration::from_millis(300)), Some(Press::Short));
        assert_eq!(b.key(1, t), None);
        assert_eq!(b.tick(t + Duration::from_secs(3)), None);
        assert_eq!(b.tick(t + LONG_PRESS), Some(Press::Long));
        assert_eq!(b.tick(t + LONG_PRESS * 2), None, "once");
        assert_eq!(
            b.key(0, t + LONG_PRESS * 2),
            None,
            "release after a long press"
        );
        assert_eq!(b.key(0, t), None, "release without a press");
        assert_eq!(b.key(1, t), None);
        assert_eq!(
            b.key(2, t + LONG_PRESS),
            Some(Press::Long),
            "auto-repeat ticks too"
        );
    }

    #[test]
    fn events_decode_whole_and_keep_partial_ones_for_later() {
        let mut buf = encode_event(EV_KEY, KEY_POWER, 1);
        buf.extend(encode_event(0, 0, 0));
        buf.extend(&encode_event(EV_KEY, KEY_POWER, 0)[..5]);
        let (events, used) = parse_events(&buf);
        assert_eq!(events, vec![(EV_KEY, KEY_POWER, 1), (0, 0, 0)]);
        assert_eq!(used, 2 * EVENT_SIZE);
        assert_eq!(
            EVENT_SIZE,
            if cfg!(target_pointer_width = "64") {
                24
            } else {
                16
            }
        );
    }

    #[test]
    fn the_led_follows_the_daemon_and_is_written_only_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let mut led = Led::new(dir.path());
        let waiting = serde_json::json!({ "waiting_for_button": true, "needs_admin": true });
        let bad = serde_json::json!({ "waiting_for_button": false, "needs_admin": true });
        let good = serde_json::json!({ "waiting_for_button": false, "needs_admin": false });
        let read = |a: &str| std::fs::read_to_string(dir.path().join(a)).unwrap();
        led.show(LedState::from_status(Some(&good))).unwrap();
        assert_eq!(read("trigger"), "heartbeat");
        led.show(LedState::from_status(Some(&bad))).unwrap();
        assert_eq!(
            (read("trigger"), read("delay_on")),
            ("timer".into(), "100".into())
        );
        led.show(LedState::from_status(Some(&waiting))).unwrap();
        assert_eq!(
            (read("trigger"), read("brightness")),
            ("none".into(), "255".into())
        );
        std::fs::write(dir.path().join("trigger"), "changed elsewhere").unwrap();
        led.show(LedState::WaitingForButton).unwrap();
        assert_eq!(
            read("trigger"),
            "changed elsewhere",
            "not rewritten without a change"
        );
        assert_eq!(LedState::from_status(None), LedState::NeedsAdmin);
    }
}
