//! Typed keys and their one encoding.
//!
//! Layout (all under `gh:`): the records of one user share a Redis Cluster hash tag
//! `{u:NAME}` so a user's keys live in one slot; other entities are tagged by their id.
//! Names and ids may contain any character: `%`, `{`, `}`, `:`, glob metacharacters, spaces,
//! controls and non-ASCII are percent-encoded, so the encoding is injective (two different keys
//! never share a string), a name can never close a hash tag early, and a prefix is always a
//! literal Redis `SCAN MATCH` pattern.

use std::borrow::Cow;
use std::fmt;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

/// A record in the store. The only way any module names state.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    /// A gatehouse session by id (value).
    Session(String),
    /// Ids of a user's sessions (set).
    UserSessions(String),
    /// Sealed TOTP seed, enrolled_at, last used step (value).
    UserTotp(String),
    /// Hashed recovery codes (value).
    UserRecovery(String),
    /// Hashes of the last passwords, changed_at (value).
    UserPassword(String),
    /// 2FA policy flags set by admins, first seen (value).
    UserProfile(String),
    /// Every username gatehouse has seen (set).
    Users,
    /// A user is locked out while this exists (value with TTL).
    LockUser(String),
    /// Failed logins of a user in the current window (counter).
    FailUser(String),
    /// Failed logins from an IP in the current window (counter).
    FailIp(String),
    /// Pre-sign-in sessions an address (IPv6: its /64) started in the current window (counter).
    PreloginIp(String),
    /// Pre-sign-in sessions all addresses started in the current window (counter).
    PreloginAll,
    /// Log out everyone: sessions older than this are dead (value).
    EpochGlobal,
    /// Log out one user everywhere (value).
    EpochUser(String),
    /// Recent logins of a user, newest first (capped list).
    Logins(String),
    /// One incident report (value).
    Incident(String),
    /// The open incident of one kind for a user: (user, kind) → incident id (value).
    UserIncident(String, String),
    /// Ids of all incidents (set).
    Incidents,
    /// Trusted IPs/networks of an email domain (value).
    Trusted(String),
}

/// A family of keys that admin views list with `Store::scan_prefix`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyPrefix {
    /// Every `Key::Session`.
    Sessions,
    /// Every `Key::Incident`.
    Incidents,
    /// Every `Key::Trusted`.
    Trusted,
    /// Every `Key::FailIp`.
    FailIps,
    /// Every per-user key of one user.
    User(String),
}

impl Key {
    /// The encoded key as stored.
    pub fn encode(&self) -> String {
        match self {
            Key::Session(id) => {
                let id = esc(id);
                let mut k = String::with_capacity(SESSION.len() + id.len() + 1);
                k.push_str(SESSION);
                k.push_str(&id);
                k.push('}');
                k
            }
            Key::UserSessions(u) => user_key(u, "sessions"),
            Key::UserTotp(u) => user_key(u, "totp"),
            Key::UserRecovery(u) => user_key(u, "recovery"),
            Key::UserPassword(u) => user_key(u, "pw"),
            Key::UserProfile(u) => user_key(u, "profile"),
            Key::Users => "gh:users".to_owned(),
            Key::LockUser(u) => user_key(u, "lock"),
            Key::FailUser(u) => user_key(u, "fail"),
            Key::FailIp(ip) => format!("{FAIL_IP}{}}}", esc(ip)),
            Key::PreloginIp(ip) => format!("{PRELOGIN_IP}{}}}", esc(ip)),
            Key::PreloginAll => "gh:prelogin:all".to_owned(),
            Key::EpochGlobal => "gh:epoch:global".to_owned(),
            Key::EpochUser(u) => user_key(u, "epoch"),
            Key::Logins(u) => user_key(u, "logins"),
            Key::Incident(id) => format!("{INCIDENT}{}}}", esc(id)),
            Key::UserIncident(u, kind) => user_key(u, &format!("incident:{}", esc(kind))),
            Key::Incidents => "gh:incidents".to_owned(),
            Key::Trusted(d) => format!("{TRUSTED}{}}}", esc(d)),
        }
    }

    /// The key an encoded string stands for; `None` for strings gatehouse did not write.
    pub fn decode(s: &str) -> Option<Key> {
        match s {
            "gh:users" => return Some(Key::Users),
            "gh:epoch:global" => return Some(Key::EpochGlobal),
            "gh:incidents" => return Some(Key::Incidents),
            "gh:prelogin:all" => return Some(Key::PreloginAll),
            _ => {}
        }
        if let Some(rest) = s.strip_prefix(USER) {
            let (name, field) = rest.split_once("}:")?;
            let u = unesc(name)?;
            return Some(match field {
                "sessions" => Key::UserSessions(u),
                "totp" => Key::UserTotp(u),
                "recovery" => Key::UserRecovery(u),
                "pw" => Key::UserPassword(u),
                "profile" => Key::UserProfile(u),
                "lock" => Key::LockUser(u),
                "fail" => Key::FailUser(u),
                "epoch" => Key::EpochUser(u),
                "logins" => Key::Logins(u),
                other => {
                    let kind = unesc(other.strip_prefix("incident:")?)?;
                    Key::UserIncident(u, kind)
                }
            });
        }
        let tagged = |prefix: &str| s.strip_prefix(prefix)?.strip_suffix('}').and_then(unesc);
        if let Some(id) = tagged(SESSION) {
            return Some(Key::Session(id));
        }
        if let Some(ip) = tagged(FAIL_IP) {
            return Some(Key::FailIp(ip));
        }
        if let Some(ip) = tagged(PRELOGIN_IP) {
            return Some(Key::PreloginIp(ip));
        }
        if let Some(id) = tagged(INCIDENT) {
            return Some(Key::Incident(id));
        }
        tagged(TRUSTED).map(Key::Trusted)
    }

    /// What kind of record this is, for error messages: never the name or id, which may be a
    /// secret (session ids are bearer tokens).
    pub fn kind(&self) -> &'static str {
        match self {
            Key::Session(_) => "session",
            Key::UserSessions(_) => "user sessions",
            Key::UserTotp(_) => "totp",
            Key::UserRecovery(_) => "recovery codes",
            Key::UserPassword(_) => "password history",
            Key::UserProfile(_) => "user profile",
            Key::Users => "users",
            Key::LockUser(_) => "user lock",
            Key::FailUser(_) => "user failures",
            Key::FailIp(_) => "ip failures",
            Key::PreloginIp(_) => "ip pre-sign-in sessions",
            Key::PreloginAll => "pre-sign-in sessions",
            Key::EpochGlobal => "global epoch",
            Key::EpochUser(_) => "user epoch",
            Key::Logins(_) => "logins",
            Key::Incident(_) => "incident",
            Key::UserIncident(..) => "user incident state",
            Key::Incidents => "incidents",
            Key::Trusted(_) => "trusted networks",
        }
    }
}

/// Deliberately hides ids: a `Key` in a log line must not leak a session id.
impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())
    }
}

/// The encoded form, except that session ids (bearer tokens) are never shown.
impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Session(_) => f.write_str("gh:session:{<redacted>}"),
            other => f.write_str(&other.encode()),
        }
    }
}

impl KeyPrefix {
    /// The literal prefix every key of this family starts with.
    pub fn encode(&self) -> String {
        match self {
            KeyPrefix::Sessions => SESSION.to_owned(),
            KeyPrefix::Incidents => INCIDENT.to_owned(),
            KeyPrefix::Trusted => TRUSTED.to_owned(),
            KeyPrefix::FailIps => FAIL_IP.to_owned(),
            KeyPrefix::User(u) => format!("{USER}{}}}:", esc(u)),
        }
    }
}

const SESSION: &str = "gh:session:{";
const FAIL_IP: &str = "gh:fail:ip:{";
const PRELOGIN_IP: &str = "gh:prelogin:ip:{";
const INCIDENT: &str = "gh:incident:{";
const TRUSTED: &str = "gh:trusted:{";
const USER: &str = "gh:{u:";

/// Everything that could be confused with structure (`{`, `}`, `:`), the escape itself,
/// Redis glob metacharacters and whitespace; non-ASCII is always encoded.
const ESCAPED: &AsciiSet = &CONTROLS
    .add(b'%')
    .add(b'{')
    .add(b'}')
    .add(b':')
    .add(b'*')
    .add(b'?')
    .add(b'[')
    .add(b']')
    .add(b'\\')
    .add(b' ');

/// Borrowed when nothing needs escaping (session digests, most names): key
/// encoding runs on every request.
fn esc(s: &str) -> Cow<'_, str> {
    // Alphanumerics are never escaped; checking bytes first skips the
    // encoder's per-char walk for session digests (hex).
    if s.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Cow::Borrowed(s);
    }
    utf8_percent_encode(s, ESCAPED).into()
}

fn unesc(s: &str) -> Option<String> {
    if s.contains(['{', '}', ':']) {
        return None;
    }
    percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

fn user_key(user: &str, field: &str) -> String {
    format!("{USER}{}}}:{field}", esc(user))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn all_kinds(name: &str) -> Vec<Key> {
        let n = || name.to_owned();
        vec![
            Key::Session(n()),
            Key::UserSessions(n()),
            Key::UserTotp(n()),
            Key::UserRecovery(n()),
            Key::UserPassword(n()),
            Key::UserProfile(n()),
            Key::Users,
            Key::LockUser(n()),
            Key::FailUser(n()),
            Key::FailIp(n()),
            Key::PreloginIp(n()),
            Key::PreloginAll,
            Key::EpochGlobal,
            Key::EpochUser(n()),
            Key::Logins(n()),
            Key::Incident(n()),
            Key::UserIncident(n(), n()),
            Key::Incidents,
            Key::Trusted(n()),
        ]
    }

    /// The part of a key Redis Cluster hashes: between the first `{` and the next `}`.
    fn hash_tag(key: &str) -> Option<&str> {
        let open = key.find('{')?;
        let close = key[open + 1..].find('}')?;
        Some(&key[open + 1..open + 1 + close])
    }

    #[test]
    fn keys_are_namespaced_and_roundtrip() {
        for name in [
            "alice@example.com",
            "",
            "a:b",
            "}{",
            "x}:totp",
            "%41",
            "ü ñ *?[]\\",
            "\n",
        ] {
            for key in all_kinds(name) {
                let enc = key.encode();
                assert!(enc.starts_with("gh:"), "{enc}");
                assert_eq!(Key::decode(&enc), Some(key.clone()), "{enc}");
            }
        }
    }

    #[test]
    fn encoding_is_unambiguous() {
        let names = [
            "a", "a:b", "a%3Ab", "a}:totp", "{a}", "a b", "a%20b", "", "%",
        ];
        let mut seen = std::collections::HashMap::new();
        for name in names {
            for key in all_kinds(name) {
                if let Some(other) = seen.insert(key.encode(), key.clone()) {
                    assert_eq!(other, key, "two keys share {}", key.encode());
                }
            }
        }
    }

    #[test]
    fn keys_of_one_user_share_a_hash_tag() {
        let user = "bob}{:@example.com";
        let tags: std::collections::HashSet<_> = all_kinds(user)
            .into_iter()
            .filter(|k| {
                !matches!(
                    k,
                    Key::Session(_)
                        | Key::FailIp(_)
                        | Key::PreloginIp(_)
                        | Key::Incident(_)
                        | Key::Trusted(_)
                )
            })
            .filter(|k| {
                !matches!(
                    k,
                    Key::Users | Key::EpochGlobal | Key::Incidents | Key::PreloginAll
                )
            })
            .map(|k| hash_tag(&k.encode()).map(str::to_owned))
            .collect();
        assert_eq!(tags.len(), 1, "{tags:?}");
        let tag = tags.into_iter().next().flatten();
        assert_eq!(tag.as_deref(), Some("u:bob%7D%7B%3A@example.com"));
        assert_eq!(
            Key::UserTotp("alice@example.com".into()).encode(),
            "gh:{u:alice@example.com}:totp"
        );
    }

    #[test]
    fn prefixes_match_their_keys_only() {
        let cases = [
            (KeyPrefix::Sessions, Key::Session("s1".into())),
            (KeyPrefix::Incidents, Key::Incident("i1".into())),
            (KeyPrefix::Trusted, Key::Trusted("example.com".into())),
            (KeyPrefix::FailIps, Key::FailIp("2001:db8::1".into())),
            (KeyPrefix::User("a".into()), Key::UserTotp("a".into())),
        ];
        for (prefix, key) in &cases {
            assert!(key.encode().starts_with(&prefix.encode()));
        }
        assert!(!Key::UserTotp("ab".into())
            .encode()
            .starts_with(&KeyPrefix::User("a".into()).encode()));
        assert!(!Key::Incidents
            .encode()
            .starts_with(&KeyPrefix::Incidents.encode()));
    }

    #[test]
    fn display_never_shows_ids() {
        let key = Key::Session("secret-session-id".into());
        assert!(!key.to_string().contains("secret"));
        assert!(!format!("{key:?}").contains("secret"));
        assert_eq!(format!("{:?}", Key::UserTotp("a".into())), "gh:{u:a}:totp");
    }

    #[test]
    fn foreign_strings_do_not_decode() {
        for s in [
            "gh:{u:a}:nope",
            "gh:session:{a:b}",
            "other",
            "gh:session:{%FF}",
            "gh:{u:a",
        ] {
            assert_eq!(Key::decode(s), None, "{s}");
        }
    }
}
