//! `seeder board` against a real daemon, with a FIFO standing in for the power button's input
//! device and a folder for the LED's sysfs attributes: the LED shows a heartbeat, turns solid
//! while the admin page waits for a claim press, a short press is counted by the daemon, and a
//! press held four seconds runs the shutdown command.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_udp_port, http, seeder, Seeder};
use seeder::daemon::board::{encode_event, EV_KEY, KEY_POWER};

/// Wait (bounded) until `check` holds.
fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let until = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read(dir: &Path, attr: &str) -> String {
    std::fs::read_to_string(dir.join(attr)).unwrap_or_default()
}

struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_led_follows_the_daemon_and_the_power_button_claims_and_shuts_down() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("seeder");
    let port = free_udp_port();
    let listen = format!("127.0.0.1:{port}");
    let seed = Seeder::start_with(
        &[
            "--no-mdns",
            "--claim-button",
            "--data",
            data.to_str().unwrap(),
            "--listen",
            &listen,
            "--admin",
            "127.0.0.1:0",
        ],
        &data,
        port,
    );
    let led = dir.path().join("led");
    std::fs::create_dir(&led).unwrap();
    let fifo = dir.path().join("button");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let marker = dir.path().join("shut-down");
    let _board = Kill(
        seeder()
            .args(["board", "--data"])
            .arg(&data)
            .arg("--led")
            .arg(&led)
            .arg("--button")
            .arg(&fifo)
            .args(["--shutdown-command", &format!("touch {}", marker.display())])
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Opening for writing waits for the board process to open the other end.
    let mut button = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    let mut press = |value: i32| {
        button
            .write_all(&encode_event(EV_KEY, KEY_POWER, value))
            .unwrap();
        button.write_all(&encode_event(0, 0, 0)).unwrap();
        button.flush().unwrap();
    };

    eventually("a heartbeat", Duration::from_secs(10), || {
        read(&led, "trigger") == "heartbeat"
    });

    // The admin page starts waiting for the button: the LED turns solid.
    let admin = seed.status()["admin"].as_str().unwrap().to_string();
    let (_, head, page) = http(&admin, "GET", "/claim", &[], "");
    let pre = page
        .split("name=\"pre\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    assert!(page.contains("Wait for the button"));
    let cookie = common::session_cookie(&head);
    let form = [
        ("Cookie", cookie.as_str()),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ];
    let (status, _, _) = http(
        &admin,
        "POST",
        "/claim/button",
        &form,
        &format!("pre={pre}"),
    );
    assert_eq!(status, 303);
    eventually("a solid LED", Duration::from_secs(10), || {
        read(&led, "trigger") == "none" && read(&led, "brightness") == "255"
    });

    // A short press reaches the daemon, and the page may now claim.
    press(1);
    press(0);
    eventually("the press counted", Duration::from_secs(10), || {
        seed.status()["button_presses"] == 1
    });
    let (_, _, state) = http(&admin, "GET", "/claim/button", &[("Cookie", &cookie)], "");
    assert!(state.contains("pressed"), "{state}");
    let body =
        format!("pre={pre}&method=button&password=a+long+password&password_again=a+long+password");
    let (status, _, _) = http(&admin, "POST", "/claim", &form, &body);
    assert_eq!(status, 303);
    eventually("the heartbeat again", Duration::from_secs(10), || {
        read(&led, "trigger") == "heartbeat"
    });

    // Held four seconds: shut down, while the button is still down.
    press(1);
    eventually("the shutdown command", Duration::from_secs(10), || {
        marker.exists()
    });
    press(0);
    assert_eq!(
        seed.status()["button_presses"],
        1,
        "a long press is not a claim press"
    );
}
