//! The configuration file format: the example documents every key with its
//! default, environment overrides work, and errors carry key paths.

use gatehouse::config::raw::RawConfig;
use gatehouse::config::validate::{load_str, ConfigError};

const EXAMPLE: &str = include_str!("../config/gatehouse.example.toml");

#[test]
fn example_file_parses_and_states_the_code_defaults() {
    let parsed: RawConfig = toml_like(EXAMPLE);
    let defaults = RawConfig::default();
    // Everything but the operator-specific certificate paths equals the defaults.
    let mut p = serde_json::to_value(&parsed).expect("json");
    let mut d = serde_json::to_value(&defaults).expect("json");
    p["server"]["tls"] = serde_json::Value::Null;
    d["server"]["tls"] = serde_json::Value::Null;
    assert_eq!(
        p, d,
        "config/gatehouse.example.toml and the Default impls disagree"
    );
}

fn toml_like(text: &str) -> RawConfig {
    use figment::providers::{Format, Toml};
    figment::Figment::from(Toml::string(text))
        .extract()
        .expect("example parses")
}

#[test]
fn validation_reports_every_problem_with_its_key_path() {
    let text = r#"
[server]
listen = ["not an address"]
trusted_proxies = ["10.0.0.1/8", "nonsense"]
worker_threads = 5000
[server.tls]
cert = "missing.pem"
key = "missing.key"
[server.limits]
max_header_bytes = 100
[upstream]
url = "ftp://x"
[logging]
format = "xml"
[login]
username_field = ""
fixed_username = "bad\u0007name"
[login.success]
json_pointer = "ok"
[[login.api]]
path = "/api/login"
json_pointer = "/ok"
json_equals = "yes"
"#;
    let Err(ConfigError::Invalid(issues)) = load_str(text, None) else {
        panic!("must be refused");
    };
    let keys: Vec<&str> = issues.iter().map(|i| i.key.as_str()).collect();
    for want in [
        "server.listen[0]",
        "server.trusted_proxies[0]",
        "server.trusted_proxies[1]",
        "server.worker_threads",
        "server.tls.cert",
        "server.tls.key",
        "server.limits.max_header_bytes",
        "upstream.url",
        "logging.format",
        "login.username_field",
        "login.fixed_username",
        "login.success.json_pointer",
        "login.api[0].json_equals",
    ] {
        assert!(keys.contains(&want), "{want} missing from {keys:?}");
    }
    let host_bits = issues
        .iter()
        .find(|i| i.key == "server.trusted_proxies[0]")
        .expect("issue");
    assert!(
        host_bits.message.contains("10.0.0.0/8"),
        "{}",
        host_bits.message
    );
}
