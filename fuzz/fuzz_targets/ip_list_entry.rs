//! IP list entries (`IpSpec` from a config string) and the lookup structure
//! built over them. One entry per input line. Checked: a parsed entry prints
//! back to itself; the strict address parser accepts nothing std refuses; and
//! `IpList` lookups agree with a linear scan at every entry boundary, choosing
//! the narrowest covering entry (first listed among equals) as documented.
#![no_main]

use gatehouse::access::{parse_ip_strict, IpEntry, IpList, IpSpec};
use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut entries = Vec::new();
    for line in text.lines().take(64) {
        if let Ok(ip) = parse_ip_strict(line) {
            let std_ip: IpAddr = match line.parse() {
                Ok(ip) => ip,
                Err(_) => panic!("{line:?}: strict parser accepts what std refuses"),
            };
            assert_eq!(ip, std_ip.to_canonical(), "{line:?}");
            assert_eq!(ip, ip.to_canonical(), "{line:?}: mapped address kept");
        }
        let Ok(spec) = line.parse::<IpSpec>() else {
            continue;
        };
        let printed = spec.to_string();
        assert_eq!(
            printed.parse::<IpSpec>().as_ref(),
            Ok(&spec),
            "{line:?} prints as {printed:?}, which reads back differently"
        );
        let (lo, hi) = spec.bounds();
        assert_eq!(lo.is_ipv4(), hi.is_ipv4(), "{line:?}: mixed families");
        assert!(lo <= hi, "{line:?}: bounds reversed");
        entries.push(IpEntry::new(spec, format!("line {}", entries.len())));
    }
    let list = IpList::new(entries.clone());
    assert_eq!(list.len(), entries.len());

    let mut probes = vec![
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V4(Ipv4Addr::BROADCAST),
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        IpAddr::V6(Ipv6Addr::from(u128::MAX)),
    ];
    for entry in &entries {
        let (lo, hi) = entry.spec.bounds();
        for edge in [lo, hi] {
            probes.extend(
                [Some(edge), step(edge, -1), step(edge, 1)]
                    .into_iter()
                    .flatten(),
            );
        }
    }
    for probe in probes {
        let covering: Vec<usize> = entries
            .iter()
            .enumerate()
            .filter(|(_, e)| covers(e, probe))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(
            list.contains(probe),
            !covering.is_empty(),
            "contains({probe})"
        );
        let Some(found) = list.matching_entry(probe) else {
            continue;
        };
        let index = list
            .entries()
            .iter()
            .position(|e| std::ptr::eq(e, found))
            .expect("matching_entry returns one of the list's entries");
        let narrowest = covering
            .iter()
            .copied()
            .min_by_key(|&i| (width(&entries[i]), i))
            .expect("something covers the probe");
        assert_eq!(index, narrowest, "find({probe}) reports the wrong entry");
        assert_eq!(list.find(probe), Some(found.note.as_str()));
    }
});

/// Family and number of an address as written (no IPv4-mapped folding).
fn as_number(ip: IpAddr) -> (bool, u128) {
    match ip {
        IpAddr::V4(v4) => (true, u128::from(u32::from(v4))),
        IpAddr::V6(v6) => (false, u128::from(v6)),
    }
}

/// Linear-scan reference: lookups fold IPv4-mapped probes into IPv4, entries
/// keep the family they were parsed with (`::/0` is not "all IPv4").
fn covers(entry: &IpEntry, ip: IpAddr) -> bool {
    let (lo, hi) = entry.spec.bounds();
    let (family, x) = as_number(ip.to_canonical());
    let (lo_family, lo) = as_number(lo);
    let (_, hi) = as_number(hi);
    family == lo_family && lo <= x && x <= hi
}

fn width(entry: &IpEntry) -> u128 {
    let (lo, hi) = entry.spec.bounds();
    as_number(hi).1 - as_number(lo).1
}

/// The address `delta` (±1) away in the same family, if there is one.
fn step(ip: IpAddr, delta: i8) -> Option<IpAddr> {
    match ip {
        IpAddr::V4(v4) => {
            let n = u32::from(v4);
            let n = if delta < 0 {
                n.checked_sub(1)
            } else {
                n.checked_add(1)
            }?;
            Some(IpAddr::V4(Ipv4Addr::from(n)))
        }
        IpAddr::V6(v6) => {
            let n = u128::from(v6);
            let n = if delta < 0 {
                n.checked_sub(1)
            } else {
                n.checked_add(1)
            }?;
            Some(IpAddr::V6(Ipv6Addr::from(n)))
        }
    }
}
