//! The test vectors of `seeder/FORMATS.md`, computed here from fixed inputs so that they can't
//! drift from the code. The block between `<!-- vectors:begin -->` and `<!-- vectors:end -->`
//! in that file must be exactly what [`render`] makes of [`sections`]; with
//! `SEEDER_WRITE_VECTORS=1` the test rewrites the block instead of failing.
//!
//! Where FORMATS.md describes a construction that the library keeps private (the capability
//! key, the cipher's associated data, the code checksum and base32, the postcard layout of
//! membership records, sealed boxes, key wraps and labels), the generator builds it from the
//! description with the standard primitives and checks it against what the library produces,
//! so the prose is tested too, not only the bytes.
//!
//! To add vectors: add a function returning a [`Section`] and list it in [`sections`].

// A panic is how a test fails.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use bytes::Bytes;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use ed25519_dalek::{Signer, SigningKey};
use rand::rngs::StdRng;
use rand::{CryptoRng, RngCore, SeedableRng};

use seeder::feed::{
    empty_root, leaf_hash, node_hash, write_batch, ConsistencyProof, FeedKey, Frontier, Hash,
    InclusionProof, NodeId, SignedHead, VerifiedHead, HEAD_DOMAIN, MAX_ENTRY_LEN,
};
use seeder::fs::{
    ContentRef, FileMeta, Mtime, Path, Record, VectorClock, CHUNK_SIZE, FORMAT_VERSION,
    MAX_CLOCK_FEEDS, MAX_COMPONENT_LEN, MAX_DEVICE_NAME_LEN, MAX_PATH_LEN, MODE_MASK,
};
use seeder::net::{reach::PeerCode, tunnel, NodeIdentity, CAPABILITY_EXPORTER_LABEL};
use seeder::space::members::{
    self, Admission, Body, Change, ContentKey, InviteKeys, KeyId, MemberRole, Membership,
    VerifiedRecord, CTX_DEVICE_BOX, CTX_INVITE_BOX, CTX_INVITE_SIGNING, JOIN_DOMAIN, LABEL_DOMAIN,
    RECORD_DOMAIN, WRAP_DOMAIN,
};
use seeder::space::{
    Address, Capability, ContentCipher, DeviceProof, InviteCode, MembershipCert, Role, SeedCode,
    SpaceSecret, CAPABILITY_DOMAIN, CERT_DOMAIN, CTX_CAPABILITY, CTX_CONTENT, CTX_DISCOVERY,
    CTX_SIGNING, ENTRY_AAD_DOMAIN, ENTRY_AAD_DOMAIN_V2,
};
use seeder::store::{Store, StoreConfig};
use seeder::wire::{Denial, FeedOffer, Message, Refusal};

const BEGIN: &str = "<!-- vectors:begin -->";
const END: &str = "<!-- vectors:end -->";
const WRITE_ENV: &str = "SEEDER_WRITE_VECTORS";

/// One heading of the generated block: what its inputs are, then `name: value` lines.
struct Section {
    title: &'static str,
    /// A paragraph stating the inputs and anything needed to read the lines.
    about: String,
    lines: Vec<(String, String)>,
}

impl Section {
    fn new(title: &'static str, about: impl Into<String>) -> Section {
        Section {
            title,
            about: about.into(),
            lines: Vec::new(),
        }
    }

    /// A value in lowercase hex.
    fn hex(&mut self, name: impl Into<String>, bytes: impl AsRef<[u8]>) {
        self.lines.push((name.into(), hex::encode(bytes)));
    }

    /// A value as it is (a number in decimal, a text in double quotes, a code).
    fn text(&mut self, name: impl Into<String>, value: impl std::fmt::Display) {
        self.lines.push((name.into(), value.to_string()));
    }
}

/// Every section, in the order FORMATS.md shows them. New vectors go here.
fn sections() -> Vec<Section> {
    let w = World::new();
    let g = Gov::new(&w);
    vec![
        inputs(),
        strings_and_limits(),
        space_keys(&w),
        codes(&w),
        membership_certificate(&w),
        entry_cipher(&w),
        feed(&w),
        capability(&w),
        wire_frames(&w),
        file_records(&w),
        bundle(&w),
        device_invite(&w, &g),
        membership_records(&w, &g),
        membership(&w, &g),
        governed_entry(&w, &g),
        governed_bundle(&w, &g),
    ]
}

/// The Markdown between the markers.
fn render(sections: &[Section]) -> String {
    let mut out = String::from("\n");
    for s in sections {
        out.push_str(&format!("### {}\n\n{}\n", s.title, wrap(&s.about)));
        if !s.lines.is_empty() {
            out.push_str("\n```text\n");
            for (name, value) in &s.lines {
                out.push_str(&format!("{name}: {value}\n"));
            }
            out.push_str("```\n");
        }
        out.push('\n');
    }
    out
}

/// `text` in lines of at most [`WIDTH`] characters (a longer word gets a line of its own).
fn wrap(text: &str) -> String {
    const WIDTH: usize = 95;
    let mut out = String::new();
    let mut line = 0;
    for word in text.split_whitespace() {
        let len = word.chars().count();
        if line > 0 && line + 1 + len > WIDTH {
            out.push('\n');
            line = 0;
        } else if line > 0 {
            out.push(' ');
            line += 1;
        }
        out.push_str(word);
        line += len;
    }
    out
}

#[test]
fn formats_md_holds_the_current_test_vectors() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("FORMATS.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let (before, rest) = doc
        .split_once(BEGIN)
        .unwrap_or_else(|| panic!("{} has no {BEGIN} line", path.display()));
    let (old, after) = rest
        .split_once(END)
        .unwrap_or_else(|| panic!("{} has no {END} line", path.display()));
    let new = render(&sections());
    if old == new {
        return;
    }
    if std::env::var_os(WRITE_ENV).is_some() {
        std::fs::write(&path, format!("{before}{BEGIN}{new}{END}{after}")).unwrap();
        eprintln!("rewrote the test vectors in {}", path.display());
        return;
    }
    let first = old
        .lines()
        .zip(new.lines())
        .position(|(a, b)| a != b)
        .unwrap_or(old.lines().count().min(new.lines().count()));
    panic!(
        "the test vectors in {} differ from the generated ones (first at line {} of the block:\n  \
         in the file: {:?}\n  generated:   {:?})\nif the change of format is intended, refresh \
         them with\n  {WRITE_ENV}=1 cargo test -p seeder --test formats\nand describe the change \
         in the prose too",
        path.display(),
        first + 1,
        old.lines().nth(first).unwrap_or("(end)"),
        new.lines().nth(first).unwrap_or("(end)"),
    );
}

#[test]
fn the_generator_is_deterministic() {
    assert_eq!(render(&sections()), render(&sections()));
}

/// `start, start+1, …`: 32 bytes.
fn counting(start: u8) -> [u8; 32] {
    std::array::from_fn(|i| start.wrapping_add(i as u8))
}

/// The fixed inputs and everything made from them that several sections show.
struct World {
    secret: SpaceSecret,
    address: Address,
    device: SigningKey,
    feed: FeedKey,
    other: FeedKey,
    node: NodeIdentity,
    exporter: [u8; 32],
    cert: MembershipCert,
    /// Plaintext records of entries 0..5 of the device's feed.
    records: Vec<Record>,
    /// Sealed entries 0..5.
    entries: Vec<Vec<u8>>,
    /// Every perfect node of the 5-entry tree.
    nodes: HashMap<NodeId, Hash>,
    head3: VerifiedHead,
    head5: VerifiedHead,
}

/// Entries of the device's feed.
const ENTRIES: u64 = 5;

/// The nonce entry `seq` is sealed with: 24 bytes, each `0xc0 + seq`.
fn nonce(seq: u64) -> [u8; 24] {
    [0xc0 + seq as u8; 24]
}

fn path(s: &str) -> Path {
    Path::new(s).unwrap()
}

impl World {
    fn new() -> World {
        let secret = SpaceSecret::from_bytes(counting(0x00));
        let address = secret.address();
        let device = SigningKey::from_bytes(&counting(0x20));
        let feed = FeedKey::from(&device);
        let other = FeedKey::from(&SigningKey::from_bytes(&counting(0x40)));
        let node = NodeIdentity::from_secret(counting(0x60));
        let exporter = counting(0x80);
        let cert = MembershipCert::issue(&secret, feed);

        let clock = |own: u64| -> VectorClock { [(feed, own), (other, 2)].into_iter().collect() };
        let meta = FileMeta {
            size: 5,
            mode: 0o644,
            mtime: Mtime::new(1_767_225_600, 500_000_000).unwrap(),
            hash: *blake3::hash(b"hello").as_bytes(),
            content: ContentRef {
                feed,
                first: 1,
                count: 1,
            },
        };
        let records = vec![
            Record::Device {
                name: "laptop".into(),
            },
            Record::Chunk(b"hello".to_vec()),
            Record::Put {
                path: path("docs/hello.txt"),
                meta: meta.clone(),
                clock: clock(3),
            },
            Record::Rename {
                from: path("docs/hello.txt"),
                to: path("hello.txt"),
                meta,
                clock: clock(4),
            },
            Record::Delete {
                path: path("hello.txt"),
                clock: clock(5),
            },
        ];
        assert_eq!(records.len() as u64, ENTRIES);
        let cipher = ContentCipher::new(&secret);
        let entries: Vec<Vec<u8>> = records
            .iter()
            .enumerate()
            .map(|(seq, r)| {
                cipher
                    .seal(&feed, seq as u64, &r.encode(), &nonce(seq as u64))
                    .unwrap()
            })
            .collect();

        let mut frontier = Frontier::new();
        let mut nodes = HashMap::new();
        let mut head3 = None;
        for e in &entries {
            frontier.push(leaf_hash(e), |id, h| {
                nodes.insert(id, h);
            });
            if frontier.len() == 3 {
                head3 = Some(SignedHead::sign(&device, 3, frontier.root()));
            }
        }
        let head5 = SignedHead::sign(&device, 5, frontier.root());
        World {
            secret,
            address,
            device,
            feed,
            other,
            node,
            exporter,
            cert,
            records,
            entries,
            nodes,
            head3: head3.unwrap(),
            head5,
        }
    }

    fn node(&self, id: NodeId) -> Result<Hash, ()> {
        self.nodes.get(&id).copied().ok_or(())
    }

    fn consistency(&self, old: u64, new: u64) -> ConsistencyProof {
        ConsistencyProof::build(old, new, |id| self.node(id)).unwrap()
    }

    fn root(&self, size: u64) -> Hash {
        seeder::feed::root_at(size, |id| self.node(id)).unwrap()
    }
}

/// RFC 9162's MTH, straight from its definition: what FORMATS.md says the root is.
fn mth(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => *blake3::hash(b"").as_bytes(),
        1 => leaves[0],
        n => {
            let k = 1 << (usize::BITS - 1 - (n - 1).leading_zeros());
            node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

/// The fixed inputs every other section starts from.
fn inputs() -> Section {
    let mut s = Section::new(
        "Inputs",
        "Everything below is computed from these. `space_secret` is the space's secret; \
         `feed_seed` the ed25519 seed of the device's feed key; `other_feed_seed` that of a \
         second device, whose feed key only appears in vector clocks; `node_seed` that of a \
         node's identity; `exporter_secret` what a connection's TLS exporter gave both ends; \
         `nonce_N` the nonce entry N of the device's feed is sealed with. For the governed \
         space: `invite_secret` is the secret of a device invite, `epoch_1_key` the content \
         key of its second epoch, `governed_nonce` the nonce of its entry, and `rng_seed` (in \
         decimal) seeds the RNG the sealed boxes and wraps drew from (Rust's \
         `rand::rngs::StdRng::seed_from_u64`; every draw is listed where it is used).",
    );
    s.hex("space_secret", counting(0x00));
    s.hex("feed_seed", counting(0x20));
    s.hex("other_feed_seed", counting(0x40));
    s.hex("node_seed", counting(0x60));
    s.hex("exporter_secret", counting(0x80));
    for seq in 0..ENTRIES {
        s.hex(format!("nonce_{seq}"), nonce(seq));
    }
    s.hex("invite_secret", counting(0xa0));
    s.hex("epoch_1_key", counting(0xe0));
    s.hex("governed_nonce", GOVERNED_NONCE);
    s.text("rng_seed", RNG_SEED);
    s
}

fn strings_and_limits() -> Section {
    let mut s = Section::new(
        "Strings and limits",
        "No inputs. Texts are in double quotes (their bytes are the UTF-8 of what is between \
         them), numbers in decimal, the domain tags in hex because they end in a NUL byte.",
    );
    let quoted = |t: &str| format!("{t:?}");
    s.text("ctx_signing", quoted(CTX_SIGNING));
    s.text("ctx_content", quoted(CTX_CONTENT));
    s.text("ctx_discovery", quoted(CTX_DISCOVERY));
    s.text("ctx_capability", quoted(CTX_CAPABILITY));
    s.text("ctx_code_checksum", quoted(CODE_CHECKSUM_CTX));
    s.hex("head_domain", HEAD_DOMAIN);
    s.hex("cert_domain", CERT_DOMAIN);
    s.hex("entry_aad_domain", ENTRY_AAD_DOMAIN);
    s.hex("capability_domain", CAPABILITY_DOMAIN);
    s.text(
        "capability_exporter_label",
        quoted(std::str::from_utf8(CAPABILITY_EXPORTER_LABEL).unwrap()),
    );
    s.text(
        "alpn",
        quoted(std::str::from_utf8(seeder::wire::ALPN).unwrap()),
    );
    s.text("protocol_version", seeder::wire::PROTOCOL_VERSION);
    s.text("max_entry_len", MAX_ENTRY_LEN);
    s.text("wire_max_frame_len", seeder::wire::MAX_FRAME_LEN);
    s.text(
        "wire_max_entries_per_data",
        seeder::wire::MAX_ENTRIES_PER_DATA,
    );
    s.text("wire_max_feeds_per_list", seeder::wire::MAX_FEEDS_PER_LIST);
    s.text(
        "wire_max_spaces_per_connection",
        seeder::wire::MAX_SPACES_PER_CONNECTION,
    );
    s.text("wire_max_text_len", seeder::wire::MAX_TEXT_LEN);
    s.text("wire_max_proof_hashes", seeder::wire::MAX_PROOF_HASHES);
    s.text("tunnel_header_len", tunnel::HEADER_LEN);
    s.text("tunnel_mtu", tunnel::TUNNEL_MTU);
    s.text(
        "mdns_service_type",
        quoted(seeder::net::discovery::SERVICE_TYPE),
    );
    s.text("peer_code_prefix", quoted(seeder::net::reach::CODE_PREFIX));
    s.text("peer_code_max_addrs", seeder::net::reach::MAX_CODE_ADDRS);
    s.text("peer_code_max_len", seeder::net::reach::MAX_CODE_LEN);
    s.text("record_format_version", FORMAT_VERSION);
    s.text("chunk_size", CHUNK_SIZE);
    s.text("mode_mask_octal", format!("{MODE_MASK:o}"));
    s.text("max_device_name_len", MAX_DEVICE_NAME_LEN);
    s.text("max_clock_feeds", MAX_CLOCK_FEEDS);
    s.text("max_path_len", MAX_PATH_LEN);
    s.text("max_component_len", MAX_COMPONENT_LEN);
    s.text("bundle_max_frame_len", seeder::fs::bundle::MAX_FRAME_LEN);
    s.text("bundle_max_feeds", seeder::fs::bundle::MAX_BUNDLE_FEEDS);
    s.text("ctx_device_box", quoted(CTX_DEVICE_BOX));
    s.text("ctx_invite_signing", quoted(CTX_INVITE_SIGNING));
    s.text("ctx_invite_box", quoted(CTX_INVITE_BOX));
    s.hex("record_domain", RECORD_DOMAIN);
    s.hex("join_domain", JOIN_DOMAIN);
    s.hex("wrap_domain", WRAP_DOMAIN);
    s.hex("label_domain", LABEL_DOMAIN);
    s.hex("entry_aad_domain_v2", ENTRY_AAD_DOMAIN_V2);
    s.text("max_records", members::MAX_RECORDS);
    s.text("max_parents", members::MAX_PARENTS);
    s.text("max_boxes", members::MAX_BOXES);
    s.text("max_label", members::MAX_LABEL);
    s.text("sealed_key_len", members::SEALED_KEY_LEN);
    s
}

fn space_keys(w: &World) -> Section {
    let mut s = Section::new(
        "Space keys",
        "From `space_secret`. `signing_seed` is the ed25519 secret key (RFC 8032 seed) of the \
         space signing key, `address` its public key.",
    );
    let secret = w.secret.as_bytes();
    let signing_seed = blake3::derive_key(CTX_SIGNING, secret);
    assert_eq!(signing_seed, w.secret.signing_key().to_bytes());
    assert_eq!(
        SigningKey::from_bytes(&signing_seed)
            .verifying_key()
            .to_bytes(),
        w.address.0
    );
    let content = blake3::derive_key(CTX_CONTENT, secret);
    assert_eq!(content, *w.secret.content_key());
    let discovery = blake3::derive_key(CTX_DISCOVERY, &w.address.0);
    assert_eq!(discovery, w.address.discovery_key().0);
    s.hex("signing_seed", signing_seed);
    s.hex("address", w.address.0);
    s.hex("content_key", content);
    s.hex("discovery_key", discovery);
    s.hex("capability_key", capability_key(&w.address));
    s
}

/// `derive_key(CTX_CAPABILITY, address)`; the library keeps it private, the capability MACs
/// check it.
fn capability_key(address: &Address) -> [u8; 32] {
    blake3::derive_key(CTX_CAPABILITY, &address.0)
}

const CODE_CHECKSUM_CTX: &str = "seeder 2026-11 code checksum v1";
const CROCKFORD: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// A code made as FORMATS.md says: returns (checksum input, checksum, payload, text).
fn code(prefix: &str, kind: u8, version: u8, key: &[u8]) -> (Vec<u8>, [u8; 4], Vec<u8>, String) {
    let mut input = vec![kind, version];
    input.extend_from_slice(key);
    let d = blake3::derive_key(CODE_CHECKSUM_CTX, &input);
    let checksum = [d[0], d[1], d[2], d[3]];
    let mut payload = vec![version];
    payload.extend_from_slice(key);
    payload.extend_from_slice(&checksum);
    // Most significant bit first, then zero bits up to a whole character: 296 bits and four
    // zero bits make 60 characters, 552 bits and three zero bits 111.
    let mut bits: Vec<u8> = payload
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1))
        .collect();
    bits.resize(bits.len().div_ceil(5) * 5, 0);
    let chars: Vec<u8> = bits
        .chunks(5)
        .map(|c| CROCKFORD[c.iter().fold(0, |acc, b| (acc << 1) | *b as usize)])
        .collect();
    let mut text = prefix.to_string();
    for group in chars.chunks(5) {
        text.push('-');
        text.push_str(std::str::from_utf8(group).unwrap());
    }
    (input, checksum, payload, text)
}

fn codes(w: &World) -> Section {
    let mut s = Section::new(
        "Seed and invite codes",
        "From `space_secret` and `address`. `*_checksum_input` is \
         the input of `derive_key(ctx_code_checksum, ·)`, `*_payload` the 37 bytes the text \
         spells. `seed_code_typed` is the seed code as a person might type it (upper case, \
         no dashes, spaces, `O` for `0`, `l` and `I` for `1`); it reads as the same code.",
    );
    let invite = InviteCode::new(&w.secret).to_string();
    let seed = SeedCode::new(w.address).to_string();
    let (i_input, i_sum, i_payload, i_text) = code("invite", b'i', 1, w.secret.as_bytes());
    let (s_input, s_sum, s_payload, s_text) = code("seed", b's', 1, &w.address.0);
    assert_eq!(invite, i_text);
    assert_eq!(seed, s_text);
    assert_eq!((seed.len(), invite.len()), (76, 78));
    s.hex("invite_checksum_input", i_input);
    s.hex("invite_checksum", i_sum);
    s.hex("invite_payload", i_payload);
    s.text("invite_code", invite.clone());
    s.hex("seed_checksum_input", s_input);
    s.hex("seed_checksum", s_sum);
    s.hex("seed_payload", s_payload);
    s.text("seed_code", seed.clone());
    let mut typed = String::from("  SEED ");
    for (i, c) in seed["seed-".len()..]
        .chars()
        .filter(|&c| c != '-')
        .enumerate()
    {
        if i > 0 && i % 10 == 0 {
            typed.push(' ');
        }
        typed.push(match c {
            '0' => 'O',
            '1' if i % 2 == 0 => 'l',
            '1' => 'I',
            c => c.to_ascii_uppercase(),
        });
    }
    let read: SeedCode = typed.parse().unwrap();
    assert_eq!(read.address(), w.address);
    s.text("seed_code_typed", format!("{typed:?}"));
    let read: InviteCode = invite.parse().unwrap();
    assert_eq!(read, InviteCode::new(&w.secret));
    s
}

fn membership_certificate(w: &World) -> Section {
    let mut s = Section::new(
        "Membership certificate",
        "From `space_secret` and `feed_seed`: the space's certificate for the device's feed. \
         The signature is by the space signing key.",
    );
    let bytes = MembershipCert::signing_bytes(&w.address, &w.feed);
    let mut expected = CERT_DOMAIN.to_vec();
    expected.extend_from_slice(&w.address.0);
    expected.extend_from_slice(&w.feed.0);
    assert_eq!(bytes, expected);
    let key = ed25519_dalek::VerifyingKey::from_bytes(&w.address.0).unwrap();
    key.verify_strict(
        &bytes,
        &ed25519_dalek::Signature::from_bytes(&w.cert.signature),
    )
    .unwrap();
    assert!(w.cert.clone().verify(&w.address).is_ok());
    s.hex("feed_key", w.feed.0);
    s.hex("cert_signing_bytes", bytes);
    s.hex("cert_signature", w.cert.signature);
    s.hex("cert_postcard", postcard::to_allocvec(&w.cert).unwrap());
    s
}

/// The associated data as FORMATS.md spells it.
fn aad(address: &Address, feed: &FeedKey, seq: u64) -> Vec<u8> {
    let mut out = ENTRY_AAD_DOMAIN.to_vec();
    out.extend_from_slice(&address.0);
    out.extend_from_slice(&feed.0);
    out.extend_from_slice(&seq.to_le_bytes());
    out
}

fn entry_cipher(w: &World) -> Section {
    let mut s = Section::new(
        "Entry cipher",
        "Entry 1 of the device's feed: sealed with `content_key` for `address`, `feed_key` \
         and `seq`, its plaintext is `record_1` of the file records below, its nonce \
         `nonce_1`. Every entry of the feed is sealed the same way.",
    );
    let seq = 1u64;
    let plain = w.records[seq as usize].encode();
    let aad = aad(&w.address, &w.feed, seq);
    let sealed = &w.entries[seq as usize];
    let aead = chacha20poly1305::XChaCha20Poly1305::new((&*w.secret.content_key()).into());
    let n = nonce(seq);
    let ct = aead
        .encrypt(
            (&n).into(),
            Payload {
                msg: &plain,
                aad: &aad,
            },
        )
        .unwrap();
    let mut expected = n.to_vec();
    expected.extend_from_slice(&ct);
    assert_eq!(sealed, &expected);
    let cipher = ContentCipher::new(&w.secret);
    assert_eq!(cipher.open(&w.feed, seq, sealed).unwrap(), plain);
    assert!(cipher.open(&w.feed, seq + 1, sealed).is_err());
    s.text("seq", seq);
    s.hex("plaintext", &plain);
    s.hex("nonce", n);
    s.hex("aad", &aad);
    s.hex("sealed", sealed);
    s
}

fn feed(w: &World) -> Section {
    let mut s = Section::new(
        "Feed",
        "The device's feed: five entries, `entry_0` to `entry_4` (the sealed file records \
         below), with a head signed at length 3 and one at length 5. `node_L_I` is the perfect subtree of 2^L leaves starting at leaf I·2^L. The \
         inclusion proof is of entry 1 in the tree of 3, the consistency proof from 3 to 5; \
         their hashes are listed in order, first to last.",
    );
    let leaves: Vec<Hash> = w.entries.iter().map(|e| leaf_hash(e)).collect();
    for (i, e) in w.entries.iter().enumerate() {
        let mut expected = blake3::Hasher::new();
        expected.update(&[0]).update(e);
        assert_eq!(*expected.finalize().as_bytes(), leaves[i]);
    }
    assert_eq!(w.root(3), mth(&leaves[..3]));
    assert_eq!(w.root(5), mth(&leaves));
    assert_eq!(empty_root(), mth(&[]));
    for (i, e) in w.entries.iter().enumerate() {
        s.hex(format!("entry_{i}"), e);
    }
    for (i, l) in leaves.iter().enumerate() {
        s.hex(format!("leaf_{i}"), l);
    }
    let mut ids: Vec<NodeId> = w.nodes.keys().copied().filter(|id| id.level > 0).collect();
    ids.sort();
    for id in ids {
        s.hex(format!("node_{}_{}", id.level, id.index), w.nodes[&id]);
    }
    s.hex("root_0", empty_root());
    for (head, name) in [(&w.head3, "3"), (&w.head5, "5")] {
        let bytes = SignedHead::signing_bytes(&w.feed, head.length(), head.root());
        let mut expected = HEAD_DOMAIN.to_vec();
        expected.extend_from_slice(&w.feed.0);
        expected.extend_from_slice(&head.length().to_le_bytes());
        expected.extend_from_slice(head.root());
        assert_eq!(bytes, expected);
        assert!(head.signed().clone().verify().is_ok());
        s.hex(format!("root_{name}"), head.root());
        s.hex(format!("head_{name}_signing_bytes"), bytes);
        s.hex(format!("head_{name}_signature"), head.signed().signature);
        s.hex(
            format!("head_{name}_postcard"),
            postcard::to_allocvec(head.signed()).unwrap(),
        );
    }
    let inclusion = InclusionProof::build(1, 3, |id| w.node(id)).unwrap();
    inclusion.verify(&leaves[1], w.head3.root()).unwrap();
    assert_eq!(inclusion.path, vec![leaves[0], leaves[2]]);
    for (i, h) in inclusion.path.iter().enumerate() {
        s.hex(format!("inclusion_1_3_path_{i}"), h);
    }
    let consistency = w.consistency(3, 5);
    consistency.verify(w.head3.root(), w.head5.root()).unwrap();
    for (i, h) in consistency.path.iter().enumerate() {
        s.hex(format!("consistency_3_5_path_{i}"), h);
    }
    s.hex(
        "consistency_3_5_postcard",
        postcard::to_allocvec(&consistency).unwrap(),
    );
    s
}

/// The capability MAC as FORMATS.md spells it.
fn mac(address: &Address, exporter: &[u8], role: u8) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(&capability_key(address));
    h.update(CAPABILITY_DOMAIN).update(&[role]).update(exporter);
    *h.finalize().as_bytes()
}

fn capability(w: &World) -> Section {
    let mut s = Section::new(
        "Capability",
        "From `capability_key` and `exporter_secret`. `capability_dialer` is what the side \
         that dialed sends in `OpenSpace`, `capability_listener` what the side that accepted \
         sends. `device_proof_dialer` is the device's signature (`feed_seed`) proving on \
         the dialing side that it is a device of the space, over `device_proof_input`.",
    );
    let dialer = Capability::new(&w.address, &w.exporter, Role::Dialer);
    let listener = Capability::new(&w.address, &w.exporter, Role::Listener);
    assert_eq!(dialer.0, mac(&w.address, &w.exporter, 0));
    assert_eq!(listener.0, mac(&w.address, &w.exporter, 1));
    let mut input = CAPABILITY_DOMAIN.to_vec();
    input.push(0);
    input.extend_from_slice(&w.exporter);
    s.hex("dialer_mac_input", input);
    s.hex("capability_dialer", dialer.0);
    s.hex("capability_listener", listener.0);
    let proof = DeviceProof::sign(&w.device, &w.address, &w.exporter, Role::Dialer);
    let mut input = b"seeder device proof v1\0".to_vec();
    input.extend_from_slice(&w.address.discovery_key().0);
    input.push(0);
    input.extend_from_slice(&w.exporter);
    assert_eq!(proof.device, w.feed);
    assert_eq!(proof.signature, w.device.sign(&input).to_bytes());
    assert_eq!(
        proof.verify(&w.address, &w.exporter, Role::Dialer).unwrap(),
        w.feed
    );
    assert!(proof
        .verify(&w.address, &w.exporter, Role::Listener)
        .is_err());
    s.hex("device_proof_input", input);
    s.hex("device_proof_dialer", proof.signature);
    s
}

fn wire_frames(w: &World) -> Section {
    let mut s = Section::new(
        "Wire frames",
        "From `node_seed` and everything above. Each `frame_*` is a whole frame (length prefix included) of one message; the space id \
         is 0 throughout, the feed the device's. `Data` carries entries 3 and 4 with the head \
         at 5, no proof, and as `prefix` the root at 3 with the consistency proof from 3 to 5. \
         `tunnel_header_to` asks a relay for a tunnel to the node; `peer_code` is the node's \
         peer code with two addresses.",
    );
    let node_id = w.node.node_id().0;
    let space = 0u32;
    let feed = w.feed;
    let v4: SocketAddr = "203.0.113.1:40112".parse().unwrap();
    let v6: SocketAddr = "[2001:db8::1]:7428".parse().unwrap();
    let messages = [
        (
            "hello",
            Message::Hello {
                version: seeder::wire::PROTOCOL_VERSION,
                node_id,
                features: 0,
            },
        ),
        (
            "open_space",
            Message::OpenSpace {
                space,
                discovery: w.address.discovery_key(),
                capability: Capability::new(&w.address, &w.exporter, Role::Dialer),
            },
        ),
        (
            "feed_list",
            Message::FeedList {
                space,
                feeds: vec![FeedOffer {
                    cert: w.cert.clone(),
                    head: Some(w.head3.signed().clone()),
                    prefix: None,
                    damaged_from: None,
                }],
            },
        ),
        (
            "head",
            Message::Head {
                space,
                head: w.head5.signed().clone(),
            },
        ),
        (
            "want",
            Message::Want {
                space,
                feed,
                from: 3,
            },
        ),
        (
            "data",
            Message::Data {
                space,
                feed,
                start: 3,
                entries: w.entries[3..]
                    .iter()
                    .map(|e| Bytes::from(e.clone()))
                    .collect(),
                head: w.head5.signed().clone(),
                proof: None,
                prefix: Some((w.root(3), w.consistency(3, 5))),
                checkpoint: None,
            },
        ),
        (
            "stored",
            Message::Stored {
                space,
                feed,
                length: 5,
            },
        ),
        (
            "goodbye",
            Message::Goodbye {
                reason: "done".into(),
            },
        ),
        (
            "error",
            Message::Error {
                code: 300,
                message: "busy".into(),
            },
        ),
        (
            "refused",
            Message::Refused {
                space,
                feed,
                reason: Refusal::DiskFull {
                    free: 1 << 20,
                    total: 1 << 30,
                    keep_percent: 5,
                },
            },
        ),
        (
            "fetch",
            Message::Fetch {
                space,
                feed,
                from: 1,
                to: 3,
            },
        ),
        (
            "unavailable",
            Message::Unavailable {
                space,
                feed,
                from: 3,
            },
        ),
        ("introduce", Message::Introduce { node: node_id }),
        (
            "punch",
            Message::Punch {
                node: node_id,
                addr: v6,
                dial: true,
            },
        ),
        ("observed", Message::Observed { addr: v4 }),
        (
            "members_ack",
            Message::Members {
                space,
                records: Vec::new(),
            },
        ),
        (
            "device",
            Message::Device {
                space,
                proof: DeviceProof::sign(&w.device, &w.address, &w.exporter, Role::Dialer),
                invite: None,
            },
        ),
        (
            "denied",
            Message::Denied {
                space,
                reason: Denial::Removed,
            },
        ),
    ];
    s.hex("node_id", node_id);
    for (name, msg) in &messages {
        let frame = msg.encode().unwrap();
        let chunks: Vec<u8> = msg.encode_chunks().unwrap().concat();
        assert_eq!(frame, chunks, "{name}");
        assert_eq!(
            u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize,
            frame.len() - 4
        );
        assert_eq!(&Message::decode_body(&frame[4..]).unwrap(), msg, "{name}");
        s.hex(format!("frame_{name}"), frame);
    }
    // The layout of the smallest one, spelled out.
    let mut hello = vec![35, 0, 0, 0, 0, 1];
    hello.extend_from_slice(&node_id);
    hello.push(0);
    assert_eq!(messages[0].1.encode().unwrap(), hello);
    s.hex(
        "tunnel_header_to",
        tunnel::Header::To(w.node.node_id()).encode(),
    );
    let code = PeerCode {
        node: w.node.node_id(),
        addrs: vec!["192.0.2.10:7428".parse().unwrap(), v6],
    };
    assert_eq!(code.to_string().parse::<PeerCode>().unwrap(), code);
    s.text("peer_code", code);
    s
}

fn file_records(w: &World) -> Section {
    let mut s = Section::new(
        "File records",
        "The clocks name the device's feed and the second device's, `other_feed_key` (from \
         `other_feed_seed`), with length 2. `record_N` is the plaintext of entry N of the feed: \
         the device's name, one chunk, the put of `docs/hello.txt` (5 bytes, mode 644 octal, \
         mtime 1767225600.5 s, content entry 1), its rename to `hello.txt`, the delete of \
         `hello.txt`.",
    );
    s.hex("other_feed_key", w.other.0);
    for (i, r) in w.records.iter().enumerate() {
        let bytes = r.encode();
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(&Record::decode(&bytes).unwrap(), r);
        s.hex(format!("record_{i}"), bytes);
    }
    s
}

fn bundle(w: &World) -> Section {
    let mut s = Section::new(
        "Bundle",
        "A home holding the first three entries of the device's feed, with its head at 3 and \
         its certificate, exported as a bundle. The file is `bundle_magic`, the four \
         frames in order (each with its length prefix) and `bundle_trailer`.",
    );
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store"), &StoreConfig::default()).unwrap();
    store.create_feed(w.feed).unwrap();
    let mut frontier = Frontier::new();
    let batch = write_batch(&w.device, &mut frontier, w.entries[..3].to_vec()).unwrap();
    assert_eq!(batch.head().signed(), w.head3.signed());
    store.append(batch).unwrap();
    let file = dir.path().join("space.bundle");
    seeder::fs::bundle::export(
        &store,
        &w.address,
        std::slice::from_ref(&w.cert),
        &[],
        &file,
    )
    .unwrap();
    let bytes = std::fs::read(&file).unwrap();
    let (body, trailer) = bytes.split_at(bytes.len() - 32);
    assert_eq!(blake3::hash(body).as_bytes(), trailer);
    let magic = b"SEEDER-BUNDLE\n\x01";
    assert_eq!(&body[..magic.len()], magic);
    s.hex("bundle_magic", magic);
    let mut rest = &body[magic.len()..];
    for name in ["header", "feed", "entries", "end"] {
        let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
        s.hex(format!("bundle_frame_{name}"), &rest[..4 + len]);
        rest = &rest[4 + len..];
    }
    assert!(rest.is_empty());
    s.hex("bundle_trailer", trailer);
    s
}

// ---------------------------------------------------------------------------------------------
// Governed spaces: the membership log, its keys, and what changes in codes, certificates,
// entries and bundles.

/// Seed of the RNG the membership vectors draw ephemeral keys and nonces from. Every draw is
/// listed in the vectors, so another implementation never needs this RNG.
const RNG_SEED: u64 = 2026;
/// Nonce of the governed entry.
const GOVERNED_NONCE: [u8; 24] = [0xd0; 24];
/// Who the invite is for, as the owner typed it.
const LABEL: &str = "alice";
/// Entries of the invited device's feed that stay after its removal.
const REMOVED_AT: u64 = 2;

/// A seeded RNG that keeps what it gave, so each sealed box's ephemeral secret and each
/// nonce can be listed and the sealing rebuilt from them.
struct Tape {
    rng: StdRng,
    drawn: Vec<Vec<u8>>,
}

impl Tape {
    fn new() -> Tape {
        Tape {
            rng: StdRng::seed_from_u64(RNG_SEED),
            drawn: Vec::new(),
        }
    }

    /// The one draw made since the last call.
    fn take(&mut self) -> Vec<u8> {
        assert_eq!(self.drawn.len(), 1, "one draw per sealing");
        self.drawn.pop().unwrap()
    }
}

impl RngCore for Tape {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.rng.fill_bytes(dest);
        self.drawn.push(dest.to_vec());
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for Tape {}

/// The governed space of the vectors and its log: made from `space_secret`, first owner the
/// device (`feed_seed`), then an invite, the second device's join, its removal and a new epoch.
struct Gov {
    owner: SigningKey,
    other: SigningKey,
    invite_secret: [u8; 32],
    invite: InviteKeys,
    /// Epoch 0's key (the space's content key) and epoch 1's.
    key0: [u8; 32],
    key1: [u8; 32],
    genesis: members::Record,
    invite_record: members::Record,
    join: members::Record,
    remove: members::Record,
    epoch: members::Record,
    /// Random bytes drawn while sealing, in order: (name, bytes).
    draws: Vec<(&'static str, Vec<u8>)>,
    verified: Vec<VerifiedRecord>,
    m: Membership,
}

impl Gov {
    fn new(w: &World) -> Gov {
        let address = w.address;
        let owner = w.device.clone();
        let other = SigningKey::from_bytes(&counting(0x40));
        let invite_secret = counting(0xa0);
        let invite = InviteKeys::from_secret(&invite_secret);
        let key0 = *w.secret.content_key();
        let key1 = counting(0xe0);
        let mut tape = Tape::new();
        let mut draws = Vec::new();

        let genesis = members::genesis(&w.secret, members::device_of(&owner));
        let k0 = genesis.id().key_id();
        let sealed = members::box_key(&mut tape, &invite.box_public(), &key0);
        draws.push(("invite_sealed_ephemeral_secret", tape.take()));
        let label = members::seal_label(&mut tape, &address, &invite.public(), &key0, LABEL);
        draws.push(("invite_label_nonce", tape.take()));
        let invite_record = members::Record::sign(
            &owner,
            address,
            vec![genesis.id()],
            Change::Invite {
                invite: invite.public(),
                invite_box: invite.box_public(),
                role: MemberRole::Writer,
                key: k0,
                sealed: sealed.0,
                label,
            },
        );
        let device = members::device_of(&other);
        let device_signature = other
            .sign(&members::join_bytes(&address, &invite.public(), &device))
            .to_bytes();
        let join = members::Record::sign(
            &invite.signing,
            address,
            vec![invite_record.id()],
            Change::Join {
                invite: invite.public(),
                device,
                device_signature,
            },
        );
        let remove = members::Record::sign(
            &owner,
            address,
            vec![join.id()],
            Change::Remove {
                member: device.feed.0,
                at: REMOVED_AT,
            },
        );
        let boxed = members::box_key(&mut tape, &members::device_of(&owner).box_key, &key1);
        draws.push(("epoch_box_ephemeral_secret", tape.take()));
        let wrapped = members::wrap_key(&mut tape, &address, &key1, &k0, &key0);
        draws.push(("epoch_wrap_nonce", tape.take()));
        let epoch = members::Record::sign(
            &owner,
            address,
            vec![remove.id()],
            Change::Epoch {
                boxes: vec![(FeedKey::from(&owner).0, Box::new(boxed))],
                earlier: vec![(k0, Box::new(wrapped))],
            },
        );
        let verified: Vec<VerifiedRecord> = [&genesis, &invite_record, &join, &remove, &epoch]
            .into_iter()
            .map(|r| r.clone().verify(&address).unwrap())
            .collect();
        // Any order of the same set gives the same membership.
        let m = Membership::compute(&verified);
        let reversed: Vec<VerifiedRecord> = verified.iter().rev().cloned().collect();
        assert_eq!(Membership::compute(&reversed), m);
        Gov {
            owner,
            other,
            invite_secret,
            invite,
            key0,
            key1,
            genesis,
            invite_record,
            join,
            remove,
            epoch,
            draws,
            verified,
            m,
        }
    }

    fn draw(&self, name: &str) -> &[u8] {
        &self.draws.iter().find(|(n, _)| *n == name).unwrap().1
    }

    /// Every content key a device holds: its box (and the invite's, for the invited device)
    /// opened, nothing known beforehand.
    fn keys_of(&self, device: &SigningKey, address: &Address) -> BTreeMap<KeyId, ContentKey> {
        let feed = FeedKey::from(device);
        let own_box = members::device_box(device);
        let mut boxes = vec![(&feed.0, &own_box)];
        let invite = self.invite.public();
        if device.verifying_key() == self.other.verifying_key() {
            boxes.push((&invite, &self.invite.boxing));
        }
        self.m
            .unlock(&self.verified, address, &boxes, BTreeMap::new())
    }
}

/// A postcard varint, as FORMATS.md spells it.
fn varint(mut n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let low = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(low);
            return out;
        }
        out.push(low | 0x80);
    }
}

/// A postcard byte string: varint length, then the bytes.
fn byte_string(bytes: &[u8]) -> Vec<u8> {
    let mut out = varint(bytes.len() as u64);
    out.extend_from_slice(bytes);
    out
}

/// `MemberRole` as FORMATS.md numbers it.
fn role_index(role: MemberRole) -> u8 {
    match role {
        MemberRole::Reader => 0,
        MemberRole::Writer => 1,
        MemberRole::Owner => 2,
    }
}

/// `postcard(Change)` built by hand from FORMATS.md's table.
fn change_postcard(change: &Change) -> Vec<u8> {
    let mut out = Vec::new();
    match change {
        Change::Genesis { owner } => {
            out.push(0);
            out.extend_from_slice(&owner.feed.0);
            out.extend_from_slice(&owner.box_key);
        }
        Change::Invite {
            invite,
            invite_box,
            role,
            key,
            sealed,
            label,
        } => {
            out.push(1);
            out.extend_from_slice(invite);
            out.extend_from_slice(invite_box);
            out.push(role_index(*role));
            out.extend_from_slice(&key.0);
            out.extend(byte_string(sealed));
            out.extend(byte_string(label));
        }
        Change::Join {
            invite,
            device,
            device_signature,
        } => {
            out.push(2);
            out.extend_from_slice(invite);
            out.extend_from_slice(&device.feed.0);
            out.extend_from_slice(&device.box_key);
            out.extend(byte_string(device_signature));
        }
        Change::SetRole { device, role, at } => {
            out.push(3);
            out.extend_from_slice(&device.0);
            out.push(role_index(*role));
            out.extend(varint(*at));
        }
        Change::Remove { member, at } => {
            out.push(4);
            out.extend_from_slice(member);
            out.extend(varint(*at));
        }
        Change::Epoch { boxes, earlier } => {
            out.push(5);
            out.extend(varint(boxes.len() as u64));
            for (holder, sealed) in boxes {
                out.extend_from_slice(holder);
                out.extend(byte_string(&sealed.0));
            }
            out.extend(varint(earlier.len() as u64));
            for (id, wrapped) in earlier {
                out.extend_from_slice(&id.0);
                out.extend(byte_string(&wrapped.0));
            }
        }
    }
    out
}

/// `postcard(Body)` by hand.
fn body_postcard(body: &Body) -> Vec<u8> {
    let mut out = body.address.0.to_vec();
    out.extend(varint(body.parents.len() as u64));
    for p in &body.parents {
        out.extend_from_slice(&p.0);
    }
    out.extend(change_postcard(&body.change));
    out
}

/// Check one record against FORMATS.md (encoding, signing bytes, signature, id) and list it
/// as `name_signing_bytes`, `name_signature`, `name_record`, `name_id`.
fn record_lines(s: &mut Section, name: &str, r: &members::Record) {
    let encoded = postcard::to_allocvec(r).unwrap();
    let mut expected = body_postcard(&r.body);
    expected.extend_from_slice(&r.signer);
    expected.extend(byte_string(&r.signature));
    assert_eq!(encoded, expected, "{name}");
    assert_eq!(
        postcard::to_allocvec(&r.body).unwrap(),
        body_postcard(&r.body)
    );
    let mut signing = RECORD_DOMAIN.to_vec();
    signing.extend(body_postcard(&r.body));
    assert_eq!(members::Record::signing_bytes(&r.body), signing);
    ed25519_dalek::VerifyingKey::from_bytes(&r.signer)
        .unwrap()
        .verify_strict(
            &signing,
            &ed25519_dalek::Signature::from_bytes(&r.signature),
        )
        .unwrap();
    let id = *blake3::hash(&encoded).as_bytes();
    assert_eq!(r.id().0, id);
    assert_eq!(
        postcard::from_bytes::<members::Record>(&encoded).unwrap(),
        *r
    );
    s.hex(format!("{name}_signing_bytes"), signing);
    s.hex(format!("{name}_signature"), r.signature);
    s.hex(format!("{name}_record"), encoded);
    s.hex(format!("{name}_id"), id);
}

/// libsodium's sealed-box nonce: BLAKE2b with a 24-byte output of `epk ‖ recipient`.
fn seal_nonce(ephemeral: &[u8; 32], recipient: &[u8; 32]) -> [u8; 24] {
    use blake2::Digest;
    let mut h = blake2::Blake2b::<blake2::digest::consts::U24>::new();
    h.update(ephemeral);
    h.update(recipient);
    h.finalize().into()
}

/// `crypto_box_seal` as FORMATS.md spells it, from the ephemeral secret.
fn sealed_box(ephemeral_secret: &[u8], to: &[u8; 32], msg: &[u8]) -> Vec<u8> {
    use crypto_box::aead::Aead;
    let esk = crypto_box::SecretKey::from_bytes(ephemeral_secret.try_into().unwrap());
    let epk = esk.public_key().to_bytes();
    let nonce = seal_nonce(&epk, to);
    let to = crypto_box::PublicKey::from_bytes(*to);
    let ct = crypto_box::SalsaBox::new(&to, &esk)
        .encrypt((&nonce).into(), msg)
        .unwrap();
    let mut out = epk.to_vec();
    out.extend(ct);
    out
}

/// `crypto_box_seal_open` as FORMATS.md spells it.
fn open_sealed_box(secret: &[u8; 32], sealed: &[u8]) -> Vec<u8> {
    use crypto_box::aead::Aead;
    let sk = crypto_box::SecretKey::from_bytes(*secret);
    let epk: [u8; 32] = sealed[..32].try_into().unwrap();
    let nonce = seal_nonce(&epk, &sk.public_key().to_bytes());
    crypto_box::SalsaBox::new(&crypto_box::PublicKey::from_bytes(epk), &sk)
        .decrypt((&nonce).into(), &sealed[32..])
        .unwrap()
}

/// `nonce ‖ XChaCha20-Poly1305(key, nonce, msg, aad)`: wrapped keys and labels.
fn xseal(key: &[u8; 32], nonce: &[u8], aad: &[u8], msg: &[u8]) -> Vec<u8> {
    let aead = chacha20poly1305::XChaCha20Poly1305::new(key.into());
    let mut out = nonce.to_vec();
    out.extend(aead.encrypt(nonce.into(), Payload { msg, aad }).unwrap());
    out
}

fn xopen(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Vec<u8> {
    let aead = chacha20poly1305::XChaCha20Poly1305::new(key.into());
    aead.decrypt(
        sealed[..24].into(),
        Payload {
            msg: &sealed[24..],
            aad,
        },
    )
    .unwrap()
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn device_invite(w: &World, g: &Gov) -> Section {
    let mut s = Section::new(
        "Device invite",
        "From `address` and `invite_secret`: a one-device invite into the governed space. \
         `device_invite_*` are as for the codes above, with version 2 and `address ‖ \
         invite_secret` as the key: a 69-byte payload spelt in 111 characters. \
         `invite_signing_seed` is the ed25519 seed of the invite key and `invite_key` its \
         public key; `invite_box_secret` is the X25519 secret of the invite's box key and \
         `invite_box_key` its public key. `device_box_*` are the box keys of the device (from \
         `feed_seed`), `other_box_*` those of the second device (from `other_feed_seed`).",
    );
    let mut key = w.address.0.to_vec();
    key.extend_from_slice(&g.invite_secret);
    let (input, sum, payload, text) = code("invite", b'i', 2, &key);
    let code = InviteCode::device(w.address, g.invite_secret);
    assert_eq!(code.to_string(), text);
    assert_eq!((payload.len(), text.len()), (69, 140));
    assert_eq!(text.parse::<InviteCode>().unwrap(), code);
    s.hex("device_invite_checksum_input", input);
    s.hex("device_invite_checksum", sum);
    s.hex("device_invite_payload", payload);
    s.text("device_invite_code", text);

    let signing_seed = blake3::derive_key(CTX_INVITE_SIGNING, &g.invite_secret);
    let invite_key = SigningKey::from_bytes(&signing_seed)
        .verifying_key()
        .to_bytes();
    assert_eq!(invite_key, g.invite.public());
    let box_secret = blake3::derive_key(CTX_INVITE_BOX, &g.invite_secret);
    let box_key = crypto_box::SecretKey::from_bytes(box_secret)
        .public_key()
        .to_bytes();
    assert_eq!(box_key, g.invite.box_public());
    assert_eq!(g.invite.boxing.to_bytes(), box_secret);
    s.hex("invite_signing_seed", signing_seed);
    s.hex("invite_key", invite_key);
    s.hex("invite_box_secret", box_secret);
    s.hex("invite_box_key", box_key);
    for (name, device) in [("device", &g.owner), ("other", &g.other)] {
        let secret = blake3::derive_key(CTX_DEVICE_BOX, device.as_bytes());
        assert_eq!(members::device_box(device).to_bytes(), secret);
        let public = crypto_box::SecretKey::from_bytes(secret)
            .public_key()
            .to_bytes();
        assert_eq!(members::device_of(device).box_key, public);
        s.hex(format!("{name}_box_secret"), secret);
        s.hex(format!("{name}_box_key"), public);
    }
    s
}

fn membership_records(w: &World, g: &Gov) -> Section {
    let mut s = Section::new(
        "Membership records",
        "The log of the governed space made from `space_secret`, whose first owner is the \
         device, in the order it was written: the Genesis (signed by the space signing key); \
         the device's Invite of `invite_key` as a writer for \"alice\", boxing the key of epoch \
         0 (`content_key`); the second device's Join (signed by the invite key); the device's \
         Remove of the second device, whose first 2 entries stay; and the device's Epoch \
         starting `epoch_1_key`, boxed to the device alone and wrapping the key of epoch 0. \
         Each record after the Genesis has the one before it as its only parent. For each: \
         `*_signing_bytes`, `*_signature`, `*_record` (its postcard, which is stored, sent and \
         hashed) and `*_id`. The random bytes were drawn in the order listed: \
         `*_ephemeral_secret` is the X25519 secret of a sealed box's ephemeral key, `*_nonce` \
         an XChaCha20-Poly1305 nonce. `epoch_unwrapped_key` is what the device gets by \
         opening its box of epoch 1 and unwrapping the earlier key with it. `set_role_change` \
         is the postcard of a change not in this log: SetRole of the second device to reader, \
         frozen at 2 entries.",
    );
    let address = w.address;
    let k0 = g.genesis.id().key_id();
    assert_eq!(k0.0, g.genesis.id().0[..8]);

    // Genesis.
    assert_eq!(g.genesis.signer, address.0);
    record_lines(&mut s, "genesis", &g.genesis);
    s.hex("genesis_key_id", k0.0);

    // Invite: the sealed box of epoch 0's key and the label.
    let Change::Invite { sealed, label, .. } = &g.invite_record.body.change else {
        unreachable!()
    };
    let esk = g.draw("invite_sealed_ephemeral_secret");
    assert_eq!(*sealed, sealed_box(esk, &g.invite.box_public(), &g.key0));
    assert_eq!(
        open_sealed_box(&g.invite.boxing.to_bytes(), sealed),
        g.key0.to_vec()
    );
    let label_aad = cat(&[LABEL_DOMAIN, &address.0, &g.invite.public()]);
    let nonce = g.draw("invite_label_nonce");
    assert_eq!(*label, xseal(&g.key0, nonce, &label_aad, LABEL.as_bytes()));
    assert_eq!(xopen(&g.key0, &label_aad, label), LABEL.as_bytes());
    s.hex("invite_sealed_ephemeral_secret", esk);
    s.hex("invite_sealed", sealed);
    s.text("invite_label_text", format!("{LABEL:?}"));
    s.hex("invite_label_nonce", nonce);
    s.hex("invite_label_aad", &label_aad);
    s.hex("invite_label", label);
    record_lines(&mut s, "invite", &g.invite_record);

    // Join: the device's own signature, then the invite key's.
    let Change::Join {
        device,
        device_signature,
        ..
    } = &g.join.body.change
    else {
        unreachable!()
    };
    let join_bytes = cat(&[
        JOIN_DOMAIN,
        &address.0,
        &g.invite.public(),
        &device.feed.0,
        &device.box_key,
    ]);
    assert_eq!(
        members::join_bytes(&address, &g.invite.public(), device),
        join_bytes
    );
    g.other
        .verifying_key()
        .verify_strict(
            &join_bytes,
            &ed25519_dalek::Signature::from_bytes(device_signature),
        )
        .unwrap();
    assert_eq!(g.join.signer, g.invite.public());
    s.hex("join_bytes", &join_bytes);
    s.hex("join_device_signature", device_signature);
    record_lines(&mut s, "join", &g.join);

    record_lines(&mut s, "remove", &g.remove);

    // Epoch: one box, one wrapped key.
    let Change::Epoch { boxes, earlier } = &g.epoch.body.change else {
        unreachable!()
    };
    let owner_box = members::device_box(&g.owner).to_bytes();
    let esk = g.draw("epoch_box_ephemeral_secret");
    assert_eq!(boxes[0].0, FeedKey::from(&g.owner).0);
    assert_eq!(
        boxes[0].1 .0,
        sealed_box(esk, &members::device_of(&g.owner).box_key, &g.key1)
    );
    let opened: [u8; 32] = open_sealed_box(&owner_box, &boxes[0].1 .0)
        .try_into()
        .unwrap();
    assert_eq!(opened, g.key1);
    let wrap_aad = cat(&[WRAP_DOMAIN, &address.0, &k0.0]);
    let nonce = g.draw("epoch_wrap_nonce");
    assert_eq!(earlier[0].0, k0);
    assert_eq!(earlier[0].1 .0, xseal(&opened, nonce, &wrap_aad, &g.key0));
    let unwrapped = xopen(&opened, &wrap_aad, &earlier[0].1 .0);
    assert_eq!(unwrapped, g.key0);
    s.hex("epoch_box_ephemeral_secret", esk);
    s.hex("epoch_box", &boxes[0].1 .0);
    s.hex("epoch_wrap_nonce", nonce);
    s.hex("epoch_wrap_aad", &wrap_aad);
    s.hex("epoch_wrapped", &earlier[0].1 .0);
    record_lines(&mut s, "epoch", &g.epoch);
    s.hex("epoch_key_id", g.epoch.id().key_id().0);
    s.hex("epoch_unwrapped_key", unwrapped);

    let set_role = Change::SetRole {
        device: FeedKey::from(&g.other),
        role: MemberRole::Reader,
        at: REMOVED_AT,
    };
    assert_eq!(
        postcard::to_allocvec(&set_role).unwrap(),
        change_postcard(&set_role)
    );
    s.hex("set_role_change", postcard::to_allocvec(&set_role).unwrap());
    s
}

fn membership(w: &World, g: &Gov) -> Section {
    let mut s = Section::new(
        "Membership",
        "What the five records above give, in any order. Devices are listed by feed key, \
         smallest first. `frozen_at` is how many entries of a device's feed count (`all`: no \
         limit); `*_keys` are the key ids a device's boxes open with no key known beforehand \
         (the invited device also holds its invite's box).",
    );
    let m = &g.m;
    let owner = FeedKey::from(&g.owner);
    let other = FeedKey::from(&g.other);
    assert!(m.is_governed());
    assert_eq!(m.role(&owner), Some(MemberRole::Owner));
    assert_eq!(m.role(&other), None);
    assert_eq!(m.admits(&owner), Admission::Upto(None));
    assert_eq!(m.admits(&other), Admission::Upto(Some(REMOVED_AT)));
    assert!(m.conflicts.is_empty());
    assert_eq!(m.waiting, 0);
    assert_eq!(m.heads, vec![g.epoch.id()]);
    assert!(!m.needs_rotation());
    assert_eq!(m.current_key(), Some(g.epoch.id().key_id()));
    for (i, (feed, d)) in m.members.iter().enumerate() {
        s.hex(format!("device_{i}_feed"), feed.0);
        s.text(format!("device_{i}_role"), d.role);
        s.text(format!("device_{i}_removed"), d.removed);
        s.text(
            format!("device_{i}_frozen_at"),
            d.frozen_at.map_or("all".to_string(), |n| n.to_string()),
        );
    }
    let (invite, i) = m.invites.iter().next().unwrap();
    assert_eq!(i.used_by, Some(other));
    s.hex("invite_key", invite);
    s.text("invite_role", i.role);
    s.hex("invite_used_by", i.used_by.unwrap().0);
    s.text("epochs", m.epochs.len());
    for (n, e) in m.epochs.iter().enumerate() {
        s.hex(format!("epoch_{n}_key_id"), e.key.0);
    }
    s.hex("current_key_id", m.current_key().unwrap().0);
    s.hex("head", m.heads[0].0);
    s.text("conflicts", m.conflicts.len());
    s.text("needs_rotation", m.needs_rotation());
    let ids = |keys: &BTreeMap<KeyId, ContentKey>| {
        keys.keys()
            .map(|k| hex::encode(k.0))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let device_keys = g.keys_of(&g.owner, &w.address);
    assert_eq!(device_keys.len(), 2);
    assert_eq!(*device_keys[&g.genesis.id().key_id()], g.key0);
    assert_eq!(*device_keys[&g.epoch.id().key_id()], g.key1);
    let other_keys = g.keys_of(&g.other, &w.address);
    assert_eq!(other_keys.len(), 1);
    assert_eq!(*other_keys[&g.genesis.id().key_id()], g.key0);
    assert_eq!(
        m.label(&w.address, &m.members[&other], &other_keys)
            .as_deref(),
        Some(LABEL)
    );
    s.text("device_keys", ids(&device_keys));
    s.text("other_keys", ids(&other_keys));
    s
}

fn governed_entry(w: &World, g: &Gov) -> Section {
    let mut s = Section::new(
        "Governed certificate and entry",
        "In the governed space above. `own_cert_*` is the device's own certificate for its \
         feed: the same `cert_signing_bytes`, signed with `feed_seed`. The entry is entry 0 \
         of the device's feed, sealed with the current key (`epoch_1_key`, id \
         `epoch_key_id`) and the nonce `governed_nonce`; its plaintext is `record_0`.",
    );
    let address = w.address;
    let cert = MembershipCert::own(&g.owner, address);
    let bytes = MembershipCert::signing_bytes(&address, &w.feed);
    assert_eq!(cert.feed, w.feed);
    w.device
        .verifying_key()
        .verify_strict(
            &bytes,
            &ed25519_dalek::Signature::from_bytes(&cert.signature),
        )
        .unwrap();
    assert!(cert.clone().verify_in(&address, Some(&g.m)).is_ok());
    assert!(cert.clone().verify(&address).is_err());
    assert!(MembershipCert::own(&g.other, address)
        .verify_in(&address, Some(&g.m))
        .is_ok());
    let stranger = SigningKey::from_bytes(&counting(0x60));
    assert!(MembershipCert::own(&stranger, address)
        .verify_in(&address, Some(&g.m))
        .is_err());
    s.hex("own_cert_signature", cert.signature);
    s.hex("own_cert_postcard", postcard::to_allocvec(&cert).unwrap());

    let seq = 0u64;
    let plain = w.records[seq as usize].encode();
    let key_id = g.epoch.id().key_id();
    let aad = cat(&[
        ENTRY_AAD_DOMAIN_V2,
        &address.0,
        &w.feed.0,
        &seq.to_le_bytes(),
        &key_id.0,
    ]);
    let mut expected = key_id.0.to_vec();
    expected.extend(xseal(&g.key1, &GOVERNED_NONCE, &aad, &plain));
    let keys = g.keys_of(&g.owner, &address);
    let cipher = ContentCipher::epochs(address, &keys, g.m.current_key());
    let sealed = cipher.seal(&w.feed, seq, &plain, &GOVERNED_NONCE).unwrap();
    assert_eq!(sealed, expected);
    assert_eq!(sealed.len(), plain.len() + 48);
    assert_eq!(cipher.open(&w.feed, seq, &sealed).unwrap(), plain);
    assert!(cipher.open(&w.feed, seq + 1, &sealed).is_err());
    // The removed device holds only the key of epoch 0.
    let other = ContentCipher::epochs(address, &g.keys_of(&g.other, &address), None);
    assert!(other.open(&w.feed, seq, &sealed).is_err());
    s.text("seq", seq);
    s.hex("plaintext", &plain);
    s.hex("key_id", key_id.0);
    s.hex("aad", &aad);
    s.hex("sealed", &sealed);
    s
}

fn governed_bundle(w: &World, g: &Gov) -> Section {
    let mut s = Section::new(
        "Governed bundle",
        "A bundle of the governed space with no feeds: the magic, a header saying 0 feeds, \
         the `Members` frame with the five records above in the order of their ids, `End` and \
         the trailer.",
    );
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store"), &StoreConfig::default()).unwrap();
    let mut records: Vec<members::Record> = g.verified.iter().map(|r| r.record().clone()).collect();
    records.sort_by_key(|r| r.id());
    let file = dir.path().join("space.bundle");
    seeder::fs::bundle::export(&store, &w.address, &[], &records, &file).unwrap();
    let bytes = std::fs::read(&file).unwrap();
    let (body, trailer) = bytes.split_at(bytes.len() - 32);
    assert_eq!(blake3::hash(body).as_bytes(), trailer);
    let mut rest = &body[b"SEEDER-BUNDLE\n\x01".len()..];
    let mut frames = Vec::new();
    while !rest.is_empty() {
        let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
        frames.push(&rest[..4 + len]);
        rest = &rest[4 + len..];
    }
    assert_eq!(frames.len(), 3);
    let mut members = vec![4u8];
    members.extend(varint(records.len() as u64));
    for r in &records {
        members.extend(postcard::to_allocvec(r).unwrap());
    }
    let mut framed = (members.len() as u32).to_le_bytes().to_vec();
    framed.extend(members);
    assert_eq!(frames[1], framed);
    s.hex("governed_frame_header", frames[0]);
    s.hex("governed_frame_members", frames[1]);
    s.hex("governed_frame_end", frames[2]);
    s.hex("governed_trailer", trailer);
    s
}
