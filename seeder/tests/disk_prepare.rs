//! `seeder disk list` and `seeder disk prepare` on a file-backed disk image through a loop
//! device (never a real disk): refusals first (a disk with a file system, a wrong
//! confirmation, a mounted disk), then a real preparation: GPT, one ext4 partition labelled
//! SEEDER-DATA, mounted where asked, owned like the mount point was.
//!
//! Needs root and loop devices. Without them the test says so and passes, except under CI.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{seeder, tool};

struct Loop {
    device: String,
    mounted: Option<std::path::PathBuf>,
}

impl Drop for Loop {
    fn drop(&mut self) {
        if let Some(m) = &self.mounted {
            let _ = Command::new("umount").arg(m).status();
        }
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

fn attach(image: &Path) -> Option<Loop> {
    let out = Command::new("losetup")
        .args(["--find", "--show", "--partscan"])
        .arg(image)
        .output()
        .ok()?;
    out.status.success().then(|| Loop {
        device: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        mounted: None,
    })
}

#[test]
fn a_disk_image_is_prepared_only_when_confirmed_and_empty_or_wiped() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(96 << 20)
        .unwrap();
    let is_root = tool("id", &["-u"]).trim() == "0";
    // `seeder disk prepare`'s own tools (util-linux and e2fsprogs; sfdisk is Debian's
    // `fdisk` package).
    let missing: Vec<&str> = ["losetup", "lsblk", "wipefs", "sfdisk", "partx", "mkfs.ext4"]
        .into_iter()
        .filter(|t| seeder::daemon::disk::which(t).is_none())
        .collect();
    if !missing.is_empty() {
        common::skip(&format!(
            "{} (apt-get install fdisk e2fsprogs)",
            missing.join(", ")
        ));
        return;
    }
    let Some(mut lo) = is_root.then(|| attach(&image)).flatten() else {
        common::skip("root and loop devices");
        return;
    };
    let name = lo.device.rsplit('/').next().unwrap().to_string();
    let mount = dir.path().join("data");
    std::fs::create_dir(&mount).unwrap();
    std::os::unix::fs::chown(&mount, Some(4242), Some(4243)).unwrap();
    let disk = |args: &[&str]| seeder().arg("disk").args(args).output().unwrap();

    // Listed, with its size.
    let out = disk(&["list", "--json", "--loops"]);
    assert!(out.status.success());
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let me = list
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device"] == lo.device.as_str())
        .expect("the loop device is listed");
    assert_eq!(me["size_bytes"], 96u64 << 20);

    // A disk holding a file system is refused without --wipe, and left as it was.
    tool("mkfs.ext4", &["-F", "-q", "-L", "PRECIOUS", &lo.device]);
    let prepare = |extra: &[&str]| {
        let mut args = vec![
            "prepare",
            lo.device.as_str(),
            "--allow-loop",
            "--mount-at",
            mount.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        disk(&args)
    };
    let out = prepare(&["--confirm", &name]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not empty") && err.contains("--wipe"), "{err}");
    assert_eq!(
        tool("blkid", &["-o", "value", "-s", "LABEL", &lo.device]).trim(),
        "PRECIOUS"
    );

    // A wrong confirmation is refused, naming what to type.
    let out = prepare(&["--confirm", "sda", "--wipe"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{name:?}")), "{err}");
    assert_eq!(
        tool("blkid", &["-o", "value", "-s", "LABEL", &lo.device]).trim(),
        "PRECIOUS"
    );

    // Confirmed and wiped: GPT, one ext4 partition labelled SEEDER-DATA, mounted.
    let out = prepare(&["--confirm", &name, "--wipe"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    lo.mounted = Some(mount.clone());
    let part = format!("{}p1", lo.device);
    assert!(tool("sfdisk", &["--dump", &lo.device]).contains("label: gpt"));
    assert_eq!(
        tool("blkid", &["-o", "value", "-s", "LABEL", &part]).trim(),
        "SEEDER-DATA"
    );
    assert_eq!(
        tool("blkid", &["-o", "value", "-s", "TYPE", &part]).trim(),
        "ext4"
    );
    assert_eq!(
        tool("findmnt", &["-n", "-o", "SOURCE", mount.to_str().unwrap()]).trim(),
        part
    );
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&mount).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (4242, 4243),
        "owned like the mount point was"
    );

    // A mounted disk is refused, even with --wipe.
    let out = prepare(&["--confirm", &name, "--wipe"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is mounted"));
}

#[test]
fn without_its_data_disk_the_seeder_stores_nothing_says_so_and_starts_when_it_appears() {
    use std::io::{BufRead, BufReader};
    let is_root = tool("id", &["-u"]).trim() == "0";
    if !is_root {
        common::skip("root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let port = common::free_udp_port();
    let mut child = seeder()
        .args([
            "serve",
            "--no-mdns",
            "--require-data-disk",
            "--admin",
            "127.0.0.1:0",
        ])
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(&data)
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    struct Cleanup(std::process::Child, std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
            let _ = Command::new("umount").arg(&self.1).status();
        }
    }
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let _cleanup = Cleanup(child, data.clone());
    let admin = loop {
        let line = lines.next().expect("the daemon ended").unwrap();
        if line.contains("no data disk") {
            break line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("admin="))
                .unwrap()
                .to_string();
        }
    };
    let (status, _, page) = common::http(&admin, "GET", "/claim", &[], "");
    assert_eq!(status, 200);
    assert!(page.contains("No data disk"), "{page}");
    assert_eq!(
        std::fs::read_dir(&data).unwrap().count(),
        0,
        "nothing written to the SD card"
    );

    // The disk appears (a tmpfs stands in): the daemon starts for real.
    tool(
        "mount",
        &[
            "-t",
            "tmpfs",
            "-o",
            "size=64m",
            "tmpfs",
            data.to_str().unwrap(),
        ],
    );
    loop {
        let line = lines.next().expect("the daemon ended").unwrap();
        if line.contains("seeder ready") {
            break;
        }
    }
    let out = seeder()
        .args(["ctl", "--data"])
        .arg(&data)
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["needs_admin"], false);
    std::thread::spawn(move || for _ in lines {});
}
