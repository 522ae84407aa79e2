use super::*;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn list(entries: &[(&str, &str)]) -> IpList {
    IpList::new(
        entries
            .iter()
            .map(|(spec, note)| IpEntry::new(spec.parse().unwrap(), *note))
            .collect(),
    )
}

fn table(kind: &str, value: &str) -> RawIpEntry {
    let mut t = RawIpTable::default();
    match kind {
        "ip" => t.ip = Some(value.into()),
        "cidr" => t.cidr = Some(value.into()),
        "range" => t.range = Some(value.into()),
        _ => unreachable!(),
    }
    t.note = Some(format!("{kind} entry"));
    RawIpEntry::Table(t)
}

#[test]
fn every_entry_form_matches_in_both_families() {
    let l = list(&[
        ("1.1.1.1", "Office"),
        ("10.1.0.0/16", "VPN"),
        ("2.2.2.1-2.2.2.50", "Branch"),
        ("2001:db8::1", "Office v6"),
        ("2001:db8:1::/48", "VPN v6"),
        ("2001:db8:2::10-2001:db8:2::20", "Branch v6"),
    ]);
    assert_eq!(l.find(ip("1.1.1.1")), Some("Office"));
    assert_eq!(l.find(ip("10.1.200.3")), Some("VPN"));
    assert_eq!(l.find(ip("2.2.2.30")), Some("Branch"));
    assert_eq!(l.find(ip("2001:db8::1")), Some("Office v6"));
    assert_eq!(l.find(ip("2001:db8:1:ffff::1")), Some("VPN v6"));
    assert_eq!(l.find(ip("2001:db8:2::15")), Some("Branch v6"));
    assert!(!l.contains(ip("1.1.1.2")));
    assert!(!l.contains(ip("10.2.0.0")));
    assert!(!l.contains(ip("2001:db8::2")));
    assert!(!l.contains(ip("2001:db8:2::21")));
    assert_eq!(l.len(), 6);
}

#[test]
fn range_and_cidr_edges_are_inclusive_and_exact() {
    let l = list(&[("2.2.2.1-2.2.2.50", "Branch"), ("10.1.0.0/16", "VPN")]);
    assert!(!l.contains(ip("2.2.2.0")));
    assert!(l.contains(ip("2.2.2.1")));
    assert!(l.contains(ip("2.2.2.50")));
    assert!(!l.contains(ip("2.2.2.51")));
    assert!(!l.contains(ip("10.0.255.255")));
    assert!(l.contains(ip("10.1.0.0")));
    assert!(l.contains(ip("10.1.255.255")));
    assert!(!l.contains(ip("10.2.0.0")));

    let v6 = list(&[("2001:db8:2::10-2001:db8:2::20", "")]);
    assert!(!v6.contains(ip("2001:db8:2::f")));
    assert!(v6.contains(ip("2001:db8:2::10")));
    assert!(v6.contains(ip("2001:db8:2::20")));
    assert!(!v6.contains(ip("2001:db8:2::21")));
}

#[test]
fn whole_address_space_entries_do_not_overflow() {
    let l = list(&[
        ("0.0.0.0/0", "all v4"),
        ("::/0", "all v6"),
        ("255.255.255.255", "bcast"),
    ]);
    assert_eq!(l.find(ip("0.0.0.0")), Some("all v4"));
    assert_eq!(l.find(ip("255.255.255.254")), Some("all v4"));
    assert_eq!(l.find(ip("255.255.255.255")), Some("bcast"));
    assert_eq!(
        l.find(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")),
        Some("all v6")
    );
    assert_eq!(l.find(ip("::")), Some("all v6"));
    // `::/0` is "all IPv6"; a mapped address is IPv4 and is matched by `0.0.0.0/0`.
    assert_eq!(l.find(ip("::ffff:1.2.3.4")), Some("all v4"));
    let only_v6 = list(&[("::/0", "all v6")]);
    assert!(!only_v6.contains(ip("1.2.3.4")));
    assert!(!only_v6.contains(ip("::ffff:1.2.3.4")));
}

#[test]
fn overlaps_merge_and_report_the_narrowest_entry() {
    let l = list(&[
        ("10.0.0.0/8", "Corp"),
        ("10.1.0.0/16", "VPN"),
        ("10.1.2.3", "Admin PC"),
        ("10.1.0.0/16", "VPN duplicate"),
        ("10.255.0.0-11.0.0.5", "Spill"),
    ]);
    assert_eq!(l.find(ip("10.0.0.1")), Some("Corp"));
    assert_eq!(l.find(ip("10.1.2.2")), Some("VPN"));
    assert_eq!(l.find(ip("10.1.2.3")), Some("Admin PC"));
    assert_eq!(l.find(ip("10.1.2.4")), Some("VPN"));
    assert_eq!(l.find(ip("10.2.0.0")), Some("Corp"));
    assert_eq!(l.find(ip("10.254.255.255")), Some("Corp"));
    // 65 542 addresses are narrower than a /8.
    assert_eq!(l.find(ip("10.255.0.0")), Some("Spill"));
    assert_eq!(l.find(ip("11.0.0.0")), Some("Spill"));
    assert_eq!(l.find(ip("11.0.0.5")), Some("Spill"));
    assert_eq!(l.find(ip("11.0.0.6")), None);
    assert_eq!(l.find(ip("9.255.255.255")), None);
    // The spans are disjoint and sorted.
    let starts = &l.v4.starts;
    assert!(starts.windows(2).all(|w| w[0] < w[1]));
    assert!(l
        .v4
        .ends
        .iter()
        .zip(starts.iter().skip(1))
        .all(|((end, _), next)| end < next));
}

#[test]
fn adjacent_entries_with_the_same_reporter_join_into_one_span() {
    let l = list(&[("10.0.0.0/8", "Corp"), ("10.0.0.0/8", "Corp again")]);
    assert_eq!(l.v4.starts.len(), 1);
    let l = list(&[("10.0.0.0-10.0.0.9", "a"), ("10.0.0.10-10.0.0.19", "b")]);
    assert_eq!(l.v4.starts.len(), 2);
    assert_eq!(l.find(ip("10.0.0.9")), Some("a"));
    assert_eq!(l.find(ip("10.0.0.10")), Some("b"));
}

#[test]
fn ipv4_mapped_addresses_are_ipv4_in_entries_and_lookups() {
    let l = list(&[("203.0.113.0/24", "Berlin")]);
    assert_eq!(l.find(ip("::ffff:203.0.113.9")), Some("Berlin"));
    assert_eq!(l.find(ip("::ffff:cb00:7109")), Some("Berlin"));
    assert!(
        !l.contains(ip("::203.0.113.9")),
        "IPv4-compatible is not mapped"
    );

    let mapped = list(&[
        ("::ffff:198.51.100.7", "mapped single"),
        ("::ffff:10.0.0.0/104", "mapped cidr"),
        ("::ffff:192.0.2.1-::ffff:192.0.2.9", "mapped range"),
    ]);
    assert_eq!(mapped.find(ip("198.51.100.7")), Some("mapped single"));
    assert_eq!(mapped.find(ip("10.20.30.40")), Some("mapped cidr"));
    assert_eq!(mapped.find(ip("192.0.2.5")), Some("mapped range"));
    assert_eq!(
        "::ffff:10.0.0.0/104".parse::<IpSpec>().unwrap().to_string(),
        "10.0.0.0/8"
    );
    assert_eq!(parse_ip_strict("::ffff:203.0.113.9"), Ok(ip("203.0.113.9")));
}

#[test]
fn strict_parser_refuses_ambiguous_spellings() {
    use IpEntryError::*;
    type Expect = fn(&IpEntryError) -> bool;
    let cases: &[(&str, Expect)] = &[
        ("fe80::1%eth0", |e| matches!(e, ZoneId(_))),
        ("203.000.113.009", |e| matches!(e, LeadingZero(_))),
        ("0313.0.113.9", |e| matches!(e, LeadingZero(_))),
        ("01.2.3.4", |e| matches!(e, LeadingZero(_))),
        ("::ffff:1.2.3.04", |e| matches!(e, LeadingZero(_))),
        ("203.0.113.9:443", |e| matches!(e, Port(_))),
        ("[2001:db8::1]:443", |e| matches!(e, Port(_))),
        ("[2001:db8::1]", |e| matches!(e, Port(_))),
        (" 1.2.3.4", |e| matches!(e, Whitespace(_))),
        ("1.2.3.4 ", |e| matches!(e, Whitespace(_))),
        ("", |e| matches!(e, Empty)),
        ("unknown", |e| matches!(e, NotAnAddress(_))),
        ("garbage", |e| matches!(e, NotAnAddress(_))),
        ("3405803785", |e| matches!(e, NotAnAddress(_))),
        ("0x7f.0.0.1", |e| matches!(e, LeadingZero(_))),
        ("0x7f000001", |e| matches!(e, NotAnAddress(_))),
        ("1.2.3", |e| matches!(e, NotAnAddress(_))),
        ("1.2.3.4.5", |e| matches!(e, NotAnAddress(_))),
        ("256.1.1.1", |e| matches!(e, NotAnAddress(_))),
        ("+1.2.3.4", |e| matches!(e, NotAnAddress(_))),
        ("1:2:3:4:5:6:7:8:9", |e| matches!(e, NotAnAddress(_))),
        ("2001:db8::1::2", |e| matches!(e, NotAnAddress(_))),
        ("2001:db8:00000::1", |e| matches!(e, NotAnAddress(_))),
    ];
    for (text, expected) in cases {
        let err = parse_ip_strict(text).unwrap_err();
        assert!(expected(&err), "{text:?} gave {err:?}");
    }
    let long = "1".repeat(10_000);
    assert!(parse_ip_strict(&long).is_err());
    // Plain good ones, including IPv6 groups with leading zeros (RFC 4291 §2.2).
    for good in [
        "0.0.0.0",
        "203.0.113.9",
        "10.0.0.10",
        "::1",
        "2001:0db8::0001",
        "::",
    ] {
        assert!(parse_ip_strict(good).is_ok(), "{good}");
    }
}

#[test]
fn cidr_with_host_bits_is_refused_with_the_network_suggested() {
    let err = "10.1.2.3/16".parse::<IpSpec>().unwrap_err();
    assert_eq!(
        err,
        IpEntryError::HostBitsSet {
            given: "10.1.2.3/16".into(),
            network: "10.1.0.0/16".into()
        }
    );
    assert!(err.to_string().contains("the network is 10.1.0.0/16"));
    assert!(matches!(
        "2001:db8::1/32".parse::<IpSpec>(),
        Err(IpEntryError::HostBitsSet { .. })
    ));
    for bad in [
        "10.0.0.0/33",
        "10.0.0.0/08",
        "10.0.0.0/",
        "10.0.0.0/+8",
        "::/129",
        "10.0.0.0/8/8",
    ] {
        assert!(bad.parse::<IpSpec>().is_err(), "{bad}");
    }
    assert!("10.0.0.0/8".parse::<IpSpec>().is_ok());
    assert!("1.2.3.4/32".parse::<IpSpec>().is_ok());
    assert!("0.0.0.0/0".parse::<IpSpec>().is_ok());
}

#[test]
fn bad_ranges_are_refused() {
    assert!(matches!(
        "2.2.2.50-2.2.2.1".parse::<IpSpec>(),
        Err(IpEntryError::RangeReversed(_))
    ));
    assert!(matches!(
        "1.2.3.4-2001:db8::1".parse::<IpSpec>(),
        Err(IpEntryError::RangeMixedFamilies(_))
    ));
    assert!(matches!(
        "::ffff:1.2.3.4-::1:0:0:0".parse::<IpSpec>(),
        Err(IpEntryError::RangeMixedFamilies(_))
    ));
    assert!(matches!(
        "1.2.3.4-1.2.3.5-1.2.3.6".parse::<IpSpec>(),
        Err(IpEntryError::BadRange(_))
    ));
    assert!("1.2.3.4 - 1.2.3.9".parse::<IpSpec>().is_err());
    assert!("1.2.3.4-1.2.3.4".parse::<IpSpec>().is_ok());
    assert!("::ffff:1.2.3.4-1.2.3.9".parse::<IpSpec>().is_ok());
}

#[test]
fn raw_entries_report_each_problem_under_its_key_path() {
    let raw = vec![
        table("ip", "1.1.1.1"),
        table("cidr", "10.1.2.3/16"),
        RawIpEntry::Plain("203.000.113.9".into()),
        table("range", "2.2.2.9-2.2.2.1"),
        RawIpEntry::Table(RawIpTable {
            ip: Some("1.2.3.4".into()),
            cidr: Some("1.2.3.0/24".into()),
            ..Default::default()
        }),
        RawIpEntry::Table(RawIpTable::default()),
        table("ip", "fe80::1%eth0"),
    ];
    let issues = IpList::from_raw(&raw, "access.area[1].allow").unwrap_err();
    let keys: Vec<&str> = issues.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "access.area[1].allow[1].cidr",
            "access.area[1].allow[2]",
            "access.area[1].allow[3].range",
            "access.area[1].allow[4]",
            "access.area[1].allow[5]",
            "access.area[1].allow[6].ip",
        ]
    );
    assert!(issues[0].message.contains("10.1.0.0/16"));
    assert!(issues[3].message.contains("exactly one"));
}

#[test]
fn raw_entries_deserialize_from_toml_in_both_forms() {
    #[derive(Deserialize)]
    struct Doc {
        allow: Vec<RawIpEntry>,
    }
    let doc: Doc = toml_from_str(
        r#"allow = [ { ip = "1.1.1.1", note = "Office" }, { cidr = "10.1.0.0/16", note = "VPN" },
                         { range = "2.2.2.1-2.2.2.50", note = "Branch" }, "192.0.2.0/24" ]"#,
    );
    let l = IpList::from_raw(&doc.allow, "two_factor.trusted_networks").unwrap();
    assert_eq!(l.find(ip("1.1.1.1")), Some("Office"));
    assert_eq!(l.find(ip("2.2.2.50")), Some("Branch"));
    assert_eq!(l.find(ip("192.0.2.200")), Some(""));
    assert_eq!(
        l.matching_entry(ip("192.0.2.200"))
            .unwrap()
            .spec
            .to_string(),
        "192.0.2.0/24"
    );

    let err = figment_error(r#"allow = [ { cdir = "10.0.0.0/8" } ]"#);
    assert!(err.contains("cdir"), "{err}");
}

#[test]
fn empty_list_contains_nothing() {
    let l = IpList::default();
    assert!(l.is_empty());
    assert!(!l.contains(ip("1.2.3.4")));
    assert!(!l.contains(ip("::1")));
}

#[test]
fn large_lists_answer_like_a_linear_scan() {
    // Pseudo-random overlapping entries; compare the span lookup with brute force.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut entries = Vec::new();
    for i in 0..2_000 {
        let base = (next() as u32) & 0x0fff_ff00;
        let spec = match i % 3 {
            0 => IpSpec::Single(IpAddr::V4(Ipv4Addr::from(base | (next() as u32 & 0xff)))),
            1 => {
                let len = 16 + (next() % 17) as u8;
                IpSpec::Cidr(ipnet::IpNet::V4(
                    ipnet::Ipv4Net::new(Ipv4Addr::from(base), len)
                        .unwrap()
                        .trunc(),
                ))
            }
            _ => {
                let end = base + (next() as u32 & 0xffff);
                IpSpec::Range(Ipv4Addr::from(base).into(), Ipv4Addr::from(end).into())
            }
        };
        entries.push(IpEntry::new(spec, format!("e{i}")));
    }
    let l = IpList::new(entries.clone());
    for _ in 0..20_000 {
        let probe = IpAddr::V4(Ipv4Addr::from((next() as u32) & 0x0fff_ffff));
        let covering: Vec<&IpEntry> = entries
            .iter()
            .filter(|e| {
                let (a, b) = e.spec.bounds();
                a <= probe && probe <= b
            })
            .collect();
        let expected = covering.iter().min_by_key(|e| {
            let (a, b) = e.spec.bounds();
            let (IpAddr::V4(a), IpAddr::V4(b)) = (a, b) else {
                unreachable!()
            };
            u32::from(b) - u32::from(a)
        });
        assert_eq!(l.contains(probe), !covering.is_empty(), "{probe}");
        if let Some(found) = l.matching_entry(probe) {
            let width = |e: &IpEntry| {
                let (IpAddr::V4(a), IpAddr::V4(b)) = e.spec.bounds() else {
                    unreachable!()
                };
                u32::from(b) - u32::from(a)
            };
            assert_eq!(width(found), width(expected.unwrap()), "{probe}");
        }
    }
}

fn toml_from_str<T: serde::de::DeserializeOwned>(text: &str) -> T {
    use figment::providers::{Format, Toml};
    figment::Figment::from(Toml::string(text))
        .extract()
        .unwrap()
}

fn figment_error(text: &str) -> String {
    use figment::providers::{Format, Toml};
    #[derive(Deserialize, Debug)]
    #[allow(dead_code)]
    struct Doc {
        allow: Vec<RawIpEntry>,
    }
    figment::Figment::from(Toml::string(text))
        .extract::<Doc>()
        .unwrap_err()
        .to_string()
}
