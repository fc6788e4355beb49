/*!
The data disk: listing block devices (for `seeder disk list` and the admin page) and
preparing one as the seeder's data disk (`seeder disk prepare`): GPT, one ext4 partition
labelled `SEEDER-DATA`, mounted at the data folder. The board's mount unit then finds it by
label on every boot.

Preparing erases a disk, so it refuses unless everything lines up: the device is a whole disk,
nothing on it is mounted, it doesn't hold the running system, the confirmation typed is its
serial number (or, for a disk that reports none, its kernel name), and it carries no partition
table or file system signature, unless `wipe` is given too. The work is done by util-linux and
e2fsprogs (`wipefs`, `sfdisk`, `mkfs.ext4`, `mount`), run as root.

Not for: choosing a disk by itself. Nothing here runs without a person's explicit request.
*/

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

/// The data disk's file system label.
pub const DATA_LABEL: &str = "SEEDER-DATA";

/// Errors of disk handling; messages are for the person at the console or page.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiskError {
    #[error("{0} is not installed (it comes with util-linux, fdisk or e2fsprogs)")]
    Missing(&'static str),
    #[error("{program} failed: {message}")]
    Tool { program: String, message: String },
    #[error("cannot read the list of disks: {0}")]
    List(String),
    #[error("{0} is not a whole disk here (see `seeder disk list`)")]
    NoSuchDisk(String),
    #[error("{0} is in use: {1} is mounted; unmount it first")]
    Mounted(String, String),
    #[error("{0} holds the running system")]
    SystemDisk(String),
    #[error(
        "the confirmation does not match: type {expected:?} (the disk's {what}) to erase {device}"
    )]
    NotConfirmed {
        device: String,
        expected: String,
        what: &'static str,
    },
    #[error(
        "{device} is not empty: it has {found}. Nothing was changed. To erase it anyway, \
         give --wipe as well as --confirm"
    )]
    NotEmpty { device: String, found: String },
    #[error("the new partition {0} did not appear")]
    NoPartition(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A block device (whole disk) and what its partitions hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BlockDevice {
    /// `/dev/sda`.
    pub device: String,
    pub model: String,
    pub serial: String,
    pub size_bytes: u64,
    pub filesystem: Option<String>,
    pub label: Option<String>,
    /// Mount points of the disk and its partitions.
    pub mountpoints: Vec<String>,
    pub removable: bool,
    /// Partitions found on it.
    pub partitions: usize,
}

impl BlockDevice {
    /// What it holds, in a word or two: its label or file system, else its partitions, else
    /// "in use" when mounted (lsblk can't always name a mounted root's file system); "empty"
    /// only when nothing at all is found on it.
    pub fn contents(&self) -> String {
        if let Some(what) = self.label.as_ref().or(self.filesystem.as_ref()) {
            return what.clone();
        }
        match (self.partitions, self.mountpoints.is_empty()) {
            (0, true) => "empty".into(),
            (0, false) => "in use".into(),
            (1, _) => "1 partition".into(),
            (n, _) => format!("{n} partitions"),
        }
    }

    /// What must be typed to erase it: the serial, or the kernel name when there is none.
    pub fn confirmation(&self) -> (String, &'static str) {
        if self.serial.is_empty() {
            let name = self.device.rsplit('/').next().unwrap_or(&self.device);
            (name.to_string(), "name (it reports no serial number)")
        } else {
            (self.serial.clone(), "serial number")
        }
    }
}

/// Find a program in `PATH` or the sbin folders (root's tools aren't always on a user's path).
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into(), "/usr/bin".into()])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

fn run(program: &'static str, args: &[&str]) -> Result<String, DiskError> {
    let path = which(program).ok_or(DiskError::Missing(program))?;
    tracing::debug!(program, ?args, "running");
    let out = Command::new(path).args(args).output()?;
    if !out.status.success() {
        return Err(DiskError::Tool {
            program: format!("{program} {}", args.join(" ")),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

fn str_field(v: &serde_json::Value, k: &str) -> Option<String> {
    match &v[k] {
        serde_json::Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        _ => None,
    }
}

/// `lsblk --json --bytes --output PATH,MODEL,SERIAL,SIZE,FSTYPE,LABEL,MOUNTPOINT,TYPE,RM`
/// → whole disks (loop devices only when `with_loops`, for tests on image files).
pub fn parse_lsblk(json: &[u8], with_loops: bool) -> Result<Vec<BlockDevice>, DiskError> {
    let v: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| DiskError::List(e.to_string()))?;
    // Partitions are children of their disk, or (without udev, as in containers) listed
    // beside it: gather every entry and match partitions to disks by name.
    let mut all = Vec::new();
    let mut stack: Vec<&serde_json::Value> =
        v["blockdevices"].as_array().into_iter().flatten().collect();
    while let Some(x) = stack.pop() {
        stack.extend(x["children"].as_array().into_iter().flatten());
        all.push(x);
    }
    all.reverse();
    let mut disks = Vec::new();
    for d in all.iter().copied() {
        let device = str_field(d, "path").unwrap_or_default();
        let kind = str_field(d, "type").unwrap_or_default();
        let wanted = kind == "disk" || (with_loops && kind == "loop");
        if !wanted || device.starts_with("/dev/zram") || device.starts_with("/dev/ram") {
            continue;
        }
        let children: Vec<&serde_json::Value> = all
            .iter()
            .copied()
            .filter(|c| {
                str_field(c, "type").as_deref() == Some("part")
                    && str_field(c, "path").is_some_and(|p| is_partition_of(&p, &device))
            })
            .collect();
        let pick =
            |k: &str| str_field(d, k).or_else(|| children.iter().find_map(|c| str_field(c, k)));
        let mut mountpoints: Vec<String> = std::iter::once(d)
            .chain(children.iter().copied())
            .filter_map(|x| str_field(x, "mountpoint"))
            .collect();
        mountpoints.dedup();
        let size = match &d["size"] {
            serde_json::Value::Number(n) => n.as_u64().unwrap_or(0),
            serde_json::Value::String(s) => s.parse().unwrap_or(0),
            _ => 0,
        };
        let removable = match &d["rm"] {
            serde_json::Value::Bool(b) => *b,
            serde_json::Value::String(s) => s == "1",
            serde_json::Value::Number(n) => n.as_u64() == Some(1),
            _ => false,
        };
        disks.push(BlockDevice {
            device,
            model: str_field(d, "model").unwrap_or_default(),
            serial: str_field(d, "serial").unwrap_or_default(),
            size_bytes: size,
            filesystem: pick("fstype"),
            label: pick("label"),
            mountpoints,
            removable,
            partitions: children.len(),
        });
    }
    Ok(disks)
}

/// The machine's whole disks (and loop devices when `with_loops`).
pub fn list(with_loops: bool) -> Result<Vec<BlockDevice>, DiskError> {
    let out = run(
        "lsblk",
        &[
            "--json",
            "--bytes",
            "--output",
            "PATH,MODEL,SERIAL,SIZE,FSTYPE,LABEL,MOUNTPOINT,TYPE,RM",
        ],
    )?;
    parse_lsblk(out.as_bytes(), with_loops)
}

/// Whether `path` names a partition of `device` (`/dev/sda2` of `/dev/sda`, `/dev/loop0p1` of
/// `/dev/loop0`, but not `/dev/sdaa` or `/dev/loop01`).
pub fn is_partition_of(path: &str, device: &str) -> bool {
    let Some(rest) = path.strip_prefix(device) else {
        return false;
    };
    let digits = if device.ends_with(|c: char| c.is_ascii_digit()) {
        match rest.strip_prefix('p') {
            Some(d) => d,
            None => return false,
        }
    } else {
        rest
    };
    !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
}

/// The path of partition `n` of `device` (`/dev/sda` → `/dev/sda1`, `/dev/loop0` →
/// `/dev/loop0p1`, `/dev/mmcblk0` → `/dev/mmcblk0p1`).
pub fn partition_path(device: &str, n: u32) -> String {
    if device.ends_with(|c: char| c.is_ascii_digit()) {
        format!("{device}p{n}")
    } else {
        format!("{device}{n}")
    }
}

/// What signatures `wipefs` finds on `device` (partition tables, file systems), if any.
fn signatures(device: &str) -> Result<Vec<String>, DiskError> {
    let out = run("wipefs", &["--no-act", "--json", device])?;
    if out.trim().is_empty() {
        return Ok(Vec::new());
    }
    let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| DiskError::Tool {
        program: "wipefs".into(),
        message: e.to_string(),
    })?;
    Ok(v["signatures"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| str_field(s, "type"))
        .collect())
}

/// What `prepare` needs to know besides the device.
#[derive(Clone, Debug)]
pub struct Prepare<'a> {
    pub confirm: &'a str,
    pub wipe: bool,
    /// Where to mount the new file system (the data folder).
    pub mount_at: &'a Path,
    /// Accept loop devices (tests on image files).
    pub allow_loop: bool,
}

/// Make `device` the data disk. See the module comment for the refusals.
pub fn prepare(device: &str, p: &Prepare<'_>) -> Result<String, DiskError> {
    let disks = list(p.allow_loop)?;
    let disk = disks
        .iter()
        .find(|d| d.device == device)
        .ok_or_else(|| DiskError::NoSuchDisk(device.to_string()))?;
    if let Some(m) = disk.mountpoints.iter().find(|m| m.as_str() != "[SWAP]") {
        if m == "/" || m == "/boot" || m == "/usr" {
            return Err(DiskError::SystemDisk(device.to_string()));
        }
        return Err(DiskError::Mounted(device.to_string(), m.clone()));
    }
    if disk.mountpoints.iter().any(|m| m == "[SWAP]") {
        return Err(DiskError::Mounted(device.to_string(), "swap".into()));
    }
    let (expected, what) = disk.confirmation();
    if p.confirm.trim() != expected {
        return Err(DiskError::NotConfirmed {
            device: device.to_string(),
            expected,
            what,
        });
    }
    let found = signatures(device)?;
    if !found.is_empty() {
        if !p.wipe {
            return Err(DiskError::NotEmpty {
                device: device.to_string(),
                found: found.join(", "),
            });
        }
        run("wipefs", &["--all", device])?;
    }
    // One GPT partition over the whole disk, Linux file system type, named like the label.
    let script =
        format!("label: gpt\ntype=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=\"{DATA_LABEL}\"\n");
    let sfdisk = which("sfdisk").ok_or(DiskError::Missing("sfdisk"))?;
    let mut child = Command::new(sfdisk)
        .args(["--quiet", "--wipe", "always", device])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().ok_or(DiskError::Missing("sfdisk"))?;
        stdin.write_all(script.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(DiskError::Tool {
            program: format!("sfdisk {device}"),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let part = partition_path(device, 1);
    // Tell the kernel about the new table (sfdisk asks too, but not every device listens),
    // then give udev a moment to make the node: bounded, 5 s at most.
    let _ = run("partx", &["--update", device]);
    let mut tries = 0;
    while !Path::new(&part).exists() {
        tries += 1;
        if tries > 50 {
            return Err(DiskError::NoPartition(part));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // No reserved blocks: the disk holds only the seeder's data; the daemon keeps its own
    // margin (keep_free_percent).
    run(
        "mkfs.ext4",
        &["-F", "-q", "-L", DATA_LABEL, "-m", "0", &part],
    )?;
    std::fs::create_dir_all(p.mount_at)?;
    let target = p.mount_at.to_string_lossy().to_string();
    run("mount", &["-o", "noatime", &part, &target])?;
    tracing::info!(%device, %part, mount = %target, "data disk prepared");
    Ok(part)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsblk_output_gives_whole_disks_with_their_partitions_contents() {
        let json = br#"{"blockdevices": [
          {"path":"/dev/sda","model":"WDC WD5000","serial":"WD-123","size":500107862016,"fstype":null,"label":null,"mountpoint":null,"type":"disk","rm":false,
           "children":[{"path":"/dev/sda1","model":null,"serial":null,"size":500106813440,"fstype":"ext4","label":"SEEDER-DATA","mountpoint":"/var/lib/seeder","type":"part","rm":false}]},
          {"path":"/dev/mmcblk0","model":null,"serial":"0x1234","size":"15931539456","fstype":null,"label":null,"mountpoint":null,"type":"disk","rm":"1"},
          {"path":"/dev/zram0","model":null,"serial":null,"size":268435456,"fstype":null,"label":null,"mountpoint":"[SWAP]","type":"disk","rm":false},
          {"path":"/dev/loop0","size":1,"type":"loop","rm":false}
        ]}"#;
        let d = parse_lsblk(json, false).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].device, "/dev/sda");
        assert_eq!(d[0].label.as_deref(), Some("SEEDER-DATA"));
        assert_eq!(d[0].mountpoints, vec!["/var/lib/seeder".to_string()]);
        assert_eq!(d[0].size_bytes, 500_107_862_016);
        assert_eq!(d[0].confirmation().0, "WD-123");
        assert!(!d[0].removable);
        assert_eq!(d[1].size_bytes, 15_931_539_456);
        assert!(d[1].removable);
        assert_eq!(parse_lsblk(json, true).unwrap().len(), 3);
        assert!(parse_lsblk(b"not json", false).is_err());
    }

    #[test]
    fn partitions_beside_their_disk_are_matched_by_name() {
        let json = br#"{"blockdevices": [
          {"path":"/dev/loop0","size":100663296,"type":"loop","rm":false,"mountpoint":null},
          {"path":"/dev/loop0p1","size":98566144,"type":"part","rm":false,"mountpoint":"/mnt","fstype":"ext4","label":"SEEDER-DATA"},
          {"path":"/dev/loop01","size":1,"type":"loop","rm":false,"mountpoint":"/elsewhere"}
        ]}"#;
        let d = parse_lsblk(json, true).unwrap();
        assert_eq!(d[0].mountpoints, vec!["/mnt".to_string()]);
        assert_eq!(d[0].label.as_deref(), Some("SEEDER-DATA"));
        assert!(is_partition_of("/dev/sda2", "/dev/sda"));
        assert!(!is_partition_of("/dev/sdaa", "/dev/sda"));
        assert!(!is_partition_of("/dev/loop01", "/dev/loop0"));
        assert!(is_partition_of("/dev/nvme0n1p3", "/dev/nvme0n1"));
    }

    #[test]
    fn a_disk_with_partitions_or_a_mounted_root_is_never_called_empty() {
        // As lsblk printed it in a VM: no FSTYPE for the root's partition, nor for a disk
        // mounted whole.
        let json = br#"{"blockdevices": [
          {"path":"/dev/vda","size":270582939648,"fstype":null,"label":null,"mountpoint":null,"type":"disk","rm":false,
           "children":[{"path":"/dev/vda1","size":270581890560,"fstype":null,"label":null,"mountpoint":"/","type":"part","rm":false}]},
          {"path":"/dev/vdb","size":1073741824,"fstype":null,"label":null,"mountpoint":"/srv","type":"disk","rm":false},
          {"path":"/dev/vdc","size":1073741824,"fstype":null,"label":null,"mountpoint":null,"type":"disk","rm":false}
        ]}"#;
        let disks = parse_lsblk(json, false).unwrap();
        let contents: Vec<String> = disks.iter().map(BlockDevice::contents).collect();
        assert_eq!(contents, ["1 partition", "in use", "empty"]);
    }

    #[test]
    fn partitions_are_named_the_kernels_way() {
        assert_eq!(partition_path("/dev/sda", 1), "/dev/sda1");
        assert_eq!(partition_path("/dev/loop3", 1), "/dev/loop3p1");
        assert_eq!(partition_path("/dev/mmcblk0", 2), "/dev/mmcblk0p2");
    }
}
