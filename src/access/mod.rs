//! Access areas: which part of the dashboard a request is for (host + normalised
//! path), and whether the client may enter it (IP/CIDR/range lists, countries).
//!
//! `access` decides; it never renders pages or touches sockets. Its only I/O is
//! reading the GeoIP database file. The gateway calls, in this order:
//! [`normalise`] (400 on error) → [`AccessPolicy::area_for`] → [`Geo::lookup`]
//! (only if [`AccessArea::needs_country`]) → [`decide`].

pub mod area;
pub mod config;
pub mod geo;
pub mod ip_list;
pub mod path;

pub use area::{
    decide, AccessArea, AccessPolicy, AreaAuth, AreaTwoFactor, ClientFacts, Decision, DenyReason,
    DEFAULT_AREA_NAME, DEFAULT_AREA_TITLE,
};
pub use config::{validate, RawAccess, RawArea, RawGeoip};
pub use geo::{Country, CountryCodeError, Geo, GeoError, GeoInfo};
pub use ip_list::{parse_ip_strict, IpEntry, IpEntryError, IpList, IpSpec, RawIpEntry, RawIpTable};
pub use path::{normalise, NormalPath, PathError, PathPrefix, PrefixError};

/// Errors of the access stage, for conversion into the gateway's request error.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The request path cannot be normalised unambiguously: 400, never forwarded.
    #[error("bad request path: {0}")]
    Path(#[from] PathError),
    /// The client's area refused it: 403 with the area's title.
    #[error("access to {area} denied: {reason}")]
    Denied { area: String, reason: DenyReason },
    /// The GeoIP database could not be (re)loaded.
    #[error(transparent)]
    Geo(#[from] GeoError),
}
