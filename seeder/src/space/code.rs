/*!
Seed codes and invite codes as text for people: `seed-` or `invite-`, then Crockford base32
(digits and lowercase letters without i, l, o, u) in dash-separated groups of five.

Payload: a version byte, the key bytes, and a 4-byte checksum = the first bytes of BLAKE3
`derive_key` over (kind, version, key). Seed codes and the invite codes of spaces from before
roles (version 1) carry 32 key bytes: 60 characters. A device invite of a governed space
(version 2) carries the space's address and a one-device invite secret, 64 bytes: 111
characters. The checksum covers the kind, so an invite
code's body can't pass as a seed code. Reading is forgiving where it's safe (case, dashes,
spaces, `o`→0, `i`/`l`→1) and exact where it matters: any other change is reported as a typo.
*/

use super::{Address, SpaceSecret};

/// Version of seed codes and of the invite codes that carry a space's secret.
const CODE_VERSION: u8 = 1;
/// Version of device invites: address ‖ invite secret.
const DEVICE_INVITE_VERSION: u8 = 2;
const CHECKSUM_CTX: &str = "seeder 2026-11 code checksum v1";
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
/// Characters of a code carrying `key_len` key bytes: version + key + checksum, 5 bits a
/// character, the last bits zero padding (32 bytes: 37 → 60 characters; 64: 69 → 111).
const fn body_chars(key_len: usize) -> usize {
    ((1 + key_len + 4) * 8).div_ceil(5)
}
const BODY_CHARS: usize = body_chars(32);
const DEVICE_BODY_CHARS: usize = body_chars(64);
const GROUP: usize = 5;

/// Why a code could not be read. Messages name the kind of code and what to do.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodeError {
    #[error("this is {got}, not {expected}")]
    WrongKind {
        expected: &'static str,
        got: &'static str,
    },
    #[error("this is not {expected}: it should start with {prefix:?}")]
    NoPrefix {
        expected: &'static str,
        prefix: &'static str,
    },
    #[error("{kind} has a character that can't be in one: {ch:?} at position {position}")]
    BadChar {
        kind: &'static str,
        ch: char,
        position: usize,
    },
    #[error("{kind} is incomplete or too long: {got} characters instead of {expected}")]
    WrongLength {
        kind: &'static str,
        got: usize,
        expected: usize,
    },
    #[error("{}", typo_message(.kind, .suspect))]
    Typo {
        kind: &'static str,
        /// The group of five characters that one changed or two swapped characters would fix,
        /// when exactly one group would.
        suspect: Option<Suspect>,
    },
    #[error("{kind} of version {version} needs a newer seeder")]
    UnknownVersion { kind: &'static str, version: u8 },
}

/// Where a typo most likely is: a group of the code as people see it (`seed-aaaaa-bbbbb-…`,
/// the first group after the prefix is 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suspect {
    pub group: usize,
    /// The group's bytes in the text as it was given (spaces or missing dashes included).
    pub span: std::ops::Range<usize>,
}

fn typo_message(kind: &str, suspect: &Option<Suspect>) -> String {
    match suspect {
        Some(s) => format!(
            "{kind} has a typo, most likely in group {} of five characters: check that group \
             character by character",
            s.group
        ),
        None => format!("{kind} has a typo: check it character by character"),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Seed,
    Invite,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::Seed => "seed",
            Kind::Invite => "invite",
        }
    }
    fn name(self) -> &'static str {
        match self {
            Kind::Seed => "a seed code",
            Kind::Invite => "an invite code",
        }
    }
    fn tag(self) -> u8 {
        match self {
            Kind::Seed => b's',
            Kind::Invite => b'i',
        }
    }
}

fn checksum(kind: Kind, version: u8, key: &[u8]) -> [u8; 4] {
    let mut input = zeroize::Zeroizing::new(Vec::with_capacity(2 + key.len()));
    input.push(kind.tag());
    input.push(version);
    input.extend_from_slice(key);
    let d = blake3::derive_key(CHECKSUM_CTX, &input);
    [d[0], d[1], d[2], d[3]]
}

fn encode(kind: Kind, version: u8, key: &[u8]) -> String {
    let mut payload = zeroize::Zeroizing::new(Vec::with_capacity(1 + key.len() + 4));
    payload.push(version);
    payload.extend_from_slice(key);
    payload.extend_from_slice(&checksum(kind, version, key));
    let payload = payload.iter().copied();
    let mut chars = Vec::with_capacity(DEVICE_BODY_CHARS);
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in payload {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            chars.push(ALPHABET[((acc >> bits) & 31) as usize]);
        }
    }
    if bits > 0 {
        chars.push(ALPHABET[((acc << (5 - bits)) & 31) as usize]);
    }
    let mut out = String::from(kind.prefix());
    for group in chars.chunks(GROUP) {
        out.push('-');
        out.push_str(std::str::from_utf8(group).expect("alphabet is ASCII"));
    }
    out
}

fn value(c: char) -> Option<u8> {
    let c = c.to_ascii_lowercase();
    let c = match c {
        'o' => '0',
        'i' | 'l' => '1',
        c => c,
    };
    ALPHABET
        .iter()
        .position(|&a| a as char == c)
        .map(|p| p as u8)
}

/// The version and key bytes of a code of `kind`.
fn decode(kind: Kind, given: &str) -> Result<(u8, zeroize::Zeroizing<Vec<u8>>), CodeError> {
    let text = given.trim();
    // Spans in errors are into `given`, so a page can mark them in what was typed.
    let lead = given.len() - given.trim_start().len();
    let lower = text.to_ascii_lowercase();
    let other = match kind {
        Kind::Seed => Kind::Invite,
        Kind::Invite => Kind::Seed,
    };
    let body = if let Some(rest) = lower.strip_prefix(kind.prefix()) {
        rest
    } else if lower.starts_with(other.prefix()) {
        return Err(CodeError::WrongKind {
            expected: kind.name(),
            got: other.name(),
        });
    } else {
        return Err(CodeError::NoPrefix {
            expected: kind.name(),
            prefix: kind.prefix(),
        });
    };
    let longest = match kind {
        Kind::Seed => BODY_CHARS,
        Kind::Invite => DEVICE_BODY_CHARS,
    };
    let mut values = Vec::with_capacity(longest);
    // Byte offset in `given` of each value's character (all of them ASCII).
    let mut at = Vec::with_capacity(longest);
    let mut count = 0usize;
    for (i, (offset, c)) in body.char_indices().enumerate() {
        if c == '-' || c.is_whitespace() {
            continue;
        }
        let v = value(c).ok_or(CodeError::BadChar {
            kind: kind.name(),
            ch: c,
            position: kind.prefix().len() + i + 1,
        })?;
        // A long paste is counted, not kept: it is refused below for its length.
        count += 1;
        if values.len() < longest {
            values.push(v);
            at.push(lead + kind.prefix().len() + offset);
        }
    }
    if count != BODY_CHARS && count != longest {
        // Name the length nearest to what was given.
        let expected = if count > (BODY_CHARS + longest) / 2 {
            longest
        } else {
            BODY_CHARS
        };
        return Err(CodeError::WrongLength {
            kind: kind.name(),
            got: count,
            expected,
        });
    }
    values.truncate(count);
    match payload_of(kind, &values) {
        Ok(key) => Ok(key),
        Err(Read::Version(version)) => Err(CodeError::UnknownVersion {
            kind: kind.name(),
            version,
        }),
        Err(Read::Typo) => Err(CodeError::Typo {
            kind: kind.name(),
            suspect: suspect_group(kind, &values).map(|g| {
                let first = g * GROUP;
                let last = (first + GROUP).min(count) - 1;
                Suspect {
                    group: g + 1,
                    span: at[first]..at[last] + 1,
                }
            }),
        }),
    }
}

/// Why a body of the right length doesn't read.
enum Read {
    Typo,
    Version(u8),
}

/// The version and key in a body of [`BODY_CHARS`] or [`DEVICE_BODY_CHARS`] values.
fn payload_of(kind: Kind, values: &[u8]) -> Result<(u8, zeroize::Zeroizing<Vec<u8>>), Read> {
    let mut payload = zeroize::Zeroizing::new(Vec::with_capacity(values.len() * 5 / 8));
    let (mut acc, mut bits) = (0u32, 0u32);
    for &v in values {
        acc = ((acc << 5) | u32::from(v)) & 0xffff;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            payload.push((acc >> bits) as u8);
        }
    }
    // The padding bits must be zero: otherwise two texts would read as one code.
    if acc & ((1 << bits) - 1) != 0 {
        return Err(Read::Typo);
    }
    let n = payload.len();
    let version = payload[0];
    let key = zeroize::Zeroizing::new(payload[1..n - 4].to_vec());
    if payload[n - 4..] != checksum(kind, version, &key) {
        return Err(Read::Typo);
    }
    let known = match (kind, key.len()) {
        (_, 32) => version == CODE_VERSION,
        (Kind::Invite, 64) => version == DEVICE_INVITE_VERSION,
        _ => false,
    };
    if !known {
        return Err(Read::Version(version));
    }
    Ok((version, key))
}

/// The group (0-based) that holds the typo when one changed character or two swapped
/// neighbours would make `values` a valid code, and every such fix lies in that one group.
///
/// Tries each of the 60 × 31 substitutions and 59 swaps: about 1,900 checksums of 34 bytes,
/// a few milliseconds on the board, and only after a code failed. A fix found by chance has a
/// 2⁻³² checksum to pass, so with 1,900 tries a wrong suggestion is about one in two million;
/// two typos in different groups find none and the message says to check the whole code.
fn suspect_group(kind: Kind, values: &[u8]) -> Option<usize> {
    let mut found: Option<usize> = None;
    let mut note = |g: usize| -> bool {
        match found {
            Some(f) if f != g => false,
            _ => {
                found = Some(g);
                true
            }
        }
    };
    let mut trial = values.to_vec();
    for i in 0..values.len() {
        for v in 0..32u8 {
            if v == values[i] {
                continue;
            }
            trial[i] = v;
            if payload_of(kind, &trial).is_ok() && !note(i / GROUP) {
                return None;
            }
        }
        trial[i] = values[i];
    }
    for i in 0..values.len().saturating_sub(1) {
        if values[i] == values[i + 1] {
            continue;
        }
        trial.swap(i, i + 1);
        let ok = payload_of(kind, &trial).is_ok();
        trial.swap(i, i + 1);
        // A swap across two groups points at neither.
        if ok && (i / GROUP != (i + 1) / GROUP || !note(i / GROUP)) {
            return None;
        }
    }
    found
}

/// A space's address as text for seeders: `seed-xxxxx-…`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeedCode(Address);

impl SeedCode {
    pub fn new(address: Address) -> Self {
        SeedCode(address)
    }
    pub fn address(&self) -> Address {
        self.0
    }
}

impl std::fmt::Display for SeedCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&encode(Kind::Seed, CODE_VERSION, &self.0 .0))
    }
}

impl std::str::FromStr for SeedCode {
    type Err = CodeError;
    fn from_str(s: &str) -> Result<Self, CodeError> {
        let (_, key) = decode(Kind::Seed, s)?;
        let key: [u8; 32] = key
            .as_slice()
            .try_into()
            .expect("seed codes carry 32 bytes");
        Ok(SeedCode(Address(key)))
    }
}

/// An invite as text for a member's device: `invite-xxxxx-…`.
///
/// Two kinds. A space from before roles is joined with its secret (60 characters): whoever
/// has it can read and write the space. A governed space is joined with a one-device invite
/// (111 characters): the space's address and an invite secret whose keys an owner put in the
/// membership log with a role.
#[derive(Clone, PartialEq, Eq)]
pub enum InviteCode {
    Space(SpaceSecret),
    Device {
        address: Address,
        secret: zeroize::Zeroizing<[u8; 32]>,
    },
}

impl std::fmt::Debug for InviteCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InviteCode(…)")
    }
}

impl InviteCode {
    /// The invite of a space from before roles.
    pub fn new(secret: &SpaceSecret) -> Self {
        InviteCode::Space(secret.clone())
    }
    /// A one-device invite into the governed space at `address`.
    pub fn device(address: Address, secret: [u8; 32]) -> Self {
        InviteCode::Device {
            address,
            secret: zeroize::Zeroizing::new(secret),
        }
    }
    /// The space's address.
    pub fn address(&self) -> Address {
        match self {
            InviteCode::Space(s) => s.address(),
            InviteCode::Device { address, .. } => *address,
        }
    }
}

impl std::fmt::Display for InviteCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InviteCode::Space(s) => f.write_str(&encode(Kind::Invite, CODE_VERSION, s.as_bytes())),
            InviteCode::Device { address, secret } => {
                let mut key = zeroize::Zeroizing::new([0u8; 64]);
                key[..32].copy_from_slice(&address.0);
                key[32..].copy_from_slice(&secret[..]);
                f.write_str(&encode(Kind::Invite, DEVICE_INVITE_VERSION, &key[..]))
            }
        }
    }
}

impl std::str::FromStr for InviteCode {
    type Err = CodeError;
    fn from_str(s: &str) -> Result<Self, CodeError> {
        let (_, key) = decode(Kind::Invite, s)?;
        if key.len() == 64 {
            let mut address = [0u8; 32];
            address.copy_from_slice(&key[..32]);
            let mut secret = [0u8; 32];
            secret.copy_from_slice(&key[32..]);
            return Ok(InviteCode::device(Address(address), secret));
        }
        let secret: [u8; 32] = key
            .as_slice()
            .try_into()
            .expect("invite codes carry 32 or 64 bytes");
        Ok(InviteCode::Space(SpaceSecret::from_bytes(secret)))
    }
}
