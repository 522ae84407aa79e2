//! Country of a client address, from a MaxMind DB file (GeoLite2/GeoIP2 Country or
//! City, DB-IP country lite, or the project's `geoip/test-country.mmdb`).
//!
//! The database is swapped atomically (`ArcSwap`): on SIGHUP ([`Geo::reload`]) and
//! when the file changes on disk ([`Geo::spawn_watcher`]; geoipupdate writes a new
//! file and renames it over the old one). A file that fails to load never replaces a
//! working one. An address the database does not know (private, loopback, unlisted)
//! has no country; the access decision treats that as "not allowed unless listed".

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use maxminddb::{geoip2, Reader};

use crate::config::ConfigIssue;

/// The config key every loading error is reported under.
pub const GEOIP_DATABASE_KEY: &str = "geoip.database";

/// How often the watcher looks at the file: cheap (one `stat`), and geoipupdate
/// runs at most a few times a week.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// An ISO 3166-1 alpha-2 country code: two upper-case ASCII letters.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Country([u8; 2]);

/// Why a country code was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CountryCodeError {
    #[error(
        "{0:?} is not an ISO 3166-1 alpha-2 country code (two upper-case letters, e.g. \"DE\")"
    )]
    Malformed(String),
    #[error("{given:?} is not an ISO 3166-1 code; did you mean {suggest:?}?")]
    CommonMistake { given: String, suggest: String },
}

/// A handle on the country database; cheap to clone, all clones see reloads.
#[derive(Clone)]
pub struct Geo {
    inner: Arc<GeoInner>,
}

/// Why the database could not be loaded. Each names the `geoip.database` key.
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    #[error("geoip.database: cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("geoip.database: {path} is not a usable MaxMind DB file: {source}")]
    Invalid {
        path: PathBuf,
        source: maxminddb::MaxMindDbError,
    },
    #[error("geoip.database: no database is configured")]
    NotConfigured,
}

/// What is loaded right now, for logs and `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeoInfo {
    pub path: PathBuf,
    pub database_type: String,
    pub build_epoch: u64,
}

impl Country {
    pub fn as_str(&self) -> &str {
        // Both bytes are checked ASCII upper-case letters at construction.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl FromStr for Country {
    type Err = CountryCodeError;

    fn from_str(code: &str) -> Result<Self, Self::Err> {
        if let Some(suggest) = common_mistake(code) {
            return Err(CountryCodeError::CommonMistake {
                given: code.to_owned(),
                suggest,
            });
        }
        match code.as_bytes() {
            &[a, b] if a.is_ascii_uppercase() && b.is_ascii_uppercase() => Ok(Country([a, b])),
            _ => Err(CountryCodeError::Malformed(
                code.chars().take(16).collect::<String>(),
            )),
        }
    }
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Country({})", self.as_str())
    }
}

impl serde::Serialize for Country {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl GeoError {
    pub fn to_config_issue(&self) -> ConfigIssue {
        let text = self.to_string();
        let message = text
            .strip_prefix("geoip.database: ")
            .unwrap_or(&text)
            .to_owned();
        ConfigIssue::new(GEOIP_DATABASE_KEY, message)
    }
}

impl Geo {
    /// No database: every lookup answers "unknown".
    pub fn disabled() -> Self {
        Self {
            inner: Arc::new(GeoInner {
                path: None,
                current: ArcSwapOption::empty(),
                refused_stamp: Mutex::new(None),
            }),
        }
    }

    /// Load the database at `path` (the `geoip.database` setting).
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, GeoError> {
        let path = path.into();
        let db = LoadedDb::load(&path)?;
        Ok(Self {
            inner: Arc::new(GeoInner {
                path: Some(path),
                current: ArcSwapOption::from_pointee(db),
                refused_stamp: Mutex::new(None),
            }),
        })
    }

    /// `Geo::open` if a path is configured, else [`Geo::disabled`].
    pub fn from_config(path: Option<&Path>) -> Result<Self, GeoError> {
        match path {
            Some(path) => Self::open(path),
            None => Ok(Self::disabled()),
        }
    }

    /// The country of `ip`, `None` if unknown (no database, address not in it, or a
    /// record without a country). IPv4-mapped IPv6 is looked up as IPv4.
    pub fn lookup(&self, ip: IpAddr) -> Option<Country> {
        let guard = self.inner.current.load();
        let db = guard.as_ref()?;
        db.country(ip.to_canonical())
    }

    /// Whether a database is configured (not whether lookups find anything).
    pub fn is_enabled(&self) -> bool {
        self.inner.path.is_some()
    }

    pub fn info(&self) -> Option<GeoInfo> {
        let guard = self.inner.current.load();
        let db = guard.as_ref()?;
        let meta = db.reader.metadata();
        Some(GeoInfo {
            path: self.inner.path.clone()?,
            database_type: meta.database_type.clone(),
            build_epoch: meta.build_epoch,
        })
    }

    /// Re-read the file now (SIGHUP). On error the loaded database stays in use.
    /// Blocking file I/O: call from `spawn_blocking` inside the runtime.
    pub fn reload(&self) -> Result<(), GeoError> {
        let path = self.inner.path.as_ref().ok_or(GeoError::NotConfigured)?;
        let db = LoadedDb::load(path)?;
        self.inner.current.store(Some(Arc::new(db)));
        Ok(())
    }

    /// Poll the file every `interval` and reload it when its identity (inode, size,
    /// modification time) changes. A file that fails to load is warned about once and
    /// retried only after it changes again. The task ends when the last `Geo` handle
    /// is dropped (or when the returned handle is aborted). Does nothing without a
    /// configured database. Must be called inside a tokio runtime.
    pub fn spawn_watcher(&self, interval: Duration) -> Option<tokio::task::JoinHandle<()>> {
        let path = self.inner.path.clone()?;
        let weak = Arc::downgrade(&self.inner);
        Some(tokio::spawn(watch(weak, path, interval)))
    }
}

impl fmt::Debug for Geo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Geo")
            .field("path", &self.inner.path)
            .field("loaded", &self.inner.current.load().is_some())
            .finish()
    }
}

// ---------------------------------------------------------------------------

struct GeoInner {
    path: Option<PathBuf>,
    current: ArcSwapOption<LoadedDb>,
    /// The identity of the last file that failed to load, so one broken file is
    /// warned about once, not every poll.
    refused_stamp: Mutex<Option<FileStamp>>,
}

struct LoadedDb {
    reader: Reader<Vec<u8>>,
    stamp: Option<FileStamp>,
}

/// What changes when a file is replaced or rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    inode: u64,
    device: u64,
    len: u64,
    modified: Option<SystemTime>,
}

impl LoadedDb {
    fn load(path: &Path) -> Result<Self, GeoError> {
        // Stat before reading: if the file is replaced in between, the stamp is the
        // old one and the next poll loads the new file again (harmless).
        let stamp = file_stamp(path).ok();
        let bytes = std::fs::read(path).map_err(|source| GeoError::Read {
            path: path.to_owned(),
            source,
        })?;
        let reader = Reader::from_source(bytes).map_err(|source| GeoError::Invalid {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self { reader, stamp })
    }

    fn country(&self, ip: IpAddr) -> Option<Country> {
        let record = match self.reader.lookup(ip) {
            Ok(result) => match result.decode::<geoip2::Country>() {
                Ok(record) => record?,
                Err(err) => {
                    tracing::debug!(%ip, error = %err, "geoip record could not be decoded");
                    return None;
                }
            },
            // e.g. an IPv6 address against an IPv4-only database.
            Err(err) => {
                tracing::debug!(%ip, error = %err, "geoip lookup failed");
                return None;
            }
        };
        // `country` is where the address is believed to be; `registered_country` is
        // the registrant's, present for some ranges (anycast, satellite) without a
        // `country`.
        [record.country.iso_code, record.registered_country.iso_code]
            .into_iter()
            .flatten()
            .find_map(|code| code.parse::<Country>().ok())
    }
}

#[cfg(unix)]
fn file_stamp(path: &Path) -> io::Result<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    Ok(FileStamp {
        inode: meta.ino(),
        device: meta.dev(),
        len: meta.len(),
        modified: meta.modified().ok(),
    })
}

#[cfg(not(unix))]
fn file_stamp(path: &Path) -> io::Result<FileStamp> {
    let meta = std::fs::metadata(path)?;
    Ok(FileStamp {
        inode: 0,
        device: 0,
        len: meta.len(),
        modified: meta.modified().ok(),
    })
}

async fn watch(weak: Weak<GeoInner>, path: PathBuf, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is immediate; the file was just loaded
    let mut missing_warned = false;
    loop {
        ticker.tick().await;
        let Some(inner) = weak.upgrade() else {
            return;
        };
        // One stat(2) every few seconds: not worth a blocking-pool round trip.
        let stamp = match file_stamp(&path) {
            Ok(stamp) => stamp,
            Err(err) => {
                // Between geoipupdate's unlink and rename, or removed by hand: keep
                // using what is loaded.
                if !missing_warned {
                    tracing::warn!(path = %path.display(), error = %err,
                        "geoip.database: file not readable; keeping the loaded database");
                    missing_warned = true;
                }
                continue;
            }
        };
        missing_warned = false;
        let loaded = inner.current.load().as_ref().and_then(|db| db.stamp);
        if loaded == Some(stamp) || refused(&inner) == Some(stamp) {
            continue;
        }
        let load_path = path.clone();
        let result = tokio::task::spawn_blocking(move || LoadedDb::load(&load_path)).await;
        match result {
            Ok(Ok(db)) => {
                let info = db.reader.metadata();
                tracing::info!(path = %path.display(), database_type = %info.database_type,
                    build_epoch = info.build_epoch, "geoip database reloaded");
                inner.current.store(Some(Arc::new(db)));
                set_refused(&inner, None);
            }
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "geoip database changed but cannot be loaded; keeping the previous one");
                set_refused(&inner, Some(stamp));
            }
            Err(join) => {
                tracing::warn!(error = %join, "geoip reload task failed; keeping the previous database");
                set_refused(&inner, Some(stamp));
            }
        }
    }
}

fn refused(inner: &GeoInner) -> Option<FileStamp> {
    inner.refused_stamp.lock().map(|g| *g).unwrap_or(None)
}

fn set_refused(inner: &GeoInner, stamp: Option<FileStamp>) {
    if let Ok(mut guard) = inner.refused_stamp.lock() {
        *guard = stamp;
    }
}

/// Codes people write that are not ISO 3166-1 alpha-2 (exceptional reservations and
/// habits), with the code the databases use; and lower-case spellings.
fn common_mistake(code: &str) -> Option<String> {
    let upper = code.to_ascii_uppercase();
    match upper.as_str() {
        "UK" => Some("GB".to_owned()),
        "EL" => Some("GR".to_owned()),
        _ if code.len() == 2 && code.bytes().all(|b| b.is_ascii_alphabetic()) && code != upper => {
            Some(upper)
        }
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic on bad fixtures
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const TEST_DB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/geoip/test-country.mmdb");

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn code(geo: &Geo, addr: &str) -> Option<String> {
        geo.lookup(ip(addr)).map(|c| c.to_string())
    }

    /// A country database with `country.iso_code` (or only `registered_country`).
    fn build_db(ranges: &[(&str, Option<&str>, Option<&str>)]) -> Vec<u8> {
        let mut writer = mmdb_writer::Writer::builder("Test-Country")
            .description(&[("en", "unit test database")])
            .build();
        for (net, country, registered) in ranges {
            let mut record = BTreeMap::new();
            if let Some(c) = country {
                record.insert("country", BTreeMap::from([("iso_code", *c)]));
            }
            if let Some(r) = registered {
                record.insert("registered_country", BTreeMap::from([("iso_code", *r)]));
            }
            writer
                .insert(net.parse::<ipnet::IpNet>().unwrap(), &record)
                .unwrap();
        }
        writer.to_bytes().unwrap()
    }

    /// Replace `path` atomically, the way geoipupdate does.
    fn replace_file(path: &Path, bytes: &[u8]) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    #[test]
    fn committed_test_database_answers_documented_ranges() {
        let geo = Geo::open(TEST_DB).unwrap();
        for (addr, expected) in [
            ("81.2.69.1", "GB"),
            ("81.2.69.255", "GB"),
            ("89.160.20.128", "SE"),
            ("203.0.113.0", "DE"),
            ("203.0.113.9", "DE"),
            ("203.0.113.255", "DE"),
            ("198.51.100.7", "US"),
            ("192.0.2.1", "FR"),
            ("2001:db8:de::1", "DE"),
            ("2001:db8:de:ffff::1", "DE"),
            ("2001:db8:9b::1", "GB"),
            ("::ffff:203.0.113.9", "DE"),
            ("::ffff:81.2.69.1", "GB"),
        ] {
            assert_eq!(code(&geo, addr).as_deref(), Some(expected), "{addr}");
        }
        for unknown in [
            "203.0.112.255",
            "203.0.114.0",
            "10.0.0.5",
            "127.0.0.1",
            "192.168.1.1",
            "::1",
            "fe80::1",
            "2001:db8:df::1",
            "8.8.8.8",
        ] {
            assert_eq!(code(&geo, unknown), None, "{unknown}");
        }
        let info = geo.info().unwrap();
        assert_eq!(info.database_type, "Gatehouse-Test-Country");
        let reader = Reader::open_readfile(TEST_DB).unwrap();
        reader.verify().unwrap();
    }

    #[test]
    fn country_codes_are_two_upper_case_letters() {
        assert_eq!("DE".parse::<Country>().unwrap().to_string(), "DE");
        assert_eq!(
            format!("{:?}", "GB".parse::<Country>().unwrap()),
            "Country(GB)"
        );
        for bad in ["", "D", "DEU", "D1", "Ü1", "12", " DE", "GERMANY"] {
            assert!(
                matches!(bad.parse::<Country>(), Err(CountryCodeError::Malformed(_))),
                "{bad:?}"
            );
        }
        let uk = "UK".parse::<Country>().unwrap_err();
        assert!(uk.to_string().contains("did you mean \"GB\""), "{uk}");
        assert!(matches!(
            "de".parse::<Country>(),
            Err(CountryCodeError::CommonMistake { suggest, .. }) if suggest == "DE"
        ));
        assert!(matches!(
            "EL".parse::<Country>(),
            Err(CountryCodeError::CommonMistake { suggest, .. }) if suggest == "GR"
        ));
    }

    #[test]
    fn without_a_database_every_country_is_unknown() {
        let geo = Geo::disabled();
        assert!(!geo.is_enabled());
        assert_eq!(geo.lookup(ip("203.0.113.9")), None);
        assert!(matches!(geo.reload(), Err(GeoError::NotConfigured)));
        assert!(Geo::from_config(None)
            .unwrap()
            .lookup(ip("81.2.69.1"))
            .is_none());
    }

    #[test]
    fn loading_errors_name_the_config_key() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.mmdb");
        let err = Geo::open(&missing).unwrap_err();
        assert!(matches!(err, GeoError::Read { .. }));
        assert!(err.to_string().starts_with("geoip.database: "), "{err}");
        let issue = err.to_config_issue();
        assert_eq!(issue.key, "geoip.database");
        assert!(issue.message.contains("missing.mmdb"));

        let junk = dir.path().join("junk.mmdb");
        std::fs::write(&junk, b"not a database").unwrap();
        let err = Geo::open(&junk).unwrap_err();
        assert!(matches!(err, GeoError::Invalid { .. }), "{err}");
        assert!(err.to_string().starts_with("geoip.database: "), "{err}");
    }

    #[test]
    fn registered_country_is_the_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.mmdb");
        std::fs::write(
            &path,
            build_db(&[
                ("198.51.100.0/24", None, Some("US")),
                ("203.0.113.0/24", Some("DE"), Some("US")),
                ("192.0.2.0/24", Some("bogus"), Some("FR")),
            ]),
        )
        .unwrap();
        let geo = Geo::open(&path).unwrap();
        assert_eq!(code(&geo, "198.51.100.7").as_deref(), Some("US"));
        assert_eq!(code(&geo, "203.0.113.7").as_deref(), Some("DE"));
        assert_eq!(code(&geo, "192.0.2.7").as_deref(), Some("FR"));
    }

    #[test]
    fn reload_keeps_the_old_database_when_the_new_file_is_broken() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.mmdb");
        std::fs::write(&path, build_db(&[("203.0.113.0/24", Some("DE"), None)])).unwrap();
        let geo = Geo::open(&path).unwrap();
        let clone = geo.clone();

        replace_file(&path, b"truncated download");
        assert!(matches!(geo.reload(), Err(GeoError::Invalid { .. })));
        assert_eq!(code(&clone, "203.0.113.9").as_deref(), Some("DE"));

        std::fs::remove_file(&path).unwrap();
        assert!(matches!(geo.reload(), Err(GeoError::Read { .. })));
        assert_eq!(code(&clone, "203.0.113.9").as_deref(), Some("DE"));

        replace_file(&path, &build_db(&[("203.0.113.0/24", Some("SE"), None)]));
        geo.reload().unwrap();
        assert_eq!(code(&clone, "203.0.113.9").as_deref(), Some("SE"));
    }

    /// Poll (briefly) until `check` holds; the watcher runs every 50 ms here.
    async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !check() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn watcher_picks_up_a_replaced_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.mmdb");
        std::fs::write(&path, build_db(&[("203.0.113.0/24", Some("DE"), None)])).unwrap();
        let geo = Geo::open(&path).unwrap();
        let watcher = geo.spawn_watcher(Duration::from_millis(50)).unwrap();

        replace_file(&path, &build_db(&[("203.0.113.0/24", Some("GB"), None)]));
        eventually("the new database", || {
            code(&geo, "203.0.113.9").as_deref() == Some("GB")
        })
        .await;

        // A broken replacement is refused; the loaded database stays.
        replace_file(&path, b"broken");
        eventually("the broken file to be refused", || {
            refused(&geo.inner).is_some()
        })
        .await;
        assert_eq!(code(&geo, "203.0.113.9").as_deref(), Some("GB"));

        // And a good file after the broken one is picked up again.
        replace_file(&path, &build_db(&[("203.0.113.0/24", Some("SE"), None)]));
        eventually("the repaired database", || {
            code(&geo, "203.0.113.9").as_deref() == Some("SE")
        })
        .await;
        watcher.abort();
    }

    #[tokio::test]
    async fn watcher_ends_with_the_last_handle() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.mmdb");
        std::fs::write(&path, build_db(&[("203.0.113.0/24", Some("DE"), None)])).unwrap();
        let geo = Geo::open(&path).unwrap();
        let watcher = geo.spawn_watcher(Duration::from_millis(20)).unwrap();
        drop(geo);
        tokio::time::timeout(Duration::from_secs(5), watcher)
            .await
            .expect("watcher should stop")
            .unwrap();
        assert!(Geo::disabled()
            .spawn_watcher(Duration::from_millis(20))
            .is_none());
    }
}
