/*!
Paths inside a space: validated, canonical, `/`-separated and relative.

A [`Path`] is what every record names and what the merged view is keyed by. It is never a local
file-system path: turning a local path into one (and back) is the CLI's business, including
Unicode normalisation and case-insensitive file systems, which this layer does not try to solve.

Invariants of every `Path` value, checked by [`Path::new`] and by deserialisation:
- at most [`MAX_PATH_LEN`] bytes, at least one component;
- components separated by single `/`, no leading or trailing `/` (so no absolute paths and no
  empty components);
- no component is `.` or `..`, none is longer than [`MAX_COMPONENT_LEN`] bytes;
- no NUL byte anywhere.

A path a person gives ([`Path::new`], [`FromStr`]) also holds no control character (a newline,
a tab, an escape sequence): such a name would print as two lines or recolour a terminal.
Records from other members are read with the rules above only, so a name written by an older
or foreign client is still shown and can still be fetched, renamed or deleted; anything that
prints a path to a person uses [`Path::shown`], which escapes control characters.

So every path is already in its one canonical spelling: two `Path`s name the same file iff their
strings are equal, and the byte order of the strings keeps every directory's contents together
(all paths below `a/b/` form one contiguous range), which the view's listings rely on.
*/

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::FsError;

/// Longest path in bytes: Linux's `PATH_MAX`, so any stored path can be written out locally.
pub const MAX_PATH_LEN: usize = 4096;

/// Longest component in bytes: `NAME_MAX` of ext4, btrfs, APFS and NTFS-in-UTF-16 alike.
pub const MAX_COMPONENT_LEN: usize = 255;

/// A validated relative path inside a space, such as `reports/2024/q1.pdf`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Path(String);

impl Path {
    /// Check `s` and make it a path. Nothing is normalised: a non-canonical spelling (`a//b`,
    /// `./a`, `a/`) is refused with the reason, so a path has exactly one spelling.
    pub fn new(s: &str) -> Result<Path, FsError> {
        check(s)?;
        if s.chars().any(misleads) {
            // The message quotes it with `{:?}`, which escapes the control characters.
            return Err(bad(
                s,
                "contains a control character (a newline, tab or escape) or a text-direction override",
            ));
        }
        Ok(Path(s.to_owned()))
    }

    /// The path for a person to read: as it is, but with control characters escaped (`\n`,
    /// `\u{1b}`), so a name can neither break a listing into lines nor drive a terminal.
    pub fn shown(&self) -> Shown<'_> {
        shown(&self.0)
    }

    /// Any text from a member (a device name, say) escaped the way [`Path::shown`] does.
    pub fn escape(text: &str) -> Shown<'_> {
        shown(text)
    }

    /// The path as a string, `/`-separated.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The components, first to last; never empty.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The last component.
    pub fn file_name(&self) -> &str {
        match self.0.rfind('/') {
            Some(i) => &self.0[i + 1..],
            None => &self.0,
        }
    }

    /// The directory holding this path, `None` for a top-level name.
    pub fn parent(&self) -> Option<Path> {
        self.0.rfind('/').map(|i| Path(self.0[..i].to_owned()))
    }

    /// `self/name`, where `name` may itself hold several components (`"b/c"`).
    pub fn join(&self, name: &str) -> Result<Path, FsError> {
        Path::new(&format!("{}/{name}", self.0))
    }

    /// Whether `self` lies strictly below the directory `dir` (`a/b` is below `a`, `a` is not
    /// below `a`, `ab` is not below `a`).
    pub fn is_below(&self, dir: &Path) -> bool {
        self.0.len() > dir.0.len()
            && self.0.starts_with(dir.0.as_str())
            && self.0.as_bytes()[dir.0.len()] == b'/'
    }

    /// Whether `self` is `dir` itself or lies below it.
    pub fn is_at_or_below(&self, dir: &Path) -> bool {
        self == dir || self.is_below(dir)
    }
}

/// Characters a name may not hold when a person gives it, and that are escaped when shown:
/// control characters (a newline breaks a listing into lines, an escape sequence drives the
/// terminal) and the bidirectional overrides and isolates, which make `invoice\u{202e}fdp.exe`
/// read as `invoiceexe.pdf`.
fn misleads(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// A path as printed for a person; see [`Path::shown`].
pub struct Shown<'a>(&'a str);

fn shown(s: &str) -> Shown<'_> {
    Shown(s)
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if misleads(c) {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

fn bad(path: &str, reason: &'static str) -> FsError {
    FsError::BadPath {
        path: path.to_owned(),
        reason,
    }
}

fn check(s: &str) -> Result<(), FsError> {
    if s.is_empty() {
        return Err(bad(s, "empty"));
    }
    if s.len() > MAX_PATH_LEN {
        // Quote only the start: the message must stay readable.
        let mut end = 64;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        return Err(FsError::BadPath {
            path: format!("{}…", &s[..end]),
            reason: "longer than 4096 bytes",
        });
    }
    if s.contains('\0') {
        return Err(bad(s, "contains a NUL byte"));
    }
    if s.starts_with('/') {
        return Err(bad(s, "absolute; paths are relative to the space"));
    }
    for component in s.split('/') {
        match component {
            "" => return Err(bad(s, "empty component (doubled or trailing '/')")),
            "." | ".." => return Err(bad(s, "'.' and '..' components are not allowed")),
            c if c.len() > MAX_COMPONENT_LEN => {
                return Err(bad(s, "a component is longer than 255 bytes"))
            }
            _ => {}
        }
    }
    Ok(())
}

impl TryFrom<String> for Path {
    type Error = FsError;
    fn try_from(s: String) -> Result<Self, FsError> {
        check(&s)?;
        Ok(Path(s))
    }
}

impl From<Path> for String {
    fn from(p: Path) -> String {
        p.0
    }
}

impl FromStr for Path {
    type Err = FsError;
    fn from_str(s: &str) -> Result<Self, FsError> {
        Path::new(s)
    }
}

impl AsRef<str> for Path {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Lets maps keyed by `Path` be searched with a `&str`; `Eq`, `Ord` and `Hash` are the
/// string's, as `Borrow` requires.
impl Borrow<str> for Path {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Path({:?})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(s: &str) -> &'static str {
        match Path::new(s) {
            Err(FsError::BadPath { reason, .. }) => reason,
            other => panic!("{s:?} should be refused, got {other:?}"),
        }
    }

    #[test]
    fn ordinary_paths_are_accepted_unchanged() {
        for s in [
            "a",
            "a/b",
            "docs/2024/q1 report.pdf",
            "é/ü",
            ".hidden",
            "a/..b",
            "a/b.",
        ] {
            assert_eq!(Path::new(s).expect("valid").as_str(), s);
        }
    }

    #[test]
    fn empty_and_absolute_paths_are_refused() {
        assert_eq!(reason(""), "empty");
        assert!(reason("/a").contains("absolute"));
        assert!(reason("/").contains("absolute"));
    }

    #[test]
    fn empty_components_are_refused() {
        for s in ["a//b", "a/", "a/b/"] {
            assert!(reason(s).contains("empty component"), "{s}");
        }
    }

    #[test]
    fn dot_and_dot_dot_components_are_refused() {
        for s in [".", "..", "./a", "a/.", "a/../b", "../etc/passwd", "a/.."] {
            assert!(reason(s).contains("'..'"), "{s}");
        }
    }

    #[test]
    fn control_characters_are_refused_from_people_and_escaped_when_shown() {
        for s in [
            "a\nb.txt",
            "tab\there",
            "esc\u{1b}[31mred",
            "del\u{7f}",
            "c1\u{85}",
        ] {
            assert!(reason(s).contains("control character"), "{s:?}");
        }
        let err = Path::new("a\nb.txt").expect_err("refused").to_string();
        assert!(!err.contains('\n'), "the message is one line: {err}");
        // A member's record may still carry one (an older client wrote it): it is read, and
        // shown escaped.
        let old: Path = serde_json::from_str("\"notes\\n\\u001b[2Jx.txt\"").expect("read");
        assert_eq!(old.as_str(), "notes\n\u{1b}[2Jx.txt");
        let shown = old.shown().to_string();
        assert_eq!(shown, "notes\\n\\u{1b}[2Jx.txt");
        assert!(!shown.chars().any(char::is_control));
        let rtl: Path = serde_json::from_str("\"invoice\\u202efdp.exe\"").expect("read");
        assert_eq!(rtl.shown().to_string(), "invoice\\u{202e}fdp.exe");
        assert_eq!(
            Path::new("plain é.txt").expect("valid").shown().to_string(),
            "plain é.txt"
        );
    }

    #[test]
    fn nul_bytes_are_refused() {
        assert!(reason("a\0b").contains("NUL"));
    }

    #[test]
    fn over_long_paths_and_components_are_refused() {
        let long_name = "x".repeat(MAX_COMPONENT_LEN + 1);
        assert!(reason(&long_name).contains("255"));
        assert!(Path::new(&"x".repeat(MAX_COMPONENT_LEN)).is_ok());

        let component = "y".repeat(100);
        let mut at_limit = vec![component.as_str(); 41].join("/"); // 41 * 101 - 1 = 4140
        at_limit.truncate(MAX_PATH_LEN);
        assert!(!at_limit.ends_with('/'));
        assert!(Path::new(&at_limit).is_ok());
        let over = format!("{at_limit}z");
        match Path::new(&over) {
            Err(FsError::BadPath { path, reason }) => {
                assert!(reason.contains("4096"));
                assert!(path.len() < 100, "the message quotes only the start");
            }
            other => panic!("expected refusal, got {other:?}"),
        }
    }

    #[test]
    fn error_message_quotes_the_path() {
        let err = Path::new("a/../b").expect_err("refused");
        assert!(err.to_string().contains("\"a/../b\""), "{err}");
    }

    #[test]
    fn parent_file_name_and_join() {
        let p = Path::new("a/b/c.txt").expect("valid");
        assert_eq!(p.file_name(), "c.txt");
        assert_eq!(p.parent(), Some(Path::new("a/b").expect("valid")));
        assert_eq!(Path::new("top").expect("valid").parent(), None);
        let a = Path::new("a").expect("valid");
        assert_eq!(
            a.join("b/c.txt")
                .expect("valid")
                .parent()
                .expect("has parent")
                .as_str(),
            "a/b"
        );
        assert!(a.join("../x").is_err());
        assert_eq!(p.components().collect::<Vec<_>>(), ["a", "b", "c.txt"]);
    }

    #[test]
    fn below_means_inside_the_directory() {
        let a = Path::new("a").expect("valid");
        assert!(Path::new("a/b").expect("valid").is_below(&a));
        assert!(!a.is_below(&a));
        assert!(a.is_at_or_below(&a));
        assert!(!Path::new("ab").expect("valid").is_below(&a));
        assert!(!Path::new("ab/c").expect("valid").is_at_or_below(&a));
    }

    #[test]
    fn deserialising_validates() {
        let good = postcard::to_allocvec("a/b").expect("encode");
        assert_eq!(
            postcard::from_bytes::<Path>(&good)
                .expect("decode")
                .as_str(),
            "a/b"
        );
        let bad = postcard::to_allocvec("a/../b").expect("encode");
        assert!(postcard::from_bytes::<Path>(&bad).is_err());
    }
}
