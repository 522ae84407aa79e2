//! Allow-lists of addresses: single IPs, CIDR blocks and inclusive ranges, IPv4 and
//! IPv6, each with a note saying what it is ("Office", "VPN").
//!
//! Parsing is strict on purpose. Address spellings that some stacks read differently
//! from others are refused instead of guessed at: leading zeros (`0313.0.113.9` is
//! octal to `inet_aton`, decimal to Rust), zone ids (`fe80::1%eth0`), ports, brackets.
//! The same parser reads `X-Forwarded-For` values, where an ambiguous spelling could
//! otherwise smuggle an allowed address past the list (SECURITY-TESTS 17).
//!
//! IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, RFC 4291 §2.5.5.2) are the IPv4
//! address, both in entries and in lookups, so a dual-stack listener cannot be used
//! to step around an IPv4 entry.
//!
//! Lookups run over the entries merged into sorted, non-overlapping spans per family
//! and a binary search: O(log n), allocation free.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::config::ConfigIssue;

/// An entry as written in TOML: either a plain string (`"10.0.0.0/8"`, `"1.2.3.4"`,
/// `"1.2.3.1-1.2.3.50"`) or a table with exactly one of `ip`, `cidr`, `range` and an
/// optional `note`. Checked by [`IpList::from_raw`], which reports every bad entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawIpEntry {
    /// `"10.0.0.0/8"`: the kind is recognised from the text.
    Plain(String),
    /// `{ cidr = "10.1.0.0/16", note = "VPN" }`.
    Table(RawIpTable),
}

/// The table form of an entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIpTable {
    /// One address, e.g. `"1.1.1.1"` or `"2001:db8::1"`.
    pub ip: Option<String>,
    /// A network in CIDR notation with no host bits set, e.g. `"10.1.0.0/16"`.
    pub cidr: Option<String>,
    /// An inclusive range `"first-last"` of one family, e.g. `"2.2.2.1-2.2.2.50"`.
    pub range: Option<String>,
    /// What the entry is, shown in audit lines ("Office", "VPN").
    pub note: Option<String>,
}

/// The addresses an entry covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpSpec {
    /// One address.
    Single(IpAddr),
    /// A network (`ipnet` keeps it; host bits are never set).
    Cidr(ipnet::IpNet),
    /// An inclusive range, both ends of one family, first <= last.
    Range(IpAddr, IpAddr),
}

/// One checked entry of an [`IpList`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpEntry {
    pub spec: IpSpec,
    /// May be empty (plain-string entries have none).
    pub note: String,
}

/// Why an address or entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpEntryError {
    #[error("empty address")]
    Empty,
    #[error("{0:?} contains whitespace; write the address alone")]
    Whitespace(String),
    #[error("{0:?} has a zone id (%…); zone ids are local to one host and are not accepted")]
    ZoneId(String),
    #[error("{0:?} has a port or brackets; write the address without them")]
    Port(String),
    #[error(
        "{0:?} has a leading zero in a number; some systems read that as octal, so it is refused"
    )]
    LeadingZero(String),
    #[error("{0:?} is not an IPv4 or IPv6 address")]
    NotAnAddress(String),
    #[error("{0:?}: prefix length must be a number from 0 to {1}")]
    BadPrefix(String, u8),
    #[error("{given:?} has host bits set; the network is {network}")]
    HostBitsSet { given: String, network: String },
    #[error("{0:?}: a range is written \"first-last\"")]
    BadRange(String),
    #[error("{0:?}: the first address is after the last")]
    RangeReversed(String),
    #[error("{0:?}: both ends of a range must be IPv4 or both IPv6")]
    RangeMixedFamilies(String),
    #[error("give exactly one of ip, cidr or range")]
    NotExactlyOneKind,
}

/// A set of addresses with a note per entry, for `contains`/`find` lookups.
#[derive(Debug, Clone, Default)]
pub struct IpList {
    entries: Vec<IpEntry>,
    v4: Spans<u32>,
    v6: Spans<u128>,
}

/// Parse one address strictly (see the module docs) and return IPv4-mapped IPv6
/// addresses as IPv4. Does not trim: callers splitting `X-Forwarded-For` trim the
/// optional whitespace around commas themselves (RFC 9110 §5.6.1).
pub fn parse_ip_strict(text: &str) -> Result<IpAddr, IpEntryError> {
    parse_ip_literal(text).map(|ip| ip.to_canonical())
}

impl IpSpec {
    /// First and last address covered, IPv4-mapped entries already turned into IPv4.
    pub fn bounds(&self) -> (IpAddr, IpAddr) {
        match *self {
            IpSpec::Single(ip) => (ip, ip),
            IpSpec::Cidr(net) => (net.network(), net.broadcast()),
            IpSpec::Range(a, b) => (a, b),
        }
    }
}

impl FromStr for IpSpec {
    type Err = IpEntryError;

    /// Recognise the kind from the text: `/` is a CIDR, `-` a range, else one address.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.contains('/') {
            parse_cidr(text)
        } else if text.contains('-') {
            parse_range(text)
        } else {
            parse_ip_strict(text).map(IpSpec::Single)
        }
    }
}

impl fmt::Display for IpSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpSpec::Single(ip) => write!(f, "{ip}"),
            IpSpec::Cidr(net) => write!(f, "{net}"),
            IpSpec::Range(a, b) => write!(f, "{a}-{b}"),
        }
    }
}

impl IpEntry {
    pub fn new(spec: IpSpec, note: impl Into<String>) -> Self {
        Self {
            spec,
            note: note.into(),
        }
    }
}

impl IpList {
    /// Build the lookup structure. Overlapping and duplicate entries are fine.
    pub fn new(entries: Vec<IpEntry>) -> Self {
        let (v4, v6) = build_spans(&entries);
        Self { entries, v4, v6 }
    }

    /// Check every raw entry, reporting each bad one under `key[j]` (plain string) or
    /// `key[j].ip|cidr|range` (table), e.g. `access.area[1].allow[3].cidr`.
    pub fn from_raw(raw: &[RawIpEntry], key: &str) -> Result<Self, Vec<ConfigIssue>> {
        let mut entries = Vec::with_capacity(raw.len());
        let mut issues = Vec::new();
        for (j, entry) in raw.iter().enumerate() {
            match entry.check() {
                Ok(entry) => entries.push(entry),
                Err((field, err)) => {
                    let key = match field {
                        Some(field) => format!("{key}[{j}].{field}"),
                        None => format!("{key}[{j}]"),
                    };
                    issues.push(ConfigIssue::new(key, err.to_string()));
                }
            }
        }
        if issues.is_empty() {
            Ok(Self::new(entries))
        } else {
            Err(issues)
        }
    }

    /// Whether `ip` is covered by any entry.
    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.entry_index(ip).is_some()
    }

    /// The note of an entry covering `ip` (the narrowest one; the first listed among
    /// equally narrow ones). The note may be empty for plain-string entries.
    pub fn find(&self, ip: IpAddr) -> Option<&str> {
        self.matching_entry(ip).map(|e| e.note.as_str())
    }

    /// The entry covering `ip`, chosen as in [`find`](Self::find).
    pub fn matching_entry(&self, ip: IpAddr) -> Option<&IpEntry> {
        self.entry_index(ip).and_then(|i| self.entries.get(i))
    }

    pub fn entries(&self) -> &[IpEntry] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn entry_index(&self, ip: IpAddr) -> Option<usize> {
        match ip.to_canonical() {
            IpAddr::V4(v4) => self.v4.lookup(u32::from(v4)),
            IpAddr::V6(v6) => self.v6.lookup(u128::from(v6)),
        }
    }
}

impl RawIpEntry {
    /// The checked entry, or the field (`None` for a plain string) and the problem.
    pub fn check(&self) -> Result<IpEntry, (Option<&'static str>, IpEntryError)> {
        match self {
            RawIpEntry::Plain(text) => text
                .parse::<IpSpec>()
                .map(|spec| IpEntry::new(spec, ""))
                .map_err(|e| (None, e)),
            RawIpEntry::Table(table) => {
                let note = table.note.clone().unwrap_or_default();
                let spec = match (&table.ip, &table.cidr, &table.range) {
                    (Some(ip), None, None) => parse_ip_strict(ip)
                        .map(IpSpec::Single)
                        .map_err(|e| (Some("ip"), e)),
                    (None, Some(cidr), None) => parse_cidr(cidr).map_err(|e| (Some("cidr"), e)),
                    (None, None, Some(range)) => parse_range(range).map_err(|e| (Some("range"), e)),
                    _ => Err((None, IpEntryError::NotExactlyOneKind)),
                }?;
                Ok(IpEntry::new(spec, note))
            }
        }
    }
}

impl<'de> Deserialize<'de> for RawIpEntry {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        // Hand-written instead of `#[serde(untagged)]` so that a typo in a table
        // (`{ cdir = … }`) is reported as such by `deny_unknown_fields`, not as
        // "did not match any variant".
        struct EntryVisitor;
        impl<'de> Visitor<'de> for EntryVisitor {
            type Value = RawIpEntry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an address string or a table { ip | cidr | range, note }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawIpEntry, E> {
                Ok(RawIpEntry::Plain(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<RawIpEntry, E> {
                Ok(RawIpEntry::Plain(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawIpEntry, A::Error> {
                RawIpTable::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawIpEntry::Table)
            }
        }
        de.deserialize_any(EntryVisitor)
    }
}

// ---------------------------------------------------------------------------
// Parsing

/// Longest textual IPv6 address with embedded IPv4 is 45 characters; refusing longer
/// input early keeps header-sized garbage cheap.
const MAX_ADDRESS_LEN: usize = 45;

/// Parse an address without canonicalising IPv4-mapped IPv6 (CIDR prefixes need the
/// literal family to interpret the prefix length).
fn parse_ip_literal(text: &str) -> Result<IpAddr, IpEntryError> {
    if text.is_empty() {
        return Err(IpEntryError::Empty);
    }
    let owned = || text.chars().take(64).collect::<String>();
    if text.len() > MAX_ADDRESS_LEN {
        return Err(IpEntryError::NotAnAddress(owned()));
    }
    if text.chars().any(char::is_whitespace) {
        return Err(IpEntryError::Whitespace(owned()));
    }
    if text.contains('%') {
        return Err(IpEntryError::ZoneId(owned()));
    }
    if text.contains('[') || text.contains(']') {
        return Err(IpEntryError::Port(owned()));
    }
    // Dotted-quad parts anywhere in the text (plain IPv4, or the tail of `::ffff:a.b.c.d`).
    if text.contains('.') {
        let v4_tail = text.rsplit(':').next().unwrap_or(text);
        if !text.contains("::") && text.matches(':').count() == 1 {
            // `203.0.113.9:443`
            return Err(IpEntryError::Port(owned()));
        }
        if v4_tail
            .split('.')
            .any(|part| part.len() > 1 && part.starts_with('0'))
        {
            return Err(IpEntryError::LeadingZero(owned()));
        }
        if !text.contains(':') {
            return Ipv4Addr::from_str(text)
                .map(IpAddr::V4)
                .map_err(|_| IpEntryError::NotAnAddress(owned()));
        }
    }
    if text.contains(':') {
        // std refuses everything else that is odd here (more than 4 hex digits per
        // group, several `::`, signs); leading zeros inside a hex group are normal
        // IPv6 (RFC 4291 §2.2) and carry no octal ambiguity.
        return Ipv6Addr::from_str(text)
            .map(IpAddr::V6)
            .map_err(|_| IpEntryError::NotAnAddress(owned()));
    }
    // No dot, no colon: `3405803785`, `0x7f000001` — integer forms that inet_aton
    // accepts. Never an address here.
    Err(IpEntryError::NotAnAddress(owned()))
}

fn parse_cidr(text: &str) -> Result<IpSpec, IpEntryError> {
    let owned = || text.chars().take(64).collect::<String>();
    let Some((addr, len)) = text.split_once('/') else {
        return Err(IpEntryError::NotAnAddress(owned()));
    };
    let ip = parse_ip_literal(addr)?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = parse_prefix_len(len, max).ok_or(IpEntryError::BadPrefix(owned(), max))?;
    let net = ipnet::IpNet::new(ip, prefix).map_err(|_| IpEntryError::BadPrefix(owned(), max))?;
    if net.network() != ip {
        return Err(IpEntryError::HostBitsSet {
            given: owned(),
            network: net.trunc().to_string(),
        });
    }
    Ok(IpSpec::Cidr(canonical_net(net)))
}

fn parse_range(text: &str) -> Result<IpSpec, IpEntryError> {
    let owned = || text.chars().take(100).collect::<String>();
    let mut parts = text.split('-');
    let (Some(first), Some(last), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(IpEntryError::BadRange(owned()));
    };
    let first = parse_ip_literal(first)?;
    let last = parse_ip_literal(last)?;
    // Decide the family on the canonical form: `::ffff:1.2.3.4-1.2.3.9` is one IPv4
    // range, `::ffff:1.2.3.4-::1:0:0:0` crosses out of the mapped block and is refused.
    let (first, last) = (first.to_canonical(), last.to_canonical());
    match (first, last) {
        (IpAddr::V4(a), IpAddr::V4(b)) if a > b => Err(IpEntryError::RangeReversed(owned())),
        (IpAddr::V6(a), IpAddr::V6(b)) if a > b => Err(IpEntryError::RangeReversed(owned())),
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
            Ok(IpSpec::Range(first, last))
        }
        _ => Err(IpEntryError::RangeMixedFamilies(owned())),
    }
}

/// Decimal, no sign, no leading zero, at most `max`.
fn parse_prefix_len(text: &str, max: u8) -> Option<u8> {
    if text.is_empty()
        || text.len() > 3
        || !text.bytes().all(|b| b.is_ascii_digit())
        || (text.len() > 1 && text.starts_with('0'))
    {
        return None;
    }
    text.parse::<u8>().ok().filter(|&n| n <= max)
}

/// `::ffff:10.0.0.0/104` is `10.0.0.0/8`. A wider IPv6 network that merely contains
/// the mapped block (`::/0`) stays IPv6: it says "all IPv6", not "all IPv4".
fn canonical_net(net: ipnet::IpNet) -> ipnet::IpNet {
    match net {
        ipnet::IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.network().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                .map(ipnet::IpNet::V4)
                .unwrap_or(net),
            None => net,
        },
        other => other,
    }
}

// ---------------------------------------------------------------------------
// Lookup structure

/// Disjoint spans sorted by start; `starts` is kept apart so the binary search walks
/// one dense array.
#[derive(Debug, Clone, Default)]
struct Spans<T> {
    starts: Vec<T>,
    /// (last address of the span, index of the entry reported for it)
    ends: Vec<(T, u32)>,
}

impl<T: Copy + Ord> Spans<T> {
    #[inline]
    fn lookup(&self, x: T) -> Option<usize> {
        let i = self.starts.partition_point(|&s| s <= x);
        let (end, entry) = *self.ends.get(i.checked_sub(1)?)?;
        (x <= end).then_some(entry as usize)
    }
}

/// Sweep over all entry bounds: between two consecutive boundaries the set of covering
/// entries is constant, so each elementary interval gets one reporting entry (the
/// narrowest, then the first listed). Neighbours reporting the same entry are joined.
fn build_spans(entries: &[IpEntry]) -> (Spans<u32>, Spans<u128>) {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let index = u32::try_from(i).unwrap_or(u32::MAX);
        match entry.spec.bounds() {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                v4.push((u128::from(u32::from(a)), u128::from(u32::from(b)), index))
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => v6.push((u128::from(a), u128::from(b), index)),
            // Parsing never yields mixed families.
            _ => {}
        }
    }
    let v4 = sweep(v4);
    let v4 = Spans {
        starts: v4.starts.iter().map(|&s| s as u32).collect(),
        ends: v4.ends.iter().map(|&(e, i)| (e as u32, i)).collect(),
    };
    (v4, sweep(v6))
}

fn sweep(intervals: Vec<(u128, u128, u32)>) -> Spans<u128> {
    // Events: at `start` an entry becomes active; after `end` it stops. `end + 1` can
    // overflow for `::/0`-like entries, so a stop is keyed by `end` and applied after
    // the address `end` has been emitted. Each event carries (width, index), the key
    // of the active set: its first element is the entry to report.
    let mut starts: Vec<(u128, (u128, u32))> =
        intervals.iter().map(|&(s, e, i)| (s, (e - s, i))).collect();
    let mut stops: Vec<(u128, (u128, u32))> =
        intervals.iter().map(|&(s, e, i)| (e, (e - s, i))).collect();
    starts.sort_unstable();
    stops.sort_unstable();

    let mut active: BTreeSet<(u128, u32)> = BTreeSet::new();
    let mut out = Spans::<u128>::default();
    let (mut si, mut ei) = (0usize, 0usize);
    // The first address not yet emitted.
    let mut cursor: u128 = 0;

    loop {
        let next_start = starts.get(si).map(|&(s, _)| s);
        let next_stop = stops.get(ei).map(|&(e, _)| e);
        let boundary = match (next_start, next_stop) {
            (None, None) => break,
            (Some(s), None) => Boundary::Start(s),
            (None, Some(e)) => Boundary::Stop(e),
            // A start at `s` takes effect at `s`, a stop at `e` after `e`: when s <= e
            // the start comes first.
            (Some(s), Some(e)) if s <= e => Boundary::Start(s),
            (_, Some(e)) => Boundary::Stop(e),
        };
        match boundary {
            Boundary::Start(s) => {
                if let Some(&(_, idx)) = active.first() {
                    if s > cursor {
                        push_span(&mut out, cursor, s - 1, idx);
                    }
                }
                cursor = s;
                while let Some(&(start, key)) = starts.get(si) {
                    if start != s {
                        break;
                    }
                    active.insert(key);
                    si += 1;
                }
            }
            Boundary::Stop(e) => {
                if let Some(&(_, idx)) = active.first() {
                    push_span(&mut out, cursor, e, idx);
                }
                while let Some(&(stop, key)) = stops.get(ei) {
                    if stop != e {
                        break;
                    }
                    active.remove(&key);
                    ei += 1;
                }
                match e.checked_add(1) {
                    Some(next) => cursor = next,
                    // Emitted up to the last address of the family: nothing can follow.
                    None => break,
                }
            }
        }
    }
    out
}

enum Boundary {
    Start(u128),
    Stop(u128),
}

fn push_span(out: &mut Spans<u128>, first: u128, last: u128, entry: u32) {
    if let Some((end, prev_entry)) = out.ends.last_mut() {
        if *prev_entry == entry && end.checked_add(1) == Some(first) {
            *end = last;
            return;
        }
    }
    out.starts.push(first);
    out.ends.push((last, entry));
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic on bad fixtures
mod tests;
