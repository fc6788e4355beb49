/*!
Who may use the admin site: the stored settings (password hash, API tokens, device name),
sessions, CSRF tokens and the login rate limiter. Pure bookkeeping with an injected clock, so
expiry and backoff are tested without waiting.

Not for: HTTP. Handlers turn cookies and headers into the values these functions take.
*/

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use rand::RngCore;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// A session ends after this long without a request.
pub const SESSION_IDLE: Duration = Duration::from_secs(2 * 60 * 60);
/// And after this long in any case.
pub const SESSION_MAX: Duration = Duration::from_secs(24 * 60 * 60);
/// Sessions kept at once; the oldest goes first. An office has a few admins with a few devices.
pub const MAX_SESSIONS: usize = 32;
/// Clients the rate limiter remembers; beyond it the quietest is forgotten. Bounds what a
/// flood of source addresses can make us hold.
pub const MAX_TRACKED_CLIENTS: usize = 1024;
/// Failed attempts allowed before the backoff starts.
pub const FREE_FAILURES: u32 = 3;
/// Longest wait imposed between attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// API tokens kept at once.
pub const MAX_TOKENS: usize = 16;
/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 10;
/// Longest password accepted (argon2 would take more, but there is no reason to).
pub const MAX_PASSWORD_BYTES: usize = 256;

/// Errors of this layer; messages are for the person at the page.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthError {
    #[error("the password needs at least {MIN_PASSWORD_CHARS} characters")]
    PasswordTooShort,
    #[error("the password is too long (at most {MAX_PASSWORD_BYTES} bytes)")]
    PasswordTooLong,
    #[error("the two passwords differ")]
    PasswordsDiffer,
    #[error("cannot hash the password: {0}")]
    Hash(String),
    #[error("the stored settings are unreadable: {0}")]
    Settings(String),
}

/// An API token as stored: only its hash.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredToken {
    pub id: u64,
    pub name: String,
    /// BLAKE3 of the token, hex.
    pub hash: String,
    /// Unix seconds.
    pub created: u64,
}

/// The site's persistent settings, kept by the backend as a JSON blob.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SiteSettings {
    pub device_name: String,
    /// argon2id PHC string; `None` until the device is claimed.
    pub password_hash: Option<String>,
    /// Bumped by every password change or reset: sessions of an older generation are over.
    pub generation: u64,
    pub tokens: Vec<StoredToken>,
    pub next_token_id: u64,
}

impl Default for SiteSettings {
    fn default() -> SiteSettings {
        SiteSettings {
            device_name: "seeder".into(),
            password_hash: None,
            generation: 0,
            tokens: Vec::new(),
            next_token_id: 1,
        }
    }
}

impl SiteSettings {
    pub fn claimed(&self) -> bool {
        self.password_hash.is_some()
    }

    pub fn decode(blob: Option<&[u8]>) -> Result<SiteSettings, AuthError> {
        match blob {
            None => Ok(SiteSettings::default()),
            Some(b) => serde_json::from_slice(b).map_err(|e| AuthError::Settings(e.to_string())),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("settings serialize")
    }

    /// The token's id if `token` is one of ours.
    pub fn token_id(&self, token: &str) -> Option<u64> {
        let hash = blake3::hash(token.as_bytes());
        let hex = hash.to_hex();
        self.tokens
            .iter()
            .find(|t| bool::from(t.hash.as_bytes().ct_eq(hex.as_bytes())))
            .map(|t| t.id)
    }

    /// Make a new token; returns it (shown once) and keeps only its hash.
    pub fn create_token(&mut self, name: &str, now_unix: u64) -> Result<String, String> {
        let name = name.trim();
        if name.is_empty() || name.len() > 64 {
            return Err("give the token a name of 1 to 64 characters".into());
        }
        if self.tokens.len() >= MAX_TOKENS {
            return Err(format!(
                "at most {MAX_TOKENS} tokens; revoke one you no longer use"
            ));
        }
        let token = format!("sdr_{}", random_hex(24));
        self.tokens.push(StoredToken {
            id: self.next_token_id,
            name: name.to_string(),
            hash: blake3::hash(token.as_bytes()).to_hex().to_string(),
            created: now_unix,
        });
        self.next_token_id += 1;
        Ok(token)
    }

    /// Forget the password and every token: the device is unclaimed again and every session
    /// ends. For `seeder ctl reset-password`.
    pub fn unclaim(&mut self) {
        self.password_hash = None;
        self.tokens.clear();
        self.generation += 1;
    }
}

/// Clear the password of a stored settings blob (see [`SiteSettings::unclaim`]).
pub fn unclaim_blob(blob: Option<&[u8]>) -> Result<Vec<u8>, AuthError> {
    let mut s = SiteSettings::decode(blob)?;
    s.unclaim();
    Ok(s.encode())
}

/// Check a new password's shape.
pub fn check_new_password(password: &str, again: &str) -> Result<(), AuthError> {
    if password != again {
        return Err(AuthError::PasswordsDiffer);
    }
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(AuthError::PasswordTooShort);
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(AuthError::PasswordTooLong);
    }
    Ok(())
}

/// argon2id with the crate's defaults (19 MiB, 2 passes): about half a second on the board.
/// Slow on purpose; call it off the async runtime.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// Whether `password` matches the stored hash. Slow on purpose; call it off the runtime.
pub fn verify_password(password: &str, hash: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    match PasswordHash::new(hash) {
        Ok(parsed) => argon2::Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// `n` random bytes as hex.
pub fn random_hex(n: usize) -> String {
    let mut raw = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    hex::encode(raw)
}

/// Compare secrets without leaking where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A logged-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// Public handle for the settings page ("log out that one"); not the cookie.
    pub id: u64,
    pub csrf: String,
    pub created: Instant,
    pub last_seen: Instant,
    pub generation: u64,
    pub client: Option<IpAddr>,
    pub agent: String,
    /// One message to show on the next page ("space added").
    pub flash: Option<Flash>,
}

/// A message carried to the next page after a redirect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flash {
    pub error: bool,
    pub text: String,
}

/// Live sessions, keyed by the BLAKE3 hash of the cookie value (so a memory dump doesn't give
/// working cookies away).
#[derive(Default)]
pub struct Sessions {
    by_hash: HashMap<[u8; 32], Session>,
    next_id: u64,
}

impl Sessions {
    /// Start a session; returns the cookie value.
    pub fn create(
        &mut self,
        now: Instant,
        generation: u64,
        client: Option<IpAddr>,
        agent: &str,
    ) -> (String, Session) {
        self.expire(now, generation);
        while self.by_hash.len() >= MAX_SESSIONS {
            let oldest = self
                .by_hash
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(k, _)| *k);
            match oldest {
                Some(k) => {
                    self.by_hash.remove(&k);
                }
                None => break,
            }
        }
        let cookie = random_hex(32);
        self.next_id += 1;
        let session = Session {
            id: self.next_id,
            csrf: random_hex(24),
            created: now,
            last_seen: now,
            generation,
            client,
            agent: agent.chars().take(120).collect(),
            flash: None,
        };
        self.by_hash
            .insert(*blake3::hash(cookie.as_bytes()).as_bytes(), session.clone());
        (cookie, session)
    }

    /// The session for `cookie`, if it's alive; touching it extends its idle time.
    pub fn touch(&mut self, cookie: &str, now: Instant, generation: u64) -> Option<&mut Session> {
        self.expire(now, generation);
        let key = *blake3::hash(cookie.as_bytes()).as_bytes();
        let s = self.by_hash.get_mut(&key)?;
        s.last_seen = now;
        Some(s)
    }

    pub fn remove(&mut self, cookie: &str) {
        self.by_hash
            .remove(blake3::hash(cookie.as_bytes()).as_bytes());
    }

    /// End every session but `keep`.
    pub fn remove_others(&mut self, keep: u64) -> usize {
        let before = self.by_hash.len();
        self.by_hash.retain(|_, s| s.id == keep);
        before - self.by_hash.len()
    }

    pub fn list(&self) -> Vec<Session> {
        let mut v: Vec<_> = self.by_hash.values().cloned().collect();
        v.sort_by_key(|s| s.id);
        v
    }

    fn expire(&mut self, now: Instant, generation: u64) {
        self.by_hash.retain(|_, s| {
            s.generation == generation
                && now.saturating_duration_since(s.last_seen) < SESSION_IDLE
                && now.saturating_duration_since(s.created) < SESSION_MAX
        });
    }
}

#[derive(Debug, Clone, Copy)]
struct Attempts {
    failures: u32,
    not_before: Instant,
    last: Instant,
}

/// Failed password or setup-code attempts per client address, with exponential backoff:
/// the first [`FREE_FAILURES`] are free, then each failure doubles the wait (1 s, 2 s, 4 s …
/// up to [`MAX_BACKOFF`]). A success clears the client's record.
#[derive(Default)]
pub struct Limiter {
    clients: HashMap<IpAddr, Attempts>,
}

/// Whose attempts count together: an IPv4 address, or an IPv6 /64 (one host can use every
/// address of its /64, so counting them apart would give it billions of free tries).
fn client_key(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

impl Limiter {
    /// Start an attempt of `client`: `Err(wait)` if it must wait, else the attempt is counted
    /// now, as if it fails (a success clears it), so that attempts made at once can't all pass
    /// the check before the first of them is counted.
    pub fn begin(&mut self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        self.check(client, now)?;
        self.failed(client, now);
        Ok(())
    }

    /// `Err(wait)` if `client` must wait before trying again.
    pub fn check(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        match self.clients.get(&client_key(client)) {
            Some(a) if a.not_before > now => Err(a.not_before - now),
            _ => Ok(()),
        }
    }

    pub fn failed(&mut self, client: IpAddr, now: Instant) {
        let client = client_key(client);
        if !self.clients.contains_key(&client) && self.clients.len() >= MAX_TRACKED_CLIENTS {
            let quietest = self
                .clients
                .iter()
                .min_by_key(|(_, a)| a.last)
                .map(|(k, _)| *k);
            if let Some(k) = quietest {
                self.clients.remove(&k);
            }
        }
        let a = self.clients.entry(client).or_insert(Attempts {
            failures: 0,
            not_before: now,
            last: now,
        });
        a.failures += 1;
        a.last = now;
        if a.failures > FREE_FAILURES {
            let exp = (a.failures - FREE_FAILURES - 1).min(16);
            let wait = Duration::from_secs(1u64 << exp).min(MAX_BACKOFF);
            a.not_before = now + wait;
        }
    }

    pub fn succeeded(&mut self, client: IpAddr) {
        self.clients.remove(&client_key(client));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn one_ipv6_host_is_one_client_whatever_its_interface_id() {
        let mut l = Limiter::default();
        let now = Instant::now();
        for i in 0..=FREE_FAILURES {
            let addr: IpAddr = format!("2001:db8:1:2::{:x}", i + 1).parse().unwrap();
            l.begin(addr, now).unwrap();
        }
        let another: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert!(l.check(another, now).is_err(), "the same /64 waits");
        let elsewhere: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(l.check(elsewhere, now).is_ok());
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        l.failed(ip(1), now);
        assert_eq!(l.check(mapped, now), l.check(ip(1), now));
    }

    #[test]
    fn backoff_starts_after_free_failures_and_doubles_up_to_the_cap() {
        let mut l = Limiter::default();
        let t = Instant::now();
        for _ in 0..FREE_FAILURES {
            l.failed(ip(1), t);
            assert!(l.check(ip(1), t).is_ok());
        }
        l.failed(ip(1), t);
        assert_eq!(l.check(ip(1), t), Err(Duration::from_secs(1)));
        l.failed(ip(1), t);
        assert_eq!(l.check(ip(1), t), Err(Duration::from_secs(2)));
        for _ in 0..40 {
            l.failed(ip(1), t);
        }
        assert_eq!(l.check(ip(1), t), Err(MAX_BACKOFF));
        assert!(l.check(ip(2), t).is_ok(), "other clients are not affected");
        assert!(l.check(ip(1), t + MAX_BACKOFF).is_ok());
        l.succeeded(ip(1));
        assert!(l.check(ip(1), t).is_ok());
    }

    #[test]
    fn the_limiter_forgets_the_quietest_client_when_full() {
        let mut l = Limiter::default();
        let t = Instant::now();
        for i in 0..MAX_TRACKED_CLIENTS as u32 + 10 {
            let addr = IpAddr::from((0x0a00_0000u32 + i).to_be_bytes());
            l.failed(addr, t + Duration::from_millis(u64::from(i)));
        }
        assert_eq!(l.clients.len(), MAX_TRACKED_CLIENTS);
    }

    #[test]
    fn sessions_expire_when_idle_too_long_or_after_a_password_change() {
        let mut s = Sessions::default();
        let t = Instant::now();
        let (cookie, _) = s.create(t, 0, None, "test");
        assert!(s.touch(&cookie, t + SESSION_IDLE / 2, 0).is_some());
        assert!(s.touch(&cookie, t + SESSION_IDLE, 0).is_some());
        assert!(s
            .touch(&cookie, t + SESSION_IDLE * 2 + SESSION_IDLE, 0)
            .is_none());
        let (cookie, _) = s.create(t, 0, None, "test");
        assert!(s.touch(&cookie, t, 1).is_none(), "new generation ends it");
        let (cookie, _) = s.create(t, 0, None, "test");
        let mut at = t;
        while at < t + SESSION_MAX - SESSION_IDLE / 2 {
            at += SESSION_IDLE / 2;
            assert!(s.touch(&cookie, at, 0).is_some());
        }
        assert!(
            s.touch(&cookie, t + SESSION_MAX, 0).is_none(),
            "absolute limit"
        );
    }

    #[test]
    fn at_most_max_sessions_are_kept() {
        let mut s = Sessions::default();
        let t = Instant::now();
        let (first, _) = s.create(t, 0, None, "a");
        for i in 0..MAX_SESSIONS as u64 {
            s.create(t + Duration::from_secs(i + 1), 0, None, "b");
        }
        assert_eq!(s.list().len(), MAX_SESSIONS);
        assert!(s.touch(&first, t + Duration::from_secs(100), 0).is_none());
    }

    #[test]
    fn passwords_hash_and_verify_and_bad_hashes_never_match() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse batterz", &h));
        assert!(!verify_password("x", "not a hash"));
        assert_eq!(
            check_new_password("short", "short"),
            Err(AuthError::PasswordTooShort)
        );
        assert_eq!(
            check_new_password("long enough!", "long enough?"),
            Err(AuthError::PasswordsDiffer)
        );
    }

    #[test]
    fn tokens_are_kept_only_as_hashes() {
        let mut s = SiteSettings::default();
        let token = s.create_token("prometheus", 1).unwrap();
        assert_eq!(s.token_id(&token), Some(1));
        assert_eq!(s.token_id("sdr_wrong"), None);
        assert!(!String::from_utf8(s.encode()).unwrap().contains(&token));
        let blob = unclaim_blob(Some(&s.encode())).unwrap();
        let after = SiteSettings::decode(Some(&blob)).unwrap();
        assert!(after.tokens.is_empty());
        assert_eq!(after.generation, 1);
    }
}
