/*!
Seed codes and invite codes as text for people: `seed-` or `invite-`, then Crockford base32
(digits and lowercase letters without i, l, o, u) in dash-separated groups of five.

Payload: a version byte, the 32 key bytes, and a 4-byte checksum = the first bytes of
BLAKE3 `derive_key` over (kind, version, key). The checksum covers the kind, so an invite
code's body can't pass as a seed code. Reading is forgiving where it's safe (case, dashes,
spaces, `o`→0, `i`/`l`→1) and exact where it matters: any other change is reported as a typo.
*/

use super::{Address, SpaceSecret};

/// Version of the code format.
const CODE_VERSION: u8 = 1;
const CHECKSUM_CTX: &str = "seeder 2026-11 code checksum v1";
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
/// version + key + checksum.
const PAYLOAD_LEN: usize = 1 + 32 + 4;
/// 37 bytes = 296 bits → 60 base32 characters (the last 4 bits are zero padding).
const BODY_CHARS: usize = (PAYLOAD_LEN * 8).div_ceil(5);
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
    #[error("{kind} is incomplete or too long: {got} characters instead of {BODY_CHARS}")]
    WrongLength { kind: &'static str, got: usize },
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

fn checksum(kind: Kind, version: u8, key: &[u8; 32]) -> [u8; 4] {
    let mut input = [0u8; 34];
    input[0] = kind.tag();
    input[1] = version;
    input[2..].copy_from_slice(key);
    let d = blake3::derive_key(CHECKSUM_CTX, &input);
    [d[0], d[1], d[2], d[3]]
}

fn encode(kind: Kind, key: &[u8; 32]) -> String {
    let mut payload = [0u8; PAYLOAD_LEN];
    payload[0] = CODE_VERSION;
    payload[1..33].copy_from_slice(key);
    payload[33..].copy_from_slice(&checksum(kind, CODE_VERSION, key));
    let mut chars = Vec::with_capacity(BODY_CHARS);
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

fn decode(kind: Kind, given: &str) -> Result<[u8; 32], CodeError> {
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
    let mut values = Vec::with_capacity(BODY_CHARS);
    // Byte offset in `given` of each value's character (all of them ASCII).
    let mut at = Vec::with_capacity(BODY_CHARS);
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
        if values.len() < BODY_CHARS {
            values.push(v);
            at.push(lead + kind.prefix().len() + offset);
        }
    }
    if count != BODY_CHARS {
        return Err(CodeError::WrongLength {
            kind: kind.name(),
            got: count,
        });
    }
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
                let last = (first + GROUP).min(BODY_CHARS) - 1;
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

/// The key in a body of exactly [`BODY_CHARS`] values.
fn payload_of(kind: Kind, values: &[u8]) -> Result<[u8; 32], Read> {
    let mut payload = [0u8; PAYLOAD_LEN];
    let (mut acc, mut bits, mut n) = (0u32, 0u32, 0usize);
    for &v in values {
        acc = (acc << 5) | u32::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            payload[n] = (acc >> bits) as u8;
            n += 1;
        }
    }
    // The padding bits must be zero: otherwise two texts would read as one code.
    if acc & ((1 << bits) - 1) != 0 {
        return Err(Read::Typo);
    }
    let version = payload[0];
    let mut key = [0u8; 32];
    key.copy_from_slice(&payload[1..33]);
    if payload[33..] != checksum(kind, version, &key) {
        return Err(Read::Typo);
    }
    if version != CODE_VERSION {
        return Err(Read::Version(version));
    }
    Ok(key)
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
        f.write_str(&encode(Kind::Seed, &self.0 .0))
    }
}

impl std::str::FromStr for SeedCode {
    type Err = CodeError;
    fn from_str(s: &str) -> Result<Self, CodeError> {
        decode(Kind::Seed, s).map(|k| SeedCode(Address(k)))
    }
}

/// A space's secret as text for members' devices: `invite-xxxxx-…`. Whoever has it can read
/// and write the space.
#[derive(Clone, PartialEq, Eq)]
pub struct InviteCode(SpaceSecret);

impl std::fmt::Debug for InviteCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InviteCode(…)")
    }
}

impl InviteCode {
    pub fn new(secret: &SpaceSecret) -> Self {
        InviteCode(secret.clone())
    }
    pub fn secret(&self) -> SpaceSecret {
        self.0.clone()
    }
}

impl std::fmt::Display for InviteCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&encode(Kind::Invite, self.0.as_bytes()))
    }
}

impl std::str::FromStr for InviteCode {
    type Err = CodeError;
    fn from_str(s: &str) -> Result<Self, CodeError> {
        let key = zeroize::Zeroizing::new(decode(Kind::Invite, s)?);
        Ok(InviteCode(SpaceSecret::from_bytes(*key)))
    }
}
