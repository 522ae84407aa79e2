//! Writes `geoip/test-country.mmdb`, the small country database the tests and the demo
//! use. Its records have the GeoLite2-Country layout (`country.iso_code`,
//! `registered_country.iso_code`, `continent.code`, English names) over documentation
//! and a few example ranges only; no third-party data is copied. The ranges are listed
//! in `geoip/README.md` and checked by the `committed_test_database_answers_documented_ranges`
//! unit test in `src/access/geo.rs`.
//!
//! Run: `cargo run --example build_test_geoip [OUTPUT]` (default `geoip/test-country.mmdb`).
//! The build time is fixed so the output is byte-for-byte reproducible.

use std::collections::BTreeMap;
use std::error::Error;
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use mmdb_writer::Writer;
use serde::Serialize;

/// Network, ISO code, English name, continent code, continent name.
const RANGES: &[(&str, &str, &str, &str, &str)] = &[
    ("81.2.69.0/24", "GB", "United Kingdom", "EU", "Europe"),
    ("89.160.20.0/24", "SE", "Sweden", "EU", "Europe"),
    ("203.0.113.0/24", "DE", "Germany", "EU", "Europe"),
    (
        "198.51.100.0/24",
        "US",
        "United States",
        "NA",
        "North America",
    ),
    ("192.0.2.0/24", "FR", "France", "EU", "Europe"),
    ("2001:db8:de::/48", "DE", "Germany", "EU", "Europe"),
    ("2001:db8:9b::/48", "GB", "United Kingdom", "EU", "Europe"),
];

/// 2026-01-01T00:00:00Z
const BUILD_EPOCH: u64 = 1_767_225_600;

#[derive(Serialize)]
struct Names {
    en: &'static str,
}

#[derive(Serialize)]
struct CountryRecord {
    iso_code: &'static str,
    names: Names,
}

#[derive(Serialize)]
struct Continent {
    code: &'static str,
    names: Names,
}

#[derive(Serialize)]
struct Record {
    continent: Continent,
    country: CountryRecord,
    registered_country: CountryRecord,
}

fn main() -> Result<(), Box<dyn Error>> {
    let output = std::env::args()
        .nth(1)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/geoip/test-country.mmdb").into());

    let mut writer = Writer::builder("Gatehouse-Test-Country")
        .description(&[(
            "en",
            "gatehouse test country database: documentation ranges only, not real data",
        )])
        .languages(["en"])
        .build_epoch(SystemTime::UNIX_EPOCH + Duration::from_secs(BUILD_EPOCH))
        .build();

    for &(net, iso, name, continent, continent_name) in RANGES {
        let net: IpNet = net.parse()?;
        let record = Record {
            continent: Continent {
                code: continent,
                names: Names { en: continent_name },
            },
            country: CountryRecord {
                iso_code: iso,
                names: Names { en: name },
            },
            registered_country: CountryRecord {
                iso_code: iso,
                names: Names { en: name },
            },
        };
        writer.insert(net, &record)?;
    }

    let bytes = writer.to_bytes()?;
    let reader = maxminddb::Reader::from_source(bytes.as_slice())?;
    reader.verify()?;
    std::fs::write(&output, &bytes)?;
    let summary: BTreeMap<&str, &str> = RANGES.iter().map(|r| (r.0, r.1)).collect();
    println!("wrote {output} ({} bytes): {summary:?}", bytes.len());
    Ok(())
}
