//! Request-path normalisation: one spelling per path, so that the string the access
//! rules are checked against is exactly the string forwarded upstream.
//!
//! Proxies that match on one spelling of a path and forward another have been bypassed
//! again and again: percent-encoded letters and dots (`/%72ecordings`, `/%2e%2e/`),
//! encoded separators (`%2f`, `%5c`) that the upstream decodes after the check,
//! path parameters (`/public;/../x`, Tomcat's `;jsessionid`), double decoding
//! (`%252e`), overlong UTF-8 (`%c0%af`), NUL truncation. See the advisories behind
//! SECURITY-TESTS 1–9 (Authelia, oauth2-proxy, Pomerium, Traefik, ingress-nginx).
//!
//! The approach is RFC 3986 §6.2.2 syntax-based normalisation, plus refusal of
//! everything that an upstream may reasonably read in more than one way:
//! * §6.2.2.2: percent-encoded unreserved characters (ALPHA DIGIT `-._~`) are
//!   decoded; every other escape is kept, with upper-case hex (§6.2.2.1).
//! * §6.2.2.3 / §5.2.4: `.` and `..` segments are removed (after the decoding above,
//!   so `%2e%2E` is `..`), and `//` collapses to `/`. `..` above the root is refused
//!   rather than clamped: servers disagree on what it means.
//! * Refused: encoded `/` or `\`, a literal `\`, control characters raw or encoded
//!   (`%00`, C1 controls), `;` raw or encoded, `#`, `?` (the caller splits the query
//!   off first), malformed escapes, decoded bytes that are not UTF-8 (this covers
//!   overlong encodings), and anything not starting with `/` (including `*`).
//! * Decoding happens once: `%25` is not unreserved, so `%252e` stays `%252e`.
//! * Characters outside the URI syntax (non-ASCII, space, `"<>[]^`{|}`) are
//!   percent-encoded, never folded: a fullwidth `ｒ` stays `%EF%BD%92`, not `r`.

use std::fmt;

/// A request path in its one normal spelling. `as_str()` is both what the access
/// rules see and what is forwarded upstream (followed by the original query).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NormalPath(String);

/// A path prefix from the configuration, in normal form. Matching is segment-aware:
/// `/recordings/` and `/recordings` both match `/recordings`, `/recordings/` and
/// `/recordings/x`, never `/recordingsX`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PathPrefix {
    /// As configured, e.g. `/recordings/`.
    written: String,
    /// Without the trailing slash (`/recordings`; empty for `/`).
    base: String,
}

/// Why a path was refused. Every variant means "400, never forwarded".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path does not start with '/'")]
    NotAbsolute,
    #[error("path contains an encoded '/' (%2F)")]
    EncodedSlash,
    #[error("path contains an encoded '\\' (%5C)")]
    EncodedBackslash,
    #[error("path contains a '\\'")]
    Backslash,
    #[error("path contains a control character")]
    ControlCharacter,
    #[error("path contains ';' (path parameters are not accepted)")]
    PathParameter,
    #[error("path contains '#' (a fragment is never part of a request)")]
    Fragment,
    #[error("path contains '?' (the query must be split off first)")]
    QueryNotSplit,
    #[error("path contains an invalid percent-escape")]
    InvalidEscape,
    #[error("path does not decode to valid UTF-8")]
    InvalidUtf8,
    #[error("path climbs above the root with '..'")]
    AboveRoot,
}

/// Bring `raw_path` (the request-target path, without query) into its normal form, or
/// refuse it. See the module documentation for the rules.
pub fn normalise(raw_path: &str) -> Result<NormalPath, PathError> {
    if !raw_path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    // Most paths are normal already: one copy instead of four allocations.
    if already_normal(raw_path) {
        return Ok(NormalPath(raw_path.to_string()));
    }
    let canonical = canonical_escapes(raw_path)?;
    remove_dot_segments(&canonical).map(NormalPath)
}

/// Whether `normalise` would return `path` unchanged because there is nothing
/// in it to rewrite or refuse: only characters kept as written (no escapes,
/// no non-ASCII, nothing refused), and no empty, `.` or `..` segment except
/// an empty last one (a trailing slash). `path` starts with '/'.
fn already_normal(path: &str) -> bool {
    let plain = path
        .bytes()
        .all(|b| b == b'/' || is_unreserved(u32::from(b)) || is_kept_raw(b));
    if !plain {
        return false;
    }
    let mut segments = path[1..].split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if segment == "." || segment == ".." || (segment.is_empty() && !last) {
            return false;
        }
    }
    true
}

impl NormalPath {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Segments between slashes; a trailing slash yields a final empty segment.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0[1..].split('/')
    }

    /// Whether this path lies inside `prefix` (see [`PathPrefix`]). With
    /// `case_insensitive`, ASCII letters compare without case; escapes are upper-case
    /// hex on both sides and non-ASCII is always escaped, so ASCII folding is complete
    /// and no Unicode folding ever happens.
    pub fn is_within(&self, prefix: &PathPrefix, case_insensitive: bool) -> bool {
        let path = self.0.as_bytes();
        let base = prefix.base.as_bytes();
        if path.len() < base.len() {
            return false;
        }
        let (head, rest) = path.split_at(base.len());
        let same = if case_insensitive {
            head.eq_ignore_ascii_case(base)
        } else {
            head == base
        };
        same && (rest.is_empty() || rest[0] == b'/')
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for NormalPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for NormalPath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for NormalPath {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for NormalPath {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// Why a configured prefix cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    #[error("{0}")]
    Path(#[from] PathError),
    #[error("{given:?} is not in normal form; write {normal:?}")]
    NotNormal { given: String, normal: String },
    #[error(
        "{given:?} contains {ch:?}, which clients may also send percent-encoded; \
         such prefixes cannot be matched reliably"
    )]
    AmbiguousCharacter { given: String, ch: char },
}

impl PathPrefix {
    /// Accept a configured prefix only if it is already normal and contains nothing
    /// that has two spellings in a normal path. Reserved characters (`!$&'()*+,=:@`)
    /// are kept as written by [`normalise`], so `/a!b` and `/a%21b` stay different
    /// strings while an upstream may decode both to the same resource.
    pub fn parse(text: &str) -> Result<Self, PrefixError> {
        let normal = normalise(text)?;
        if normal.as_str() != text {
            return Err(PrefixError::NotNormal {
                given: text.to_owned(),
                normal: normal.into_string(),
            });
        }
        if let Some(ch) = two_spelling_character(text) {
            return Err(PrefixError::AmbiguousCharacter {
                given: text.to_owned(),
                ch,
            });
        }
        let base = text.trim_end_matches('/').to_owned();
        Ok(Self {
            written: text.to_owned(),
            base,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.written
    }

    /// Longer is more specific; used to pick the most specific area.
    pub fn specificity(&self) -> usize {
        self.base.len()
    }
}

impl fmt::Display for PathPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.written)
    }
}

// ---------------------------------------------------------------------------

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn is_unreserved(c: u32) -> bool {
    matches!(c, 0x41..=0x5A | 0x61..=0x7A | 0x30..=0x39) || matches!(c, 0x2D | 0x2E | 0x5F | 0x7E)
}

/// sub-delims without `;` (refused), plus `:` and `@`: allowed raw in a segment
/// (RFC 3986 §3.3 `pchar`) and kept as written.
fn is_kept_raw(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'=' | b':' | b'@'
    )
}

/// A character kept as written by `normalise` in both its raw and its escaped form.
/// Everything else has one spelling in a normal path: unreserved characters are
/// always decoded, other escapes can never appear raw.
fn two_spelling_character(normal: &str) -> Option<char> {
    let bytes = normal.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex_value)?;
            let lo = bytes.get(i + 2).copied().and_then(hex_value)?;
            let value = (hi << 4) | lo;
            if is_kept_raw(value) {
                return Some(char::from(value));
            }
            i += 3;
        } else {
            if is_kept_raw(bytes[i]) {
                return Some(char::from(bytes[i]));
            }
            i += 1;
        }
    }
    None
}

fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7F
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn push_escaped(out: &mut String, b: u8) {
    out.push('%');
    out.push(char::from(HEX_UPPER[usize::from(b >> 4)]));
    out.push(char::from(HEX_UPPER[usize::from(b & 0x0F)]));
}

/// One pass over the bytes: refuse what is ambiguous, decode escaped unreserved
/// characters, keep other escapes in upper-case hex, escape bytes outside the URI
/// syntax. Along the way collect the fully decoded bytes to check they are UTF-8
/// without control characters, since an upstream decoding the path will see those.
fn canonical_escapes(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut decoded: Vec<u8> = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex_value);
                let lo = bytes.get(i + 2).copied().and_then(hex_value);
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(PathError::InvalidEscape);
                };
                let value = (hi << 4) | lo;
                match value {
                    b'/' => return Err(PathError::EncodedSlash),
                    b'\\' => return Err(PathError::EncodedBackslash),
                    b';' => return Err(PathError::PathParameter),
                    v if is_control(v) => return Err(PathError::ControlCharacter),
                    v if is_unreserved(u32::from(v)) => out.push(char::from(v)),
                    v => push_escaped(&mut out, v),
                }
                decoded.push(value);
                i += 3;
            }
            b'/' => {
                out.push('/');
                decoded.push(b);
                i += 1;
            }
            b'\\' => return Err(PathError::Backslash),
            b';' => return Err(PathError::PathParameter),
            b'#' => return Err(PathError::Fragment),
            b'?' => return Err(PathError::QueryNotSplit),
            _ if is_control(b) => return Err(PathError::ControlCharacter),
            _ if is_unreserved(u32::from(b)) || is_kept_raw(b) => {
                out.push(char::from(b));
                decoded.push(b);
                i += 1;
            }
            // Non-ASCII (the input is a &str, so these bytes are valid UTF-8) and ASCII
            // outside the URI syntax: escape, so the forwarded path is plain ASCII.
            _ => {
                push_escaped(&mut out, b);
                decoded.push(b);
                i += 1;
            }
        }
    }
    // Overlong forms (`%c0%af` for '/'), lone continuation bytes and surrogates are
    // not UTF-8; std's validator refuses all of them.
    let text = std::str::from_utf8(&decoded).map_err(|_| PathError::InvalidUtf8)?;
    // C1 controls (U+0080–U+009F) and NEL arrive as valid UTF-8 escapes.
    if text.chars().any(char::is_control) {
        return Err(PathError::ControlCharacter);
    }
    Ok(out)
}

/// RFC 3986 §5.2.4 over segments, with empty segments dropped (`//` collapse) and
/// `..` above the root refused. The trailing slash is kept, and a final `.` or `..`
/// leaves one (`/a/b/..` is `/a/`), as in the RFC.
fn remove_dot_segments(path: &str) -> Result<String, PathError> {
    let mut stack: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in path[1..].split('/') {
        trailing_slash = false;
        match segment {
            "" => trailing_slash = true,
            "." => trailing_slash = true,
            ".." => {
                if stack.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
                trailing_slash = true;
            }
            other => stack.push(other),
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &stack {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || stack.is_empty() {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic on bad fixtures
mod tests {
    use super::*;
    use PathError::*;

    /// The shortcut for paths that are normal already gives what the full
    /// rules give, on every path of up to five pieces from an alphabet of the
    /// characters and escapes the rules treat specially.
    #[test]
    fn shortcut_for_normal_paths_agrees_with_the_full_rules() {
        const PIECES: &[&str] = &[
            "/", ".", "a", "Z", "~", "!", ":", "%2e", "%2F", "%41", "%", ";", "\\", "é", "\u{1}",
        ];
        fn full(raw: &str) -> Result<NormalPath, PathError> {
            remove_dot_segments(&canonical_escapes(raw)?).map(NormalPath)
        }
        let mut paths = vec![String::from("/")];
        let (mut checked, mut shortcut) = (0, 0);
        for _ in 0..5 {
            let mut next = Vec::new();
            for p in &paths {
                for piece in PIECES {
                    let q = format!("{p}{piece}");
                    if already_normal(&q) {
                        shortcut += 1;
                        assert_eq!(
                            full(&q).as_ref().map(NormalPath::as_str),
                            Ok(q.as_str()),
                            "{q:?}"
                        );
                    }
                    assert_eq!(normalise(&q), full(&q), "{q:?}");
                    checked += 1;
                    next.push(q);
                }
            }
            paths = next;
        }
        assert!(
            checked > 800_000 && shortcut > 10_000,
            "{checked} {shortcut}"
        );
    }

    /// Input → normal form.
    const NORMAL: &[(&str, &str)] = &[
        ("/", "/"),
        ("/recordings/x", "/recordings/x"),
        ("/recordings/", "/recordings/"),
        ("/recordings", "/recordings"),
        ("/Recordings/", "/Recordings/"),
        ("/RECORDINGS/x", "/RECORDINGS/x"),
        // §6.2.2.2: unreserved characters decoded
        ("/%72ecordings/x", "/recordings/x"),
        ("/%72ecordings/", "/recordings/"),
        ("/%41%5a%61%7A%30%39%2D%2E%5F%7E", "/AZaz09-._~"),
        // dot segments and empty segments (SECURITY-TESTS 2, 3)
        ("//recordings/x", "/recordings/x"),
        ("//recordings/", "/recordings/"),
        ("/./recordings/x", "/recordings/x"),
        ("/./recordings/", "/recordings/"),
        ("/public/../recordings/x", "/recordings/x"),
        ("/x/../recordings/", "/recordings/"),
        ("/public/%2e%2e/recordings/x", "/recordings/x"),
        ("/public/.%2e/recordings/x", "/recordings/x"),
        ("/public/%2E%2e/recordings/x", "/recordings/x"),
        ("/public/%2e/recordings/x", "/public/recordings/x"),
        ("/a/b/..", "/a/"),
        ("/a/b/.", "/a/b/"),
        ("/a/b/../..", "/"),
        ("/a//b///c", "/a/b/c"),
        ("/a/b//", "/a/b/"),
        ("///", "/"),
        ("/...", "/..."),
        ("/..a/a..", "/..a/a.."),
        // double encoding is never decoded twice (SECURITY-TESTS 6)
        (
            "/public/%252e%252e/recordings/x",
            "/public/%252e%252e/recordings/x",
        ),
        ("/%252e%252e/", "/%252e%252e/"),
        ("/%2572ecordings/", "/%2572ecordings/"),
        // other escapes are kept, hex upper-cased (§6.2.2.1)
        ("/a%3fb", "/a%3Fb"),
        ("/a%23b", "/a%23b"),
        ("/a%21b", "/a%21b"),
        ("/caf%c3%a9", "/caf%C3%A9"),
        ("/a%20b", "/a%20b"),
        // reserved characters allowed in a segment stay as written
        ("/a!$&'()*+,=:@b", "/a!$&'()*+,=:@b"),
        // characters outside the URI syntax are escaped, never folded (SECURITY-TESTS 8)
        ("/ｒecordings/", "/%EF%BD%92ecordings/"),
        ("/%ef%bd%92ecordings/", "/%EF%BD%92ecordings/"),
        ("/rec\u{200b}ordings/", "/rec%E2%80%8Bordings/"),
        ("/rec%e2%80%8bordings/", "/rec%E2%80%8Bordings/"),
        ("/caf\u{e9}", "/caf%C3%A9"),
        ("/a b", "/a%20b"),
        ("/a\"<>^`{|}[]", "/a%22%3C%3E%5E%60%7B%7C%7D%5B%5D"),
        // U+2215 DIVISION SLASH and U+FF0F FULLWIDTH SOLIDUS are not '/'
        (
            "/public\u{2215}..\u{2215}recordings",
            "/public%E2%88%95..%E2%88%95recordings",
        ),
        (
            "/public%ef%bc%8f..%ef%bc%8frecordings",
            "/public%EF%BC%8F..%EF%BC%8Frecordings",
        ),
    ];

    /// Input → refusal.
    const REFUSED: &[(&str, PathError)] = &[
        // SECURITY-TESTS 4
        ("/public%2f..%2frecordings/x", EncodedSlash),
        ("/recordings%2f", EncodedSlash),
        ("/recordings%2F", EncodedSlash),
        ("/public/..%5crecordings/x", EncodedBackslash),
        ("/public\\..\\recordings\\x", Backslash),
        ("\\recordings\\", NotAbsolute),
        ("/\\recordings", Backslash),
        // SECURITY-TESTS 5
        ("/recordings;jsessionid=1/x", PathParameter),
        ("/public;/../recordings/x", PathParameter),
        ("/recordings;x/", PathParameter),
        ("/recordings%3bx/", PathParameter),
        ("/recordings%3B/", PathParameter),
        // SECURITY-TESTS 7
        ("/x%c0%af..%c0%afrecordings/x", InvalidUtf8),
        ("/%c0%ae%c0%ae/recordings", InvalidUtf8),
        ("/%e0%80%af", InvalidUtf8),
        ("/%ed%a0%80", InvalidUtf8),
        ("/%80", InvalidUtf8),
        ("/%ff", InvalidUtf8),
        ("/caf%c3", InvalidUtf8),
        ("/recordings%00", ControlCharacter),
        ("/recordings%00.html", ControlCharacter),
        ("/a%0d%0aSet-Cookie:x", ControlCharacter),
        ("/a%09b", ControlCharacter),
        ("/a%7f", ControlCharacter),
        ("/a%c2%85", ControlCharacter),
        ("/a%c2%9f", ControlCharacter),
        ("/a\u{0}b", ControlCharacter),
        ("/a\tb", ControlCharacter),
        ("/a\u{85}b", ControlCharacter),
        // SECURITY-TESTS 9
        ("/recordings/x#frag", Fragment),
        ("/recordings#", Fragment),
        ("/recordings?x=1", QueryNotSplit),
        // malformed escapes
        ("/rec%ordings", InvalidEscape),
        ("/rec%zz", InvalidEscape),
        ("/rec%a", InvalidEscape),
        ("/rec%", InvalidEscape),
        ("/rec%%32%65", InvalidEscape),
        // above the root
        ("/..", AboveRoot),
        ("/../recordings/x", AboveRoot),
        ("/%2e%2e/recordings/", AboveRoot),
        ("/a/../../recordings", AboveRoot),
        ("/./../x", AboveRoot),
        // not a path
        ("", NotAbsolute),
        ("*", NotAbsolute),
        ("recordings/x", NotAbsolute),
        ("http://dash.example.com/recordings/x", NotAbsolute),
        ("%2frecordings", NotAbsolute),
    ];

    #[test]
    fn normal_forms() {
        for (raw, expected) in NORMAL {
            match normalise(raw) {
                Ok(path) => assert_eq!(path.as_str(), *expected, "normalise({raw:?})"),
                Err(err) => panic!("normalise({raw:?}) refused: {err}"),
            }
        }
        assert!(NORMAL.len() + REFUSED.len() >= 40);
    }

    #[test]
    fn refusals() {
        for (raw, expected) in REFUSED {
            assert_eq!(normalise(raw), Err(expected.clone()), "normalise({raw:?})");
        }
    }

    #[test]
    fn normal_form_is_a_fixed_point() {
        // What is forwarded, sent through the normaliser again, is unchanged: no second
        // decode can turn it into something else.
        for (_, normal) in NORMAL {
            assert_eq!(normalise(normal).unwrap().as_str(), *normal, "{normal:?}");
        }
    }

    #[test]
    fn forwarded_path_is_plain_ascii() {
        for (raw, _) in NORMAL {
            let path = normalise(raw).unwrap();
            assert!(
                path.as_str().bytes().all(|b| b.is_ascii_graphic()),
                "{raw:?}"
            );
        }
    }

    fn prefix(text: &str) -> PathPrefix {
        PathPrefix::parse(text).unwrap()
    }

    fn within(path: &str, p: &str, ci: bool) -> bool {
        normalise(path).unwrap().is_within(&prefix(p), ci)
    }

    #[test]
    fn prefix_matching_is_by_whole_segments() {
        assert!(within("/recordings/", "/recordings/", false));
        assert!(within("/recordings/x/y", "/recordings/", false));
        assert!(within("/recordings", "/recordings/", false));
        assert!(!within("/recordingsX", "/recordings/", false));
        assert!(!within("/recordings.bak", "/recordings/", false));
        assert!(within("/api", "/api", false));
        assert!(within("/api/v1", "/api", false));
        assert!(!within("/apix", "/api", false));
        assert!(!within("/ap", "/api", false));
        assert!(within("/anything", "/", false));
        assert!(within("/", "/", false));
        assert!(within("/a/b/c", "/a/b", false));
        assert!(!within("/a/bc", "/a/b", false));
    }

    #[test]
    fn case_insensitive_prefixes_fold_ascii_only() {
        assert!(!within("/Recordings/", "/recordings/", false));
        assert!(!within("/RECORDINGS/x", "/recordings/", false));
        assert!(within("/Recordings/", "/recordings/", true));
        assert!(within("/RECORDINGS/x", "/recordings/", true));
        assert!(within("/%52ECORDINGS/x", "/recordings/", true));
        assert!(!within("/ｒecordings/", "/recordings/", true));
    }

    #[test]
    fn security_paths_land_where_the_upstream_would_serve_them() {
        // SECURITY-TESTS 1–3: every spelling of the recordings area is inside it.
        for raw in [
            "/%72ecordings/x",
            "//recordings/x",
            "/./recordings/x",
            "/public/../recordings/x",
            "/recordings",
            "/public/%2e%2e/recordings/x",
            "/public/.%2e/recordings/x",
            "/x/../recordings/",
        ] {
            assert!(within(raw, "/recordings/", false), "{raw:?}");
        }
        // 6, 8: double-encoded and look-alike paths are not in it, and are forwarded
        // exactly as evaluated, so the upstream cannot serve the area for them.
        for raw in [
            "/public/%252e%252e/recordings/x",
            "/ｒecordings/",
            "/rec\u{200b}ordings/",
        ] {
            assert!(!within(raw, "/recordings/", false), "{raw:?}");
            assert!(!within(raw, "/recordings/", true), "{raw:?}");
        }
    }

    #[test]
    fn configured_prefixes_must_be_normal_and_unambiguous() {
        assert_eq!(prefix("/recordings/").as_str(), "/recordings/");
        assert_eq!(prefix("/").specificity(), 0);
        assert_eq!(prefix("/recordings/").specificity(), "/recordings".len());
        assert!(PathPrefix::parse("/caf%C3%A9/").is_ok());
        assert!(matches!(
            PathPrefix::parse("/%72ecordings/"),
            Err(PrefixError::NotNormal { normal, .. }) if normal == "/recordings/"
        ));
        assert!(matches!(
            PathPrefix::parse("//recordings/"),
            Err(PrefixError::NotNormal { .. })
        ));
        assert!(matches!(
            PathPrefix::parse("recordings/"),
            Err(PrefixError::Path(NotAbsolute))
        ));
        assert!(matches!(
            PathPrefix::parse("/a;b/"),
            Err(PrefixError::Path(PathParameter))
        ));
        assert!(matches!(
            PathPrefix::parse("/a!b/"),
            Err(PrefixError::AmbiguousCharacter { ch: '!', .. })
        ));
        assert!(matches!(
            PathPrefix::parse("/a%21b/"),
            Err(PrefixError::AmbiguousCharacter { ch: '!', .. })
        ));
        assert!(matches!(
            PathPrefix::parse("/caf%c3%a9/"),
            Err(PrefixError::NotNormal { .. })
        ));
    }

    #[test]
    fn segments_are_exposed() {
        let p = normalise("/a/%62/c/").unwrap();
        assert_eq!(p.segments().collect::<Vec<_>>(), ["a", "b", "c", ""]);
        assert_eq!(normalise("/").unwrap().segments().collect::<Vec<_>>(), [""]);
    }
}
