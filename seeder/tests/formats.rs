//! The test vectors of `seeder/FORMATS.md`, computed here from fixed inputs so that they can't
//! drift from the code. The block between `<!-- vectors:begin -->` and `<!-- vectors:end -->`
//! in that file must be exactly what [`render`] makes of [`sections`]; with
//! `SEEDER_WRITE_VECTORS=1` the test rewrites the block instead of failing.
//!
//! Where FORMATS.md describes a construction that the library keeps private (the capability
//! key, the cipher's associated data, the code checksum and base32), the generator builds it
//! from the description with the standard primitives and checks it against what the library
//! produces, so the prose is tested too, not only the bytes.
//!
//! To add vectors: add a function returning a [`Section`] and list it in [`sections`].

// A panic is how a test fails.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;

use bytes::Bytes;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use ed25519_dalek::SigningKey;

use seeder::feed::{
    empty_root, leaf_hash, node_hash, write_batch, ConsistencyProof, FeedKey, Frontier, Hash,
    InclusionProof, NodeId, SignedHead, VerifiedHead, HEAD_DOMAIN, MAX_ENTRY_LEN,
};
use seeder::fs::{
    ContentRef, FileMeta, Mtime, Path, Record, VectorClock, CHUNK_SIZE, FORMAT_VERSION,
    MAX_CLOCK_FEEDS, MAX_COMPONENT_LEN, MAX_DEVICE_NAME_LEN, MAX_PATH_LEN, MODE_MASK,
};
use seeder::net::{reach::PeerCode, tunnel, NodeIdentity, CAPABILITY_EXPORTER_LABEL};
use seeder::space::{
    Address, Capability, ContentCipher, InviteCode, MembershipCert, Role, SeedCode, SpaceSecret,
    CAPABILITY_DOMAIN, CERT_DOMAIN, CTX_CAPABILITY, CTX_CONTENT, CTX_DISCOVERY, CTX_SIGNING,
    ENTRY_AAD_DOMAIN,
};
use seeder::store::{Store, StoreConfig};
use seeder::wire::{FeedOffer, Message, Refusal};

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
        membership_log(),
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
         `nonce_N` the nonce entry N of the device's feed is sealed with.",
    );
    s.hex("space_secret", counting(0x00));
    s.hex("feed_seed", counting(0x20));
    s.hex("other_feed_seed", counting(0x40));
    s.hex("node_seed", counting(0x60));
    s.hex("exporter_secret", counting(0x80));
    for seq in 0..ENTRIES {
        s.hex(format!("nonce_{seq}"), nonce(seq));
    }
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
fn code(prefix: &str, kind: u8, key: &[u8; 32]) -> (Vec<u8>, [u8; 4], Vec<u8>, String) {
    let mut input = vec![kind, 1];
    input.extend_from_slice(key);
    let d = blake3::derive_key(CODE_CHECKSUM_CTX, &input);
    let checksum = [d[0], d[1], d[2], d[3]];
    let mut payload = vec![1];
    payload.extend_from_slice(key);
    payload.extend_from_slice(&checksum);
    // 296 bits, most significant first, then four zero bits: 60 characters.
    let mut bits: Vec<u8> = payload
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1))
        .collect();
    bits.resize(300, 0);
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
    let (i_input, i_sum, i_payload, i_text) = code("invite", b'i', w.secret.as_bytes());
    let (s_input, s_sum, s_payload, s_text) = code("seed", b's', &w.address.0);
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
         sends.",
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

fn membership_log() -> Section {
    Section::new("Membership log", "Described with the membership log.")
}
