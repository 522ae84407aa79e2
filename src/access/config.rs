//! `[geoip]` and `[[access.area]]` as written in TOML, and their validation into an
//! [`AccessPolicy`]. Every problem is reported, each under its key path; array
//! indices count from 0 in the order of the file (`access.area[0]` is the first
//! `[[access.area]]`).

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use serde::Deserialize;

use super::area::{
    AccessArea, AccessPolicy, AreaAuth, AreaTwoFactor, DEFAULT_AREA_NAME, DEFAULT_AREA_TITLE,
};
use super::geo::Country;
use super::ip_list::{IpList, RawIpEntry};
use super::path::PathPrefix;
use crate::config::ConfigIssue;

/// Defaults, in one place (they match `config/gatehouse.example.toml`).
pub mod defaults {
    /// Paths compare case-sensitively, as RFC 3986 §6.2.2.1 says they are.
    pub const CASE_INSENSITIVE: bool = false;
    /// Areas do not restrict by address unless told to.
    pub const IP_RESTRICTION: bool = false;
    pub fn case_insensitive() -> bool {
        CASE_INSENSITIVE
    }
    pub fn ip_restriction() -> bool {
        IP_RESTRICTION
    }
}

/// `[geoip]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGeoip {
    /// Path of a MaxMind DB country (or city) database, e.g.
    /// `/var/lib/GeoIP/GeoLite2-Country.mmdb`. Absent: countries are unknown, and
    /// areas may not restrict by country. Reloaded when the file changes.
    #[serde(default)]
    pub database: Option<PathBuf>,
}

/// `[access]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccess {
    /// `[[access.area]]` entries. The area named `default` ("Login Access") covers
    /// every request no other area matches; without it, such requests are admitted.
    #[serde(default)]
    pub area: Vec<RawArea>,
}

/// One `[[access.area]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawArea {
    /// Identifier used in audit lines and metrics: letters, digits, `-`, `_`.
    pub name: String,
    /// Shown to users on the access-denied page, e.g. "Call Recording Access".
    /// Defaults to "Login Access" for `default`, else to the name.
    #[serde(default)]
    pub title: Option<String>,
    /// Path prefixes in normal form, e.g. `["/recordings/"]`. `/recordings/` also
    /// covers `/recordings`; matching is by whole segments. Required except for
    /// `default`, which takes none.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Host names this area applies to (without port); empty = every host. A
    /// host-specific area beats an any-host one.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Compare paths without ASCII case, for upstreams that do the same.
    #[serde(default = "defaults::case_insensitive")]
    pub case_insensitive: bool,
    /// ISO 3166-1 alpha-2 codes of the countries admitted, e.g. `["GB", "SE"]`.
    /// Absent or empty = every country. Needs `geoip.database`. Clients whose country
    /// is unknown are admitted only if their address is on `allow`.
    #[serde(default)]
    pub countries: Option<Vec<String>>,
    /// Admit only the addresses on `allow`.
    #[serde(default = "defaults::ip_restriction")]
    pub ip_restriction: bool,
    /// Addresses: `{ ip = "…" }`, `{ cidr = "…" }`, `{ range = "first-last" }`, each
    /// with an optional `note`, or plain strings.
    #[serde(default)]
    pub allow: Vec<RawIpEntry>,
    /// What a request needs besides the address rules: "session" (a gatehouse
    /// session, 2FA as configured), "none" (only the address and country rules:
    /// APIs with their own tokens, webhooks, provisioning URLs) or
    /// "session_or_token" (a session, or an `Authorization` header the dashboard
    /// judges, from an address on `allow` only). Absent = "session".
    #[serde(default)]
    pub auth: Option<String>,
    /// The area's second-factor rule: "inherit" (`[two_factor]` and its domain and
    /// user rules), "off", "required" or "outside_trusted". A session that skipped
    /// the challenge is not accepted in an area that would have asked for it.
    /// Absent = "inherit". Only settable here, never from the console.
    #[serde(default)]
    pub two_factor: Option<String>,
}

/// Check the raw `[[access.area]]` list. `geoip_configured` says whether
/// `geoip.database` is set (countries cannot be checked without it).
pub fn validate(raw: &RawAccess, geoip_configured: bool) -> Result<AccessPolicy, Vec<ConfigIssue>> {
    let mut issues = Vec::new();
    let mut areas = Vec::with_capacity(raw.area.len());
    let mut seen_names: HashMap<&str, usize> = HashMap::new();
    // (host or "*", prefix lower-cased) → area index, to catch two areas claiming
    // the same prefix for the same host, where the winner would be accidental.
    let mut claimed: HashMap<(String, String), usize> = HashMap::new();

    for (i, area) in raw.area.iter().enumerate() {
        let key = format!("access.area[{i}]");
        let before = issues.len();

        check_name(&area.name, &key, i, &mut seen_names, &mut issues);
        let is_default = area.name == DEFAULT_AREA_NAME;

        let paths = check_paths(area, is_default, &key, &mut issues);
        let hosts = check_hosts(&area.hosts, &key, &mut issues);
        let countries = check_countries(area, geoip_configured, &key, &mut issues);

        let allow = match IpList::from_raw(&area.allow, &format!("{key}.allow")) {
            Ok(list) => list,
            Err(mut bad) => {
                issues.append(&mut bad);
                IpList::default()
            }
        };
        if area.ip_restriction && area.allow.is_empty() {
            issues.push(ConfigIssue::new(
                format!("{key}.allow"),
                "ip_restriction = true with an empty allow list would lock everyone out; \
                 list the addresses to admit, or set ip_restriction = false",
            ));
        }

        for prefix in &paths {
            let scopes: Vec<String> = if hosts.is_empty() {
                vec!["*".to_owned()]
            } else {
                hosts.clone()
            };
            for scope in scopes {
                let claim = (scope.clone(), prefix.as_str().to_ascii_lowercase());
                if let Some(&other) = claimed.get(&claim) {
                    if other != i {
                        issues.push(ConfigIssue::new(
                            format!("{key}.paths"),
                            format!(
                                "{prefix:?} is already claimed by access.area[{other}] ({:?}) \
                                 for the same hosts",
                                raw.area[other].name
                            ),
                        ));
                    }
                } else {
                    claimed.insert(claim, i);
                }
            }
        }

        let auth = match area.auth.as_deref().map(AreaAuth::parse) {
            None => AreaAuth::Session,
            Some(Some(a)) => a,
            Some(None) => {
                issues.push(ConfigIssue::new(
                    format!("{key}.auth"),
                    "must be \"session\", \"none\" or \"session_or_token\"",
                ));
                AreaAuth::Session
            }
        };
        if auth == AreaAuth::SessionOrToken && area.allow.is_empty() {
            issues.push(ConfigIssue::new(
                format!("{key}.allow"),
                "auth = \"session_or_token\" admits tokens only from the addresses on allow; \
                 list them",
            ));
        }
        let two_factor = match area.two_factor.as_deref().map(AreaTwoFactor::parse) {
            None => AreaTwoFactor::Inherit,
            Some(Some(t)) => t,
            Some(None) => {
                issues.push(ConfigIssue::new(
                    format!("{key}.two_factor"),
                    "must be \"inherit\", \"off\", \"required\" or \"outside_trusted\"",
                ));
                AreaTwoFactor::Inherit
            }
        };

        if issues.len() == before {
            areas.push(AccessArea {
                auth,
                two_factor,
                name: area.name.clone(),
                title: area.title.clone().unwrap_or_else(|| {
                    if is_default {
                        DEFAULT_AREA_TITLE.to_owned()
                    } else {
                        area.name.clone()
                    }
                }),
                paths,
                hosts,
                case_insensitive: area.case_insensitive,
                countries,
                ip_restriction: area.ip_restriction,
                allow,
            });
        }
    }

    if issues.is_empty() {
        Ok(AccessPolicy::new(areas))
    } else {
        Err(issues)
    }
}

/// `[geoip]` alone: the database path must at least be non-empty here; loading
/// (and its errors under `geoip.database`) happens in `Geo::open`.
pub fn validate_geoip(raw: &RawGeoip) -> Result<Option<PathBuf>, Vec<ConfigIssue>> {
    match &raw.database {
        Some(path) if path.as_os_str().is_empty() => Err(vec![ConfigIssue::new(
            super::geo::GEOIP_DATABASE_KEY,
            "empty path; remove the key to run without GeoIP",
        )]),
        other => Ok(other.clone()),
    }
}

// ---------------------------------------------------------------------------

fn check_name<'a>(
    name: &'a str,
    key: &str,
    index: usize,
    seen: &mut HashMap<&'a str, usize>,
    issues: &mut Vec<ConfigIssue>,
) {
    if name.is_empty() {
        issues.push(ConfigIssue::new(format!("{key}.name"), "must not be empty"));
        return;
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        issues.push(ConfigIssue::new(
            format!("{key}.name"),
            format!("{name:?}: use letters, digits, '-' and '_' only"),
        ));
    }
    if let Some(first) = seen.insert(name, index) {
        issues.push(ConfigIssue::new(
            format!("{key}.name"),
            format!("{name:?} is already the name of access.area[{first}]"),
        ));
    }
}

fn check_paths(
    area: &RawArea,
    is_default: bool,
    key: &str,
    issues: &mut Vec<ConfigIssue>,
) -> Vec<PathPrefix> {
    if is_default {
        if !area.paths.is_empty() {
            issues.push(ConfigIssue::new(
                format!("{key}.paths"),
                "the default area covers everything no other area matches and takes no paths",
            ));
        }
        return Vec::new();
    }
    if area.paths.is_empty() {
        issues.push(ConfigIssue::new(
            format!("{key}.paths"),
            "list at least one path prefix, e.g. [\"/recordings/\"]",
        ));
    }
    let mut prefixes = Vec::with_capacity(area.paths.len());
    for (j, text) in area.paths.iter().enumerate() {
        let path_key = format!("{key}.paths[{j}]");
        match PathPrefix::parse(text) {
            Ok(prefix) => {
                // Escaped non-ASCII has case variants (`%C3%A9` é vs `%C3%89` É)
                // that ASCII folding does not see.
                if area.case_insensitive && text.contains('%') {
                    issues.push(ConfigIssue::new(
                        path_key,
                        format!(
                            "{text:?}: percent-escapes cannot be compared case-insensitively; \
                             use an ASCII prefix or case_insensitive = false"
                        ),
                    ));
                } else {
                    prefixes.push(prefix);
                }
            }
            Err(err) => issues.push(ConfigIssue::new(path_key, format!("{text:?}: {err}"))),
        }
    }
    prefixes
}

fn check_hosts(hosts: &[String], key: &str, issues: &mut Vec<ConfigIssue>) -> Vec<String> {
    let mut out = Vec::with_capacity(hosts.len());
    for (j, host) in hosts.iter().enumerate() {
        let host_key = format!("{key}.hosts[{j}]");
        let problem = if host.is_empty() {
            Some("must not be empty".to_owned())
        } else if host.starts_with('*') {
            Some(format!(
                "{host:?}: wildcards are not supported; list each host"
            ))
        } else if host.contains("://") || host.contains('/') {
            Some(format!(
                "{host:?}: write the host name only, without scheme or path"
            ))
        } else if host.starts_with('[') {
            let inner = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
            match inner.map(str::parse::<std::net::Ipv6Addr>) {
                Some(Ok(_)) => None,
                _ => Some(format!(
                    "{host:?}: an IPv6 literal is written [address], without port"
                )),
            }
        } else if host.contains(':') {
            Some(format!(
                "{host:?}: hosts are matched without the port; remove it"
            ))
        } else if !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            Some(format!("{host:?} is not a host name"))
        } else {
            None
        };
        match problem {
            Some(message) => issues.push(ConfigIssue::new(host_key, message)),
            None => out.push(super::area::normal_host(host)),
        }
    }
    out
}

fn check_countries(
    area: &RawArea,
    geoip_configured: bool,
    key: &str,
    issues: &mut Vec<ConfigIssue>,
) -> Option<BTreeSet<Country>> {
    let codes = area.countries.as_ref().filter(|c| !c.is_empty())?;
    if !geoip_configured {
        issues.push(ConfigIssue::new(
            format!("{key}.countries"),
            "countries are set but geoip.database is not: no country could ever be \
             known; configure [geoip] database = \"…\" or remove countries",
        ));
    }
    let mut set = BTreeSet::new();
    for (j, code) in codes.iter().enumerate() {
        match code.parse::<Country>() {
            Ok(country) => {
                set.insert(country);
            }
            Err(err) => issues.push(ConfigIssue::new(
                format!("{key}.countries[{j}]"),
                err.to_string(),
            )),
        }
    }
    Some(set)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic on bad fixtures
mod tests {
    use super::*;
    use crate::access::path::normalise;
    use figment::providers::{Format, Toml};

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        #[serde(default)]
        geoip: RawGeoip,
        #[serde(default)]
        access: RawAccess,
    }

    fn parse(text: &str) -> Doc {
        figment::Figment::from(Toml::string(text))
            .extract()
            .unwrap()
    }

    fn issues(text: &str) -> Vec<ConfigIssue> {
        let doc = parse(text);
        validate(&doc.access, doc.geoip.database.is_some()).unwrap_err()
    }

    fn keys(issues: &[ConfigIssue]) -> Vec<&str> {
        issues.iter().map(|i| i.key.as_str()).collect()
    }

    /// DESIGN.md's sketch, with its `a = 1 ; b = 2` shorthand (not TOML) on separate lines.
    const DESIGN_EXAMPLE: &str = r#"
        [geoip]
        database = "/var/lib/GeoIP/GeoLite2-Country.mmdb"

        [[access.area]]
        name = "recordings"
        title = "Call Recording Access"
        paths = ["/recordings/"]
        hosts = []
        countries = ["GB", "SE"]
        ip_restriction = true
        allow = [ { ip = "1.1.1.1", note = "Office" }, { cidr = "10.1.0.0/16", note = "VPN" }, { range = "2.2.2.1-2.2.2.50", note = "Branch" } ]

        [[access.area]]
        name = "default"
        countries = ["GB"]
    "#;

    #[test]
    fn design_example_validates() {
        let doc = parse(DESIGN_EXAMPLE);
        let policy = validate(&doc.access, doc.geoip.database.is_some()).unwrap();
        let rec = policy.area("recordings").unwrap();
        assert_eq!(rec.title, "Call Recording Access");
        assert!(rec.ip_restriction);
        assert!(!rec.case_insensitive);
        assert_eq!(rec.allow.find("2.2.2.7".parse().unwrap()), Some("Branch"));
        assert_eq!(
            rec.countries
                .as_ref()
                .unwrap()
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>(),
            ["GB", "SE"]
        );
        let default = policy.area_for("pbx", &normalise("/login").unwrap());
        assert_eq!(default.title, "Login Access");
        assert!(default.needs_country());
    }

    #[test]
    fn empty_config_admits_everyone() {
        let doc = parse("");
        let policy = validate(&doc.access, false).unwrap();
        assert_eq!(policy.areas().count(), 1);
        assert!(!policy.default_area().ip_restriction);
        assert_eq!(validate_geoip(&doc.geoip), Ok(None));
    }

    #[test]
    fn every_problem_is_reported_with_its_key_path() {
        let found = issues(
            r#"
            [[access.area]]
            name = "recordings"
            paths = ["/recordings/", "recordings", "/%72ecordings/x", "/a;b"]
            hosts = ["dash.example.com:443", "*.example.com", "https://x", "[::1]", "bad host"]
            countries = ["GB", "UK", "de", "Germany"]
            ip_restriction = true
            allow = [ { ip = "1.1.1.1" }, { cidr = "10.1.2.3/16" }, "0313.0.113.9", { range = "2.2.2.9-2.2.2.1" } ]

            [[access.area]]
            name = "recordings"
            ip_restriction = true

            [[access.area]]
            name = "default"
            paths = ["/login"]

            [[access.area]]
            name = "bad name!"
            paths = ["/x/"]
            case_insensitive = true

            [[access.area]]
            name = "ci"
            paths = ["/caf%C3%A9/"]
            case_insensitive = true
            "#,
        );
        assert_eq!(
            keys(&found),
            [
                "access.area[0].paths[1]",
                "access.area[0].paths[2]",
                "access.area[0].paths[3]",
                "access.area[0].hosts[0]",
                "access.area[0].hosts[1]",
                "access.area[0].hosts[2]",
                "access.area[0].hosts[4]",
                "access.area[0].countries",
                "access.area[0].countries[1]",
                "access.area[0].countries[2]",
                "access.area[0].countries[3]",
                "access.area[0].allow[1].cidr",
                "access.area[0].allow[2]",
                "access.area[0].allow[3].range",
                "access.area[1].name",
                "access.area[1].paths",
                "access.area[1].allow",
                "access.area[2].paths",
                "access.area[3].name",
                "access.area[4].paths[0]",
            ],
            "{found:#?}"
        );
        let message = |key: &str| {
            found
                .iter()
                .find(|i| i.key == key)
                .map(|i| i.message.clone())
                .unwrap()
        };
        assert!(message("access.area[0].countries").contains("geoip.database"));
        assert!(message("access.area[0].countries[1]").contains("\"GB\""));
        assert!(message("access.area[0].countries[2]").contains("\"DE\""));
        assert!(message("access.area[0].paths[2]").contains("/recordings/x"));
        assert!(message("access.area[0].allow[1].cidr").contains("10.1.0.0/16"));
        assert!(message("access.area[1].allow").contains("lock everyone out"));
        assert!(message("access.area[1].name").contains("access.area[0]"));
    }

    #[test]
    fn two_areas_claiming_one_prefix_for_the_same_hosts_is_an_error() {
        let found = issues(
            r#"
            [[access.area]]
            name = "a"
            paths = ["/x/"]
            [[access.area]]
            name = "b"
            paths = ["/x/"]
            [[access.area]]
            name = "c"
            paths = ["/x/"]
            hosts = ["dash.example.com"]
            "#,
        );
        assert_eq!(keys(&found), ["access.area[1].paths"]);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = figment::Figment::from(Toml::string(
            r#"
            [[access.area]]
            name = "a"
            paths = ["/x/"]
            ip_restrictions = true
            "#,
        ))
        .extract::<Doc>()
        .unwrap_err()
        .to_string();
        assert!(err.contains("ip_restrictions"), "{err}");
    }

    #[test]
    fn countries_need_a_geoip_database() {
        let found = issues(
            r#"
            [[access.area]]
            name = "a"
            paths = ["/x/"]
            countries = ["DE"]
            "#,
        );
        assert_eq!(keys(&found), ["access.area[0].countries"]);
        let doc = parse(
            r#"
            [[access.area]]
            name = "a"
            paths = ["/x/"]
            countries = []
            "#,
        );
        assert!(validate(&doc.access, false).is_ok(), "empty list = all");
    }

    #[test]
    fn empty_geoip_path_is_refused() {
        let doc = parse(r#"geoip = { database = "" }"#);
        assert_eq!(
            keys(&validate_geoip(&doc.geoip).unwrap_err()),
            ["geoip.database"]
        );
    }
}
