//! SSH public keys as the admin pastes them: which lines are keys, and how to show one.
//!
//! For checking shape only (type, base64 blob whose embedded type matches, a printable comment),
//! so a typo is caught on the page with a clear message. Not a verifier of key material: the
//! device's root-side helper runs `ssh-keygen -l` on every line again before installing it.

use base64::Engine;

/// At most this many keys: a handful of admins, and a bound on what the page stores.
pub const MAX_KEYS: usize = 8;
/// The longest line accepted: an RSA-8192 key with a comment fits.
const MAX_LINE: usize = 2048;

/// Key types OpenSSH accepts for login, as written at the start of a `.pub` line.
const TYPES: &[&str] = &[
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-rsa",
];

/// Read pasted public keys, one per line (blank lines and `#` comments skipped). Returns the
/// keys normalised to `TYPE BASE64 [COMMENT]`, or a message naming the first bad line.
pub fn parse_keys(text: &str) -> Result<Vec<String>, String> {
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let n = i + 1;
        if line.len() > MAX_LINE {
            return Err(format!("line {n} is too long for a public key"));
        }
        let mut parts = line.split_whitespace();
        let kind = parts.next().unwrap_or_default();
        if !TYPES.contains(&kind) {
            return Err(format!(
                "line {n} does not start with a key type (like ssh-ed25519): paste the \
                 contents of a .pub file, such as ~/.ssh/id_ed25519.pub"
            ));
        }
        let blob = parts.next().unwrap_or_default();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(blob)
            .map_err(|_| format!("line {n}: the key is cut or mistyped (not base64)"))?;
        if !whole_fields(&raw) {
            return Err(format!("line {n}: the key is cut or mistyped"));
        }
        if embedded_type(&raw) != Some(kind) {
            return Err(format!("line {n}: the key does not match its type {kind}"));
        }
        let comment = parts.collect::<Vec<_>>().join(" ");
        if comment.chars().any(char::is_control) {
            return Err(format!("line {n}: the comment has control characters"));
        }
        let key = if comment.is_empty() {
            format!("{kind} {blob}")
        } else {
            format!("{kind} {blob} {comment}")
        };
        if !keys.contains(&key) {
            keys.push(key);
        }
        if keys.len() > MAX_KEYS {
            return Err(format!("at most {MAX_KEYS} keys"));
        }
    }
    Ok(keys)
}

/// A key blob is a sequence of (u32 length, bytes) fields; a cut one ends mid-field.
fn whole_fields(mut raw: &[u8]) -> bool {
    let mut fields = 0;
    while !raw.is_empty() {
        let Some(len) = raw
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
        else {
            return false;
        };
        let Some(rest) = raw.get(4 + len as usize..) else {
            return false;
        };
        raw = rest;
        fields += 1;
    }
    fields >= 2
}

/// The type name an SSH public key blob starts with (a u32 length, then the name).
fn embedded_type(raw: &[u8]) -> Option<&str> {
    let len = u32::from_be_bytes(raw.get(..4)?.try_into().ok()?) as usize;
    std::str::from_utf8(raw.get(4..4 + len)?).ok()
}

/// How a key is shown: its type, the end of its blob, and its comment.
pub fn short(key: &str) -> String {
    let mut parts = key.split_whitespace();
    let kind = parts.next().unwrap_or_default();
    let blob = parts.next().unwrap_or_default();
    let tail = &blob[blob.len().saturating_sub(12)..];
    let comment = parts.collect::<Vec<_>>().join(" ");
    format!("{kind} …{tail} {comment}").trim_end().to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    // ssh-keygen -t ed25519 -C admin@laptop (public half only)
    const ED: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIwnWsr/fUQ15eEir+ie9Z+yETlvZOCTfS3q9GOHyrSm admin@laptop";

    #[test]
    fn a_pasted_public_key_is_taken_and_normalised() {
        let keys = parse_keys(&format!("\n# mine\n  {ED}  \n{ED}\n")).unwrap();
        assert_eq!(keys, vec![ED.to_string()]);
        assert_eq!(short(ED), "ssh-ed25519 …fS3q9GOHyrSm admin@laptop");
    }

    #[test]
    fn a_private_key_a_typo_or_a_wrong_type_is_refused_with_the_line() {
        let e = parse_keys("-----BEGIN OPENSSH PRIVATE KEY-----").unwrap_err();
        assert!(e.contains("line 1") && e.contains(".pub"), "{e}");
        let cut = &ED[..44];
        assert!(parse_keys(cut).unwrap_err().contains("cut or mistyped"));
        let wrong = ED.replacen("ssh-ed25519", "ssh-rsa", 1);
        assert!(parse_keys(&wrong).unwrap_err().contains("does not match"));
        let many = (0..=MAX_KEYS)
            .map(|i| format!("{ED} k{i}"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(parse_keys(&many).unwrap_err().contains("at most"));
    }
}
