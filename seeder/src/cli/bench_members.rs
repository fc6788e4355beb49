//! `seeder bench members`: the cost of a governed space's membership log at its bound. A
//! seeder checks every record's signatures when it starts and computes the membership again
//! whenever a record arrives; a member does both on every command. Not a test: it prints
//! `name value unit` lines.

use std::time::Instant;

use anyhow::Result;
use clap::Args;
use rand::SeedableRng;

use crate::space::members::{self, Change, InviteKeys, MemberRole, Membership, Record};
use crate::space::SpaceSecret;

#[derive(Debug, Args)]
pub struct MembersArgs {
    /// Devices invited and joined (each an Invite and a Join record).
    #[arg(long, default_value_t = 100)]
    devices: usize,
    /// Records in all: after the devices, the owner changes roles back and forth until the log
    /// holds this many (at most the bound, 4,096).
    #[arg(long, default_value_t = members::MAX_RECORDS)]
    records: usize,
}

pub fn run(args: MembersArgs) -> Result<()> {
    let total = args.records.min(members::MAX_RECORDS);
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let secret = SpaceSecret::generate(&mut rng);
    let address = secret.address();
    let owner = ed25519_dalek::SigningKey::generate(&mut rng);
    let key0 = secret.content_key();
    let genesis = members::genesis(&secret, members::device_of(&owner)).verify(&address)?;
    let key_id = genesis.id().key_id();
    let mut records = vec![genesis];
    let mut heads = vec![records[0].id()];
    let push = |records: &mut Vec<_>, heads: &mut Vec<_>, r: Record| -> Result<()> {
        let r = r.verify(&address)?;
        *heads = vec![r.id()];
        records.push(r);
        Ok(())
    };
    let mut devices = Vec::new();
    for n in 0..args.devices {
        if records.len() + 2 > total {
            break;
        }
        let secret: [u8; 32] = rand::Rng::gen(&mut rng);
        let ik = InviteKeys::from_secret(&secret);
        let invite = Record::sign(
            &owner,
            address,
            heads.clone(),
            Change::Invite {
                invite: ik.public(),
                invite_box: ik.box_public(),
                role: MemberRole::Writer,
                key: key_id,
                sealed: members::box_key(&mut rng, &ik.box_public(), &key0).0,
                label: members::seal_label(
                    &mut rng,
                    &address,
                    &ik.public(),
                    &key0,
                    &format!("device {n}"),
                ),
            },
        );
        push(&mut records, &mut heads, invite)?;
        let device = ed25519_dalek::SigningKey::generate(&mut rng);
        let dev = members::device_of(&device);
        let device_signature = ed25519_dalek::Signer::sign(
            &device,
            &members::join_bytes(&address, &ik.public(), &dev),
        )
        .to_bytes();
        let join = Record::sign(
            &ik.signing,
            address,
            heads.clone(),
            Change::Join {
                invite: ik.public(),
                device: dev,
                device_signature,
            },
        );
        push(&mut records, &mut heads, join)?;
        devices.push(device);
    }
    let mut n = 0u64;
    while records.len() < total && !devices.is_empty() {
        let d = &devices[n as usize % devices.len()];
        let role = if n.is_multiple_of(2) {
            MemberRole::Owner
        } else {
            MemberRole::Writer
        };
        let change = Change::SetRole {
            device: crate::feed::FeedKey::from(d),
            role,
            at: 0,
        };
        let r = Record::sign(&owner, address, heads.clone(), change);
        push(&mut records, &mut heads, r)?;
        n += 1;
    }
    let bytes: usize = records
        .iter()
        .map(|r| postcard::to_allocvec(r.record()).map_or(0, |b| b.len()))
        .sum();
    let plain: Vec<Record> = records.iter().map(|r| r.record().clone()).collect();

    let t = Instant::now();
    let verified = plain
        .into_iter()
        .map(|r| r.verify(&address))
        .collect::<Result<Vec<_>, _>>()?;
    let verify_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let m = Membership::compute(&verified);
    let compute_ms = t.elapsed().as_secs_f64() * 1e3;
    anyhow::ensure!(
        m.active().count() == devices.len() + 1 && m.conflicts.is_empty(),
        "the log computes to {} devices and {} conflicts",
        m.active().count(),
        m.conflicts.len()
    );
    let t = Instant::now();
    if let Some(d) = &devices.first() {
        let boxing = members::device_box(d);
        let holder = crate::feed::FeedKey::from(*d).0;
        let _ = m.unlock(
            &verified,
            &address,
            &[(&holder, &boxing)],
            Default::default(),
        );
    }
    let unlock_ms = t.elapsed().as_secs_f64() * 1e3;
    println!("members_records {} count", verified.len());
    println!("members_devices {} count", m.active().count());
    println!("members_log_size {:.1} KiB", bytes as f64 / 1024.0);
    println!("members_verify_all {verify_ms:.1} ms");
    println!("members_compute {compute_ms:.1} ms");
    println!("members_unlock {unlock_ms:.2} ms");
    println!("peak_rss {:.1} MiB", super::bench::peak_rss_mib()?);
    Ok(())
}
