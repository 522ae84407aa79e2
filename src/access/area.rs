//! Access areas ("Login Access", "Call Recording Access", …): which area a request
//! falls into, and whether a client may enter it. Both are pure functions so the
//! rules are tested without sockets.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use super::geo::Country;
use super::ip_list::IpList;
use super::path::{NormalPath, PathPrefix};

/// The name of the area that covers every request no other area matches.
pub const DEFAULT_AREA_NAME: &str = "default";
/// Its title unless the configuration gives one.
pub const DEFAULT_AREA_TITLE: &str = "Login Access";

/// A part of the dashboard with its own admission rules.
#[derive(Debug, Clone)]
pub struct AccessArea {
    /// Short identifier used in config, audit lines and metrics (`recordings`).
    pub name: String,
    /// What users and admins read ("Call Recording Access").
    pub title: String,
    /// Path prefixes (normal form). Empty for the default area.
    pub paths: Vec<PathPrefix>,
    /// Host names in lower case, without port or trailing dot; empty = any host.
    pub hosts: Vec<String>,
    /// Whether paths compare without ASCII case (for upstreams that do so).
    pub case_insensitive: bool,
    /// Allowed countries; `None` = every country.
    pub countries: Option<BTreeSet<Country>>,
    /// Whether only addresses on `allow` are admitted.
    pub ip_restriction: bool,
    /// Addresses admitted (with `ip_restriction`) and addresses whose unknown country
    /// is excused (with `countries`).
    pub allow: IpList,
    /// What a request needs besides the address rules (a gatehouse session, nothing,
    /// or a session or an `Authorization` header for the upstream to judge).
    pub auth: AreaAuth,
    /// The area's own second-factor rule, overriding `[two_factor]` and the
    /// per-domain and per-user rules for sign-ins and sessions in this area.
    pub two_factor: AreaTwoFactor,
}

/// `[[access.area]] auth`: what a request needs besides the address rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AreaAuth {
    /// A gatehouse session, with the second factor as configured.
    #[default]
    Session,
    /// Nothing: only the area's IP/country rules (APIs with their own tokens,
    /// webhooks, provisioning URLs).
    None,
    /// A gatehouse session, or an `Authorization` header (judged by the
    /// upstream) from an address on the area's `allow` list.
    SessionOrToken,
}

impl AreaAuth {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "session" => Self::Session,
            "none" => Self::None,
            "session_or_token" => Self::SessionOrToken,
            _ => return None,
        })
    }
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Session => "session",
            Self::None => "none",
            Self::SessionOrToken => "session_or_token",
        }
    }
    /// Machine clients (no browser) are expected here: refusals are JSON.
    pub fn serves_machines(&self) -> bool {
        *self != Self::Session
    }
}

/// `[[access.area]] two_factor`: the area's own second-factor rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AreaTwoFactor {
    /// The `[two_factor]` mode with its per-domain and per-user rules.
    #[default]
    Inherit,
    /// No gatehouse challenge (e.g. a host reached through single sign-on).
    Off,
    Required,
    /// Required unless the client is in `two_factor.trusted_networks`.
    OutsideTrusted,
}

impl AreaTwoFactor {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "inherit" => Self::Inherit,
            "off" => Self::Off,
            "required" => Self::Required,
            "outside_trusted" => Self::OutsideTrusted,
            _ => return None,
        })
    }
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Inherit => "inherit",
            Self::Off => "off",
            Self::Required => "required",
            Self::OutsideTrusted => "outside_trusted",
        }
    }
}

/// All areas of one configuration, with the default area always present.
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    areas: Vec<AccessArea>,
    default: AccessArea,
}

/// What is known about the client when deciding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientFacts {
    pub ip: IpAddr,
    /// `None` when no database is configured or the address is not in it.
    pub country: Option<Country>,
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(DenyReason),
}

/// Why a client was refused; `Display` is meant for audit lines and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// The client's country is known and not on the area's list.
    CountryNotAllowed(Country),
    /// The area lists countries, the client's is unknown, and the address is not on
    /// the area's list.
    UnknownCountry,
    /// The area admits listed addresses only, and this one is not.
    IpNotListed,
}

/// Whether `client` may enter `area`.
///
/// * country: allowed if the area sets no countries, or the client's country is
///   listed, or the country is unknown (private address, not in the database) and the
///   address is on the area's list — so an office on a private network can be let in
///   explicitly, while unknown addresses are not let in by default.
/// * address: allowed if the area has no `ip_restriction`, or the address is listed.
///
/// Both must hold. IPv4-mapped IPv6 addresses are matched as IPv4.
pub fn decide(area: &AccessArea, client: &ClientFacts) -> Decision {
    let ip = client.ip.to_canonical();
    let restricted_countries = area.countries.as_ref().filter(|c| !c.is_empty());
    if let Some(countries) = restricted_countries {
        match client.country {
            Some(country) if countries.contains(&country) => {}
            Some(country) => return Decision::Deny(DenyReason::CountryNotAllowed(country)),
            None if area.allow.contains(ip) => {}
            None => return Decision::Deny(DenyReason::UnknownCountry),
        }
    }
    if area.ip_restriction && !area.allow.contains(ip) {
        return Decision::Deny(DenyReason::IpNotListed);
    }
    Decision::Allow
}

impl AccessArea {
    /// The default area when the configuration has none: everyone is admitted.
    pub fn allow_all_default() -> Self {
        Self {
            name: DEFAULT_AREA_NAME.to_owned(),
            title: DEFAULT_AREA_TITLE.to_owned(),
            paths: Vec::new(),
            hosts: Vec::new(),
            case_insensitive: false,
            countries: None,
            ip_restriction: false,
            allow: IpList::default(),
            auth: AreaAuth::Session,
            two_factor: AreaTwoFactor::Inherit,
        }
    }

    pub fn is_default(&self) -> bool {
        self.name == DEFAULT_AREA_NAME
    }

    /// Whether the area restricts anything at all (so the caller may skip the GeoIP
    /// lookup for areas that do not).
    pub fn needs_country(&self) -> bool {
        self.countries.as_ref().is_some_and(|c| !c.is_empty())
    }

    /// The specificity of this area's best match for the request, if it matches:
    /// host-specific beats any-host, then the longest prefix.
    fn match_rank(&self, host: &str, path: &NormalPath) -> Option<(bool, usize)> {
        let host_specific = if self.hosts.is_empty() {
            false
        } else if self.hosts.iter().any(|h| h == host) {
            true
        } else {
            return None;
        };
        self.paths
            .iter()
            .filter(|prefix| path.is_within(prefix, self.case_insensitive))
            .map(PathPrefix::specificity)
            .max()
            .map(|len| (host_specific, len))
    }
}

impl AccessPolicy {
    /// Build from checked areas (see `config::validate`). An area named `default` is
    /// taken as the default area; without one, the default admits everyone.
    pub fn new(areas: Vec<AccessArea>) -> Self {
        let mut default = None;
        let mut others = Vec::with_capacity(areas.len());
        for area in areas {
            if area.is_default() && default.is_none() {
                default = Some(area);
            } else {
                others.push(area);
            }
        }
        Self {
            areas: others,
            default: default.unwrap_or_else(AccessArea::allow_all_default),
        }
    }

    /// The area for a request: the most specific match by host, then by longest path
    /// prefix; on a tie the area listed first. `host` is the request's authority as
    /// received (`Host` or `:authority`); case and a `:port` are ignored. The caller
    /// must have refused hosts it does not serve, or an attacker chooses the host.
    pub fn area_for(&self, host: &str, path: &NormalPath) -> &AccessArea {
        let host = normal_host(host);
        let mut best: Option<((bool, usize), &AccessArea)> = None;
        for area in &self.areas {
            if let Some(rank) = area.match_rank(&host, path) {
                if best.is_none_or(|(b, _)| rank > b) {
                    best = Some((rank, area));
                }
            }
        }
        best.map_or(&self.default, |(_, area)| area)
    }

    pub fn default_area(&self) -> &AccessArea {
        &self.default
    }

    /// Every area, the default last.
    pub fn areas(&self) -> impl Iterator<Item = &AccessArea> {
        self.areas.iter().chain(std::iter::once(&self.default))
    }

    pub fn area(&self, name: &str) -> Option<&AccessArea> {
        self.areas().find(|a| a.name == name)
    }

    /// Whether any area restricts by country (GeoIP lookups are needed at all).
    pub fn uses_countries(&self) -> bool {
        self.areas().any(AccessArea::needs_country)
    }
}

impl Default for AccessPolicy {
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow)
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DenyReason::CountryNotAllowed(country) => write!(f, "country {country} not allowed"),
            DenyReason::UnknownCountry => f.write_str("country unknown and address not listed"),
            DenyReason::IpNotListed => f.write_str("address not listed"),
        }
    }
}

impl DenyReason {
    /// Stable identifier for metrics and JSON audit fields.
    pub fn code(&self) -> &'static str {
        match self {
            DenyReason::CountryNotAllowed(_) => "country_not_allowed",
            DenyReason::UnknownCountry => "unknown_country",
            DenyReason::IpNotListed => "ip_not_listed",
        }
    }
}

/// Host as compared with configured hosts: lower case, without `:port`, without the
/// trailing dot of a fully qualified name (`dash.example.com.` is the same host, and
/// must not fall out of a host-specific area).
pub fn normal_host(host: &str) -> String {
    let without_port = if let Some(rest) = host.strip_prefix('[') {
        // `[2001:db8::1]:443`
        match rest.find(']') {
            Some(end) => &host[..end + 2],
            None => host,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        }
    };
    let trimmed = without_port.strip_suffix('.').unwrap_or(without_port);
    trimmed.to_ascii_lowercase()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic on bad fixtures
mod tests {
    use super::*;
    use crate::access::ip_list::{IpEntry, IpSpec};
    use crate::access::path::normalise;

    fn country(code: &str) -> Country {
        code.parse().unwrap()
    }

    fn allow(entries: &[&str]) -> IpList {
        IpList::new(
            entries
                .iter()
                .map(|e| IpEntry::new(e.parse::<IpSpec>().unwrap(), "note"))
                .collect(),
        )
    }

    fn area(name: &str, paths: &[&str], hosts: &[&str]) -> AccessArea {
        AccessArea {
            name: name.into(),
            title: name.into(),
            paths: paths
                .iter()
                .map(|p| PathPrefix::parse(p).unwrap())
                .collect(),
            hosts: hosts.iter().map(|h| normal_host(h)).collect(),
            ..AccessArea::allow_all_default()
        }
    }

    /// The setup of SECURITY-TESTS.md: `/recordings/` admits 203.0.113.0/24 and DE.
    fn recordings() -> AccessArea {
        AccessArea {
            title: "Call Recording Access".into(),
            countries: Some([country("DE")].into()),
            ip_restriction: true,
            allow: allow(&["203.0.113.0/24"]),
            ..area("recordings", &["/recordings/"], &[])
        }
    }

    fn facts(ip: &str, c: Option<&str>) -> ClientFacts {
        ClientFacts {
            ip: ip.parse().unwrap(),
            country: c.map(country),
        }
    }

    fn name_for<'a>(policy: &'a AccessPolicy, host: &str, path: &str) -> &'a str {
        &policy.area_for(host, &normalise(path).unwrap()).name
    }

    #[test]
    fn most_specific_area_wins() {
        let policy = AccessPolicy::new(vec![
            area("api", &["/api"], &[]),
            area("recordings", &["/recordings/"], &[]),
            area("recordings-archive", &["/recordings/archive/"], &[]),
            area("dash-admin", &["/admin/"], &["dash.example.com"]),
            area("admin", &["/admin/", "/admin/users/"], &[]),
            area("dash-root", &["/"], &["dash.example.com"]),
        ]);
        let on = |host, path| name_for(&policy, host, path);
        assert_eq!(on("pbx.example.com", "/"), "default");
        assert_eq!(on("pbx.example.com", "/login"), "default");
        assert_eq!(on("pbx.example.com", "/recordings"), "recordings");
        assert_eq!(on("pbx.example.com", "/recordings/"), "recordings");
        assert_eq!(
            on("pbx.example.com", "/recordings/2026/a.wav"),
            "recordings"
        );
        assert_eq!(on("pbx.example.com", "/recordingsX"), "default");
        assert_eq!(
            on("pbx.example.com", "/recordings/archive"),
            "recordings-archive"
        );
        assert_eq!(
            on("pbx.example.com", "/recordings/archive/x"),
            "recordings-archive"
        );
        assert_eq!(on("pbx.example.com", "/recordings/archivex"), "recordings");
        assert_eq!(on("pbx.example.com", "/api"), "api");
        assert_eq!(on("pbx.example.com", "/api/v1/calls"), "api");
        assert_eq!(on("pbx.example.com", "/apix"), "default");
        assert_eq!(on("pbx.example.com", "/admin/users/1"), "admin");
        // A host-specific match beats any-host matches, even with a shorter prefix.
        assert_eq!(on("dash.example.com", "/admin/users/1"), "dash-admin");
        assert_eq!(on("dash.example.com", "/recordings/x"), "dash-root");
        // Host compare ignores case, port and the FQDN dot.
        assert_eq!(on("DASH.Example.COM:8443", "/admin/"), "dash-admin");
        assert_eq!(on("dash.example.com.", "/admin/"), "dash-admin");
        assert_eq!(on("dash.example.com.:443", "/admin/"), "dash-admin");
        assert_eq!(on("evil-dash.example.com", "/admin/"), "admin");
    }

    #[test]
    fn ties_go_to_the_area_listed_first() {
        let policy = AccessPolicy::new(vec![
            area("first", &["/x/"], &[]),
            area("second", &["/x/"], &[]),
        ]);
        assert_eq!(name_for(&policy, "h", "/x/1"), "first");
    }

    #[test]
    fn case_insensitive_areas_match_any_ascii_case() {
        let mut rec = recordings();
        let policy = AccessPolicy::new(vec![rec.clone()]);
        assert_eq!(name_for(&policy, "h", "/RECORDINGS/x"), "default");
        rec.case_insensitive = true;
        let policy = AccessPolicy::new(vec![rec]);
        assert_eq!(name_for(&policy, "h", "/RECORDINGS/x"), "recordings");
        assert_eq!(name_for(&policy, "h", "/Recordings"), "recordings");
        assert_eq!(name_for(&policy, "h", "/%52ecordings/x"), "recordings");
    }

    #[test]
    fn configured_default_area_replaces_the_allow_all_one() {
        let mut login = area(DEFAULT_AREA_NAME, &[], &[]);
        login.title = DEFAULT_AREA_TITLE.into();
        login.ip_restriction = true;
        login.allow = allow(&["10.0.0.0/8"]);
        let policy = AccessPolicy::new(vec![recordings(), login]);
        let default = policy.area_for("h", &normalise("/login").unwrap());
        assert!(default.is_default());
        assert_eq!(default.title, "Login Access");
        assert!(!decide(default, &facts("198.51.100.7", None)).is_allowed());
        assert_eq!(policy.areas().count(), 2);
        assert!(policy.area("recordings").is_some());
        assert!(policy.uses_countries());

        let open = AccessPolicy::default();
        assert!(decide(open.default_area(), &facts("198.51.100.7", None)).is_allowed());
        assert!(!open.uses_countries());
    }

    #[test]
    fn decide_truth_table() {
        use Decision::*;
        use DenyReason::*;
        let de = country("DE");
        let us = country("US");
        // (countries, ip_restriction, client ip listed?, client country) → decision
        let rows: &[(bool, bool, bool, Option<Country>, Decision)] = &[
            // no restrictions at all
            (false, false, false, None, Allow),
            (false, false, false, Some(us), Allow),
            // countries only
            (true, false, false, Some(de), Allow),
            (true, false, true, Some(de), Allow),
            (true, false, false, Some(us), Deny(CountryNotAllowed(us))),
            (true, false, true, Some(us), Deny(CountryNotAllowed(us))),
            (true, false, false, None, Deny(UnknownCountry)),
            (true, false, true, None, Allow),
            // IP restriction only
            (false, true, true, None, Allow),
            (false, true, true, Some(us), Allow),
            (false, true, false, Some(de), Deny(IpNotListed)),
            (false, true, false, None, Deny(IpNotListed)),
            // both
            (true, true, true, Some(de), Allow),
            (true, true, true, None, Allow),
            (true, true, false, Some(de), Deny(IpNotListed)),
            (true, true, true, Some(us), Deny(CountryNotAllowed(us))),
            (true, true, false, Some(us), Deny(CountryNotAllowed(us))),
            (true, true, false, None, Deny(UnknownCountry)),
        ];
        for &(countries, ip_restriction, listed, client_country, expected) in rows {
            let area = AccessArea {
                countries: countries.then(|| [de].into()),
                ip_restriction,
                allow: allow(&["203.0.113.0/24"]),
                ..area("t", &["/t/"], &[])
            };
            let ip = if listed {
                "203.0.113.9"
            } else {
                "198.51.100.7"
            };
            let got = decide(&area, &facts(ip, None).with_country(client_country));
            assert_eq!(
                got, expected,
                "countries={countries} ip_restriction={ip_restriction} listed={listed} country={client_country:?}"
            );
        }
    }

    #[test]
    fn empty_country_set_means_every_country() {
        let area = AccessArea {
            countries: Some(BTreeSet::new()),
            ..area("t", &["/t/"], &[])
        };
        assert!(decide(&area, &facts("198.51.100.7", None)).is_allowed());
        assert!(!area.needs_country());
    }

    #[test]
    fn recordings_area_refuses_other_country_and_unlisted_addresses() {
        let rec = recordings();
        // SECURITY-TESTS setup: attacker 198.51.100.7 (US).
        assert_eq!(
            decide(&rec, &facts("198.51.100.7", Some("US"))),
            Decision::Deny(DenyReason::CountryNotAllowed(country("US")))
        );
        assert_eq!(
            decide(&rec, &facts("203.0.113.9", Some("DE"))),
            Decision::Allow
        );
        // 15: private/loopback → no country → refused unless listed.
        assert_eq!(
            decide(&rec, &facts("10.0.0.5", None)),
            Decision::Deny(DenyReason::UnknownCountry)
        );
        assert_eq!(
            decide(&rec, &facts("127.0.0.1", None)),
            Decision::Deny(DenyReason::UnknownCountry)
        );
    }

    #[test]
    fn mapped_ipv6_client_is_matched_as_ipv4() {
        // SECURITY-TESTS 17: `::ffff:203.0.113.9` is 203.0.113.9.
        let rec = recordings();
        assert!(decide(&rec, &facts("::ffff:203.0.113.9", Some("DE"))).is_allowed());
        assert!(decide(&rec, &facts("::ffff:203.0.113.9", None)).is_allowed());
        assert!(!decide(&rec, &facts("::ffff:198.51.100.7", Some("DE"))).is_allowed());
    }

    #[test]
    fn deny_reasons_read_well_in_audit_lines() {
        assert_eq!(
            DenyReason::CountryNotAllowed(country("US")).to_string(),
            "country US not allowed"
        );
        assert_eq!(
            DenyReason::UnknownCountry.to_string(),
            "country unknown and address not listed"
        );
        assert_eq!(DenyReason::IpNotListed.to_string(), "address not listed");
        assert_eq!(DenyReason::IpNotListed.code(), "ip_not_listed");
    }

    #[test]
    fn hosts_are_normalised() {
        assert_eq!(normal_host("Dash.Example.com:443"), "dash.example.com");
        assert_eq!(normal_host("dash.example.com."), "dash.example.com");
        assert_eq!(normal_host("[2001:DB8::1]:443"), "[2001:db8::1]");
        assert_eq!(normal_host("[2001:db8::1]"), "[2001:db8::1]");
        assert_eq!(normal_host("192.0.2.1:80"), "192.0.2.1");
        assert_eq!(normal_host("host:notaport"), "host:notaport");
    }

    impl ClientFacts {
        fn with_country(mut self, country: Option<Country>) -> Self {
            self.country = country;
            self
        }
    }
}
