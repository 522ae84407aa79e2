//! TLS termination: a rustls `ServerConfig` with certificates chosen by SNI,
//! TLS 1.2/1.3 only, AEAD suites only (the aws-lc-rs provider's suites, all
//! ECDHE + AES-GCM/ChaCha20-Poly1305, in the server's order), ALPN h2 and
//! http/1.1.

use crate::config::validate::{CertPem, TlsSettings};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;

/// A certificate or key that cannot be used, with the config key that named it.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct TlsError {
    pub key: String,
    pub message: String,
}

/// Build the server configuration the listeners hand to every new connection.
pub fn build(settings: &TlsSettings) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(provider());
    let default = settings.default.as_ref().map(certified_key).transpose()?;
    let mut by_name = HashMap::new();
    for (names, pem) in &settings.sni {
        let key = certified_key(pem)?;
        for n in names {
            by_name.insert(n.to_ascii_lowercase(), key.clone());
        }
    }
    if default.is_none() && by_name.is_empty() {
        return Err(TlsError {
            key: "server.tls".into(),
            message: "no certificate configured".into(),
        });
    }
    let mut named: Vec<(&str, &CertPem)> = settings
        .sni
        .iter()
        .map(|(names, pem)| (names.first().map_or("sni", String::as_str), pem))
        .collect();
    if let Some(pem) = &settings.default {
        named.push(("default", pem));
    }
    for (name, pem) in named {
        if let Some(at) = not_after(pem) {
            metrics::gauge!("gatehouse_certificate_expiry_timestamp_seconds", "certificate" => name.to_string())
                .set(at as f64);
        }
    }
    let resolver = SniResolver { by_name, default };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError {
            key: "server.tls".into(),
            message: e.to_string(),
        })?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // The server's order picks the suite (AES-GCM/ChaCha20 as the provider
    // ranks them), not whatever a client lists first; testssl flags a server
    // without its own cipher order (tests/tls_grade.sh).
    config.ignore_client_order = true;
    // Stateless resumption keeps returning browsers off the full-handshake path.
    if let Ok(ticketer) = rustls::crypto::aws_lc_rs::Ticketer::new() {
        config.ticketer = ticketer;
    }
    Ok(Arc::new(config))
}

/// aws-lc-rs with the suites in Mozilla's recommended order: AES-128-GCM
/// first, as browsers list it (and so what nginx, which follows the client,
/// negotiates with them). The provider's own order puts AES-256 first, which
/// the server's order then forced on every client: 40 % more rounds on every
/// record and SHA-384 in every key schedule, for no strength a 128-bit key
/// lacks. AES-256 and ChaCha20 stay for clients that offer only those.
fn provider() -> CryptoProvider {
    use rustls::crypto::aws_lc_rs::{cipher_suite as cs, default_provider};
    CryptoProvider {
        cipher_suites: vec![
            cs::TLS13_AES_128_GCM_SHA256,
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS13_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ],
        ..default_provider()
    }
}

/// When the leaf certificate stops being valid (Unix seconds), for the
/// expiry metric that monitoring alerts on.
fn not_after(pem: &CertPem) -> Option<i64> {
    let der = CertificateDer::pem_slice_iter(&pem.cert).next()?.ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// Validate certificates without keeping the result (for `check-config`).
pub fn check(settings: &TlsSettings) -> Result<(), TlsError> {
    if settings.default.is_none() && settings.sni.is_empty() {
        // Reported separately by the config validator.
        return Ok(());
    }
    build(settings).map(drop)
}

/// A self-signed certificate for demo mode and tests, with its SHA-256
/// fingerprint (colon-separated hex) for the operator to compare.
pub fn self_signed(names: &[&str]) -> Result<(CertPem, String), TlsError> {
    let err = |e: rcgen::Error| TlsError {
        key: "demo".into(),
        message: format!("cannot generate a certificate: {e}"),
    };
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let cert = rcgen::generate_simple_self_signed(names).map_err(err)?;
    let fingerprint = fingerprint(cert.cert.der());
    Ok((
        CertPem {
            cert: cert.cert.pem().into_bytes(),
            key: cert.signing_key.serialize_pem().into_bytes(),
            origin: "demo".into(),
        },
        fingerprint,
    ))
}

pub fn fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn certified_key(pem: &CertPem) -> Result<Arc<CertifiedKey>, TlsError> {
    let err = |k: &str, message: String| TlsError {
        key: format!("{}.{k}", pem.origin),
        message,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem.cert)
        .collect::<Result<_, _>>()
        .map_err(|e| err("cert", format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(err("cert", "no CERTIFICATE block found".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(&pem.key)
        .map_err(|e| err("key", format!("not a PEM private key: {e}")))?;
    let signing = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key)
        .map_err(|e| err("key", format!("unsupported private key: {e}")))?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match().map_err(|_| {
        err(
            "key",
            "the private key does not match the certificate".into(),
        )
    })?;
    Ok(Arc::new(ck))
}

/// Picks the certificate by SNI: exact name, then `*.parent`, then the default.
#[derive(Debug)]
struct SniResolver {
    by_name: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = hello.server_name() {
            let name = name.to_ascii_lowercase();
            if let Some(k) = self.by_name.get(&name) {
                return Some(k.clone());
            }
            if let Some((_, parent)) = name.split_once('.') {
                if let Some(k) = self.by_name.get(&format!("*.{parent}")) {
                    return Some(k.clone());
                }
            }
        }
        self.default.clone()
    }
}

/// gatehouse as a TLS client (to an https dashboard, or probing one): trust
/// the CA certificates of the PEM file given, else the system's roots (only
/// loaded for https). An empty trust store is an error, never "trust nothing
/// and fail later" with a vaguer message.
pub fn client_config(
    ca_file: Option<&std::path::Path>,
    https: bool,
) -> Result<rustls::ClientConfig, String> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs =
                rustls_pki_types::CertificateDer::pem_file_iter(path).map_err(|e| e.to_string())?;
            for cert in certs {
                roots
                    .add(cert.map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
            }
            if roots.is_empty() {
                return Err("no certificate in it".into());
            }
        }
        None if https => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err("no trusted root certificates in the system's trust store".into());
            }
        }
        None => {}
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mismatched_key_is_refused_with_key_path() {
        let (a, _) = self_signed(&["a.test"]).expect("cert");
        let (b, _) = self_signed(&["b.test"]).expect("cert");
        let mixed = CertPem {
            cert: a.cert,
            key: b.key,
            origin: "server.tls".into(),
        };
        let err = build(&TlsSettings {
            default: Some(mixed),
            sni: vec![],
        })
        .expect_err("must refuse");
        assert_eq!(err.key, "server.tls.key");
    }

    /// Handshake in memory with a client that lists `suites` in its order
    /// and speaks only `version`; the suite the server chose.
    fn negotiated(
        suites: &[rustls::SupportedCipherSuite],
        version: &'static rustls::SupportedProtocolVersion,
    ) -> rustls::CipherSuite {
        let (pem, _) = self_signed(&["gate.test"]).expect("cert");
        let mut roots = rustls::RootCertStore::empty();
        for der in CertificateDer::pem_slice_iter(&pem.cert) {
            roots.add(der.expect("pem")).expect("root");
        }
        let server = build(&TlsSettings {
            default: Some(pem),
            sni: vec![],
        })
        .expect("server config");
        let client_provider = CryptoProvider {
            cipher_suites: suites.to_vec(),
            ..rustls::crypto::aws_lc_rs::default_provider()
        };
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(client_provider))
            .with_protocol_versions(&[version])
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls_pki_types::ServerName::try_from("gate.test").expect("name");
        let mut c = rustls::ClientConnection::new(Arc::new(client), name).expect("client");
        let mut s = rustls::ServerConnection::new(server).expect("server");
        while c.is_handshaking() || s.is_handshaking() {
            let mut wire = Vec::new();
            c.write_tls(&mut wire).expect("client writes");
            s.read_tls(&mut wire.as_slice()).expect("server reads");
            s.process_new_packets().expect("server accepts");
            let mut back = Vec::new();
            s.write_tls(&mut back).expect("server writes");
            c.read_tls(&mut back.as_slice()).expect("client reads");
            c.process_new_packets().expect("client accepts");
        }
        s.negotiated_cipher_suite().expect("suite").suite()
    }

    #[test]
    fn the_server_picks_aes_128_gcm_even_when_a_client_lists_aes_256_first() {
        use rustls::crypto::aws_lc_rs::cipher_suite as cs;
        use rustls::CipherSuite;
        let tls13 = [
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS13_CHACHA20_POLY1305_SHA256,
            cs::TLS13_AES_128_GCM_SHA256,
        ];
        assert_eq!(
            negotiated(&tls13, &rustls::version::TLS13),
            CipherSuite::TLS13_AES_128_GCM_SHA256
        );
        let tls12 = [
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ];
        assert_eq!(
            negotiated(&tls12, &rustls::version::TLS12),
            CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        );
        // A client that offers only the others still gets them.
        assert_eq!(
            negotiated(
                &[cs::TLS13_CHACHA20_POLY1305_SHA256],
                &rustls::version::TLS13
            ),
            CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
        );
    }

    #[test]
    fn garbage_pem_names_the_cert_key() {
        let bad = CertPem {
            cert: b"not pem".to_vec(),
            key: b"nope".to_vec(),
            origin: "server.tls.sni[0]".into(),
        };
        let err = build(&TlsSettings {
            default: Some(bad),
            sni: vec![],
        })
        .expect_err("must refuse");
        assert!(err.key.starts_with("server.tls.sni[0]"), "{}", err.key);
    }
}
