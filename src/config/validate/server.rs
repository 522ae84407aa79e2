//! `[server]` limits and TLS, `[upstream]` and `[geoip]`: the gateway's
//! own ends of the connections.

use super::*;

pub(super) fn validate_limits(l: &RawLimits, issues: &mut Vec<ConfigIssue>) -> Limits {
    // hyper refuses a read buffer below 8 KiB.
    if l.max_header_bytes < 8192 {
        issues.push(ConfigIssue::new(
            "server.limits.max_header_bytes",
            "must be at least 8192",
        ));
    }
    for (key, v) in [
        ("max_headers", l.max_headers),
        ("max_connections", l.max_connections),
        ("max_connections_per_ip", l.max_connections_per_ip),
        ("max_form_bytes", l.max_form_bytes),
        (
            "h2_max_concurrent_streams",
            l.h2_max_concurrent_streams as usize,
        ),
    ] {
        if v == 0 {
            issues.push(ConfigIssue::new(
                format!("server.limits.{key}"),
                "must be greater than 0",
            ));
        }
    }
    Limits {
        max_header_bytes: l.max_header_bytes.max(8192),
        max_headers: l.max_headers,
        header_read_timeout: l.header_read_timeout.0,
        handshake_timeout: l.handshake_timeout.0,
        idle_timeout: l.idle_timeout.0,
        max_connections: l.max_connections,
        max_connections_per_ip: l.max_connections_per_ip,
        max_form_bytes: l.max_form_bytes,
        h2_max_concurrent_streams: l.h2_max_concurrent_streams,
    }
}

pub(super) fn validate_upstream(
    raw: &RawConfig,
    base: Option<&Path>,
    issues: &mut Vec<ConfigIssue>,
) -> Option<UpstreamSettings> {
    let u = &raw.upstream;
    let parsed = u.url.parse::<http::Uri>().ok();
    let (scheme, authority) = match parsed {
        Some(uri)
            if matches!(uri.scheme_str(), Some("http" | "https"))
                && uri.authority().is_some()
                && matches!(uri.path(), "" | "/")
                && uri.query().is_none() =>
        {
            (uri.scheme().cloned(), uri.authority().cloned())
        }
        _ => {
            issues.push(ConfigIssue::new(
                "upstream.url",
                "must be http://host:port or https://host:port without a path",
            ));
            (None, None)
        }
    };
    let ca_file = u.ca_file.as_ref().map(|p| resolve(base, p));
    if let Some(p) = &ca_file {
        if std::fs::metadata(p).is_err() {
            issues.push(ConfigIssue::new(
                "upstream.ca_file",
                format!("cannot read {}", p.display()),
            ));
        }
    }
    Some(UpstreamSettings {
        scheme: scheme.unwrap_or(Scheme::HTTP),
        authority: authority.unwrap_or_else(|| Authority::from_static("127.0.0.1")),
        ca_file,
        connect_timeout: u.connect_timeout.0,
        response_timeout: u.response_timeout.0,
        preserve_host: u.preserve_host,
        pool_max_idle: u.pool_max_idle,
        pool_idle_timeout: u.pool_idle_timeout.0,
    })
}

pub(super) fn read_tls(
    raw: &RawTls,
    base: Option<&Path>,
    issues: &mut Vec<ConfigIssue>,
) -> TlsSettings {
    let mut out = TlsSettings::default();
    match (&raw.cert, &raw.key) {
        (Some(c), Some(k)) => {
            out.default = read_pair(c, k, "server.tls", base, issues);
        }
        (None, None) if raw.sni.is_empty() => issues.push(ConfigIssue::new(
            "server.tls",
            "a certificate is required: set cert and key (or [[server.tls.sni]])",
        )),
        (None, None) => {}
        _ => issues.push(ConfigIssue::new(
            "server.tls",
            "cert and key must be set together",
        )),
    }
    for (i, sni) in raw.sni.iter().enumerate() {
        let key = format!("server.tls.sni[{i}]");
        if sni.names.is_empty() {
            issues.push(ConfigIssue::new(
                format!("{key}.names"),
                "list at least one host name",
            ));
        }
        if let Some(pem) = read_pair(&sni.cert, &sni.key, &key, base, issues) {
            let names = sni.names.iter().map(|n| n.to_ascii_lowercase()).collect();
            out.sni.push((names, pem));
        }
    }
    out
}

pub(super) fn read_pair(
    cert: &Path,
    key: &Path,
    at: &str,
    base: Option<&Path>,
    issues: &mut Vec<ConfigIssue>,
) -> Option<CertPem> {
    let read = |p: &Path, k: &str, issues: &mut Vec<ConfigIssue>| {
        let p = resolve(base, p);
        std::fs::read(&p)
            .map_err(|e| {
                issues.push(ConfigIssue::new(
                    format!("{at}.{k}"),
                    format!("cannot read {}: {e}", p.display()),
                ))
            })
            .ok()
    };
    let c = read(cert, "cert", issues);
    let k = read(key, "key", issues);
    Some(CertPem {
        cert: c?,
        key: k?,
        origin: at.to_string(),
    })
}

pub(super) fn validate_geoip(
    raw: &crate::access::RawGeoip,
    base: Option<&Path>,
    issues: &mut Vec<ConfigIssue>,
) -> crate::access::Geo {
    let path = match crate::access::config::validate_geoip(raw) {
        Ok(p) => p.map(|p| resolve(base, &p)),
        Err(found) => {
            issues.extend(found);
            None
        }
    };
    crate::access::Geo::from_config(path.as_deref()).unwrap_or_else(|e| {
        issues.push(e.to_config_issue());
        crate::access::Geo::disabled()
    })
}
