//! `seeder disk list | prepare`: the data disk, from the device's console (as root).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use super::Failure;
use crate::daemon::disk::{self, DiskError, Prepare};

#[derive(Debug, Args)]
pub struct DiskArgs {
    #[command(subcommand)]
    cmd: DiskCmd,
}

#[derive(Debug, Subcommand)]
enum DiskCmd {
    /// Block devices with model, serial, size, file system and mount points.
    List {
        /// As JSON.
        #[arg(long)]
        json: bool,
        /// Include loop devices (disk images).
        #[arg(long, hide = true)]
        loops: bool,
    },
    /// Erase DEVICE and make it the data disk: GPT, one ext4 partition labelled
    /// SEEDER-DATA, mounted at the data folder.
    Prepare {
        /// The whole disk, like /dev/sda.
        device: String,
        /// The disk's serial number as `seeder disk list` shows it (its name if it has none).
        #[arg(long, value_name = "SERIAL")]
        confirm: String,
        /// Erase a disk that already has a partition table or file system.
        #[arg(long)]
        wipe: bool,
        /// Where to mount it.
        #[arg(long, default_value = "/var/lib/seeder", value_name = "DIR")]
        mount_at: PathBuf,
        /// Accept loop devices (disk images, for tests).
        #[arg(long, hide = true)]
        allow_loop: bool,
    },
}

fn failure(e: DiskError) -> anyhow::Error {
    let kind = match e {
        DiskError::NoSuchDisk(_) => Failure::NotFound,
        DiskError::Mounted(..)
        | DiskError::SystemDisk(_)
        | DiskError::NotConfirmed { .. }
        | DiskError::NotEmpty { .. } => Failure::BadInput,
        _ => Failure::Internal,
    };
    anyhow::Error::new(e).context(kind)
}

pub fn run(args: DiskArgs) -> Result<()> {
    match args.cmd {
        DiskCmd::List { json, loops } => {
            let disks = disk::list(loops).map_err(failure)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&disks)?);
                return Ok(());
            }
            for d in disks {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    d.device,
                    super::daemon::human(d.size_bytes),
                    if d.model.is_empty() { "-" } else { &d.model },
                    if d.serial.is_empty() { "-" } else { &d.serial },
                    d.contents(),
                    if d.mountpoints.is_empty() {
                        "not mounted".to_string()
                    } else {
                        d.mountpoints.join(",")
                    },
                );
            }
            Ok(())
        }
        DiskCmd::Prepare {
            device,
            confirm,
            wipe,
            mount_at,
            allow_loop,
        } => {
            // The new file system's root gets the owner the mount point had (the service
            // user, on the appliance).
            use std::os::unix::fs::MetadataExt;
            let owner = std::fs::metadata(&mount_at)
                .ok()
                .map(|m| (m.uid(), m.gid()));
            let part = disk::prepare(
                &device,
                &Prepare {
                    confirm: &confirm,
                    wipe,
                    mount_at: &mount_at,
                    allow_loop,
                },
            )
            .map_err(failure)?;
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(&mount_at, Some(uid), Some(gid))
                    .with_context(|| format!("cannot hand {} to its owner", mount_at.display()))?;
            }
            println!(
                "{device} is the data disk: {part} ({}) mounted at {}",
                disk::DATA_LABEL,
                mount_at.display()
            );
            Ok(())
        }
    }
}
