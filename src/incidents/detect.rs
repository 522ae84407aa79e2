//! Detection as a pure function of a user's sign-in history, the networks
//! marked safe, and `now`.

use super::history::{LoginRecord, LoginResult};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

/// What the window shows when it is suspicious.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Country ("unknown" for unknown) → successful sign-ins from it.
    pub countries: BTreeMap<String, u32>,
    pub sign_ins: u32,
    pub first_ms: u64,
    pub last_ms: u64,
    pub ips: BTreeSet<String>,
}

impl Finding {
    pub fn distinct_countries(&self) -> usize {
        self.countries.len()
    }

    /// Evidence accumulates while an incident is open: a later window may no
    /// longer hold the first sign-ins, but the incident must keep them.
    pub fn merge(&mut self, later: &Finding) {
        for (country, n) in &later.countries {
            let e = self.countries.entry(country.clone()).or_insert(0);
            *e = (*e).max(*n);
        }
        self.sign_ins = self.sign_ins.max(later.sign_ins);
        self.first_ms = self.first_ms.min(later.first_ms);
        self.last_ms = self.last_ms.max(later.last_ms);
        self.ips.extend(later.ips.iter().cloned());
    }
}

/// Successful sign-ins within `window` of `now_ms`, from addresses not in
/// `safe`, from at least `distinct` countries → a finding.
pub fn evaluate(
    history: &[LoginRecord],
    safe: &[IpNet],
    now_ms: u64,
    window: Duration,
    distinct: usize,
) -> Option<Finding> {
    let since = now_ms.saturating_sub(window.as_millis() as u64);
    let mut f = Finding {
        countries: BTreeMap::new(),
        sign_ins: 0,
        first_ms: u64::MAX,
        last_ms: 0,
        ips: BTreeSet::new(),
    };
    for r in history
        .iter()
        .filter(|r| r.result == LoginResult::Ok && r.ts_ms >= since)
    {
        let ip = r.ip.parse::<IpAddr>().ok().map(|i| i.to_canonical());
        if ip.is_some_and(|ip| safe.iter().any(|n| n.contains(&ip))) {
            continue;
        }
        *f.countries.entry(r.country.clone()).or_insert(0) += 1;
        f.sign_ins += 1;
        f.first_ms = f.first_ms.min(r.ts_ms);
        f.last_ms = f.last_ms.max(r.ts_ms);
        f.ips.insert(r.ip.clone());
    }
    (f.countries.len() >= distinct.max(2)).then_some(f)
}

/// Failed attempts within the window (the optional burst rule).
pub fn failures_in_window(history: &[LoginRecord], now_ms: u64, window: Duration) -> usize {
    let since = now_ms.saturating_sub(window.as_millis() as u64);
    history
        .iter()
        .filter(|r| r.ts_ms >= since && r.result != LoginResult::Ok)
        .count()
}

/// The evidence of a burst: the failed attempts in the window, where from.
/// `sign_ins` counts attempts here.
pub fn failures(history: &[LoginRecord], now_ms: u64, window: Duration) -> Finding {
    let since = now_ms.saturating_sub(window.as_millis() as u64);
    let mut f = Finding {
        countries: BTreeMap::new(),
        sign_ins: 0,
        first_ms: now_ms,
        last_ms: now_ms,
        ips: BTreeSet::new(),
    };
    for r in history
        .iter()
        .filter(|r| r.ts_ms >= since && r.result != LoginResult::Ok)
    {
        *f.countries.entry(r.country.clone()).or_insert(0) += 1;
        f.sign_ins += 1;
        f.first_ms = f.first_ms.min(r.ts_ms);
        f.ips.insert(r.ip.clone());
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(ts_s: u64, ip: &str, country: &str) -> LoginRecord {
        LoginRecord {
            ts_ms: ts_s * 1000,
            user: "alice@example.com".into(),
            ip: ip.into(),
            country: country.into(),
            user_agent: String::new(),
            result: LoginResult::Ok,
        }
    }

    #[test]
    fn two_countries_in_the_window_are_a_finding_and_one_is_not() {
        let day = Duration::from_secs(86_400);
        let h = vec![ok(1000, "89.160.20.5", "SE"), ok(900, "81.2.69.1", "GB")];
        let f = evaluate(&h, &[], 2_000_000, day, 2).expect("finding");
        assert_eq!(f.sign_ins, 2);
        assert_eq!(f.distinct_countries(), 2);
        assert!(evaluate(&h[..1], &[], 2_000_000, day, 2).is_none());
    }

    #[test]
    fn old_sign_ins_and_safe_networks_do_not_count() {
        let day = Duration::from_secs(86_400);
        let h = vec![ok(200_000, "89.160.20.5", "SE"), ok(1, "81.2.69.1", "GB")];
        assert!(
            evaluate(&h, &[], 200_000_000, day, 2).is_none(),
            "GB is outside the window"
        );
        let h = vec![ok(1000, "89.160.20.5", "SE"), ok(900, "81.2.69.1", "GB")];
        let safe: IpNet = "89.160.20.0/24".parse().expect("net");
        assert!(evaluate(&h, &[safe], 2_000_000, day, 2).is_none());
    }

    #[test]
    fn merged_evidence_keeps_what_an_earlier_window_saw() {
        let day = Duration::from_secs(86_400);
        let h = vec![ok(1000, "89.160.20.5", "SE"), ok(900, "81.2.69.1", "GB")];
        let mut first = evaluate(&h, &[], 2_000_000, day, 2).expect("finding");
        let h = vec![
            ok(2000, "2.125.160.216", "DE"),
            ok(1000, "89.160.20.5", "SE"),
        ];
        let later = evaluate(&h, &[], 2_000_000, day, 2).expect("finding");
        first.merge(&later);
        assert_eq!(first.distinct_countries(), 3);
        assert_eq!(first.ips.len(), 3);
        assert_eq!((first.first_ms, first.last_ms), (900_000, 2_000_000));
    }

    #[test]
    fn unknown_country_is_its_own_value() {
        let day = Duration::from_secs(86_400);
        let h = vec![ok(1000, "10.0.0.1", "unknown"), ok(900, "81.2.69.1", "GB")];
        assert!(evaluate(&h, &[], 2_000_000, day, 2).is_some());
    }
}
