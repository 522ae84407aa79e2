//! IpList lookups with 100 000 entries (singles, CIDRs, ranges; IPv4 and IPv6).
//! Target: well under 1 µs per lookup. Run: `cargo bench --bench ip_list`.

#![allow(clippy::unwrap_used)] // a benchmark may panic on bad fixtures

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use criterion::{criterion_group, criterion_main, Criterion};
use gatehouse::access::{IpEntry, IpList, IpSpec};

const ENTRIES: usize = 100_000;

/// xorshift64: deterministic, no extra dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn build(rng: &mut Rng) -> IpList {
    let mut entries = Vec::with_capacity(ENTRIES);
    for i in 0..ENTRIES {
        let spec = match i % 6 {
            0 => IpSpec::Single(IpAddr::V4(Ipv4Addr::from(rng.next() as u32))),
            1 => {
                let len = 16 + (rng.next() % 17) as u8;
                let net = ipnet::Ipv4Net::new(Ipv4Addr::from(rng.next() as u32), len)
                    .unwrap()
                    .trunc();
                IpSpec::Cidr(net.into())
            }
            2 => {
                let start = rng.next() as u32 & 0xffff_0000;
                let end = start | (rng.next() as u32 & 0xffff);
                IpSpec::Range(Ipv4Addr::from(start).into(), Ipv4Addr::from(end).into())
            }
            3 => IpSpec::Single(IpAddr::V6(Ipv6Addr::from(
                (u128::from(rng.next()) << 64) | u128::from(rng.next()),
            ))),
            4 => {
                let len = 32 + (rng.next() % 97) as u8;
                let addr = Ipv6Addr::from((u128::from(rng.next()) << 64) | u128::from(rng.next()));
                IpSpec::Cidr(ipnet::Ipv6Net::new(addr, len).unwrap().trunc().into())
            }
            _ => {
                let start = (u128::from(rng.next()) << 64) & !0xffff_u128;
                let end = start | 0xffff;
                IpSpec::Range(Ipv6Addr::from(start).into(), Ipv6Addr::from(end).into())
            }
        };
        entries.push(IpEntry::new(spec, format!("entry {i}")));
    }
    IpList::new(entries)
}

fn lookups(c: &mut Criterion) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let list = build(&mut rng);
    let probes_v4: Vec<IpAddr> = (0..1024)
        .map(|_| IpAddr::V4(Ipv4Addr::from(rng.next() as u32)))
        .collect();
    let probes_v6: Vec<IpAddr> = (0..1024)
        .map(|_| {
            IpAddr::V6(Ipv6Addr::from(
                (u128::from(rng.next()) << 64) | u128::from(rng.next()),
            ))
        })
        .collect();
    let hit = list.entries()[1].spec.bounds().0;
    let mapped = match hit {
        IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
        other => other,
    };

    let mut group = c.benchmark_group("ip_list_100k");
    group.bench_function("contains_v4_random", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) & 1023;
            black_box(list.contains(black_box(probes_v4[i])))
        })
    });
    group.bench_function("contains_v6_random", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) & 1023;
            black_box(list.contains(black_box(probes_v6[i])))
        })
    });
    group.bench_function("find_v4_hit", |b| {
        b.iter(|| black_box(list.find(black_box(hit))))
    });
    group.bench_function("find_v4_mapped_hit", |b| {
        b.iter(|| black_box(list.find(black_box(mapped))))
    });
    group.finish();

    c.bench_function("ip_list_build_100k", |b| {
        b.iter(|| black_box(build(&mut Rng(7))))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = lookups
}
criterion_main!(benches);
