//! Durations as operators write them: "90s", "15m", "24h", "90d", or "disabled".

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::time::Duration;

/// A duration that may be switched off with `"disabled"` (or `"off"`, `"0"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OptDuration(pub Option<Duration>);

/// A duration that must be set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

pub fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty duration; write e.g. \"90s\", \"15m\", \"24h\"".into());
    }
    humantime::parse_duration(t).map_err(|e| {
        format!("invalid duration {t:?} ({e}); write e.g. \"90s\", \"15m\", \"24h\", \"90d\"")
    })
}

pub fn parse_optional(text: &str) -> Result<Option<Duration>, String> {
    match text.trim() {
        "disabled" | "off" | "none" | "0" => Ok(None),
        other => parse(other).map(|d| if d.is_zero() { None } else { Some(d) }),
    }
}

pub fn format(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let text = String::deserialize(de)?;
        parse(&text).map(Dur).map_err(serde::de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for OptDuration {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let text = String::deserialize(de)?;
        parse_optional(&text)
            .map(OptDuration)
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(self.0))
    }
}

impl Serialize for OptDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(d) => s.serialize_str(&format(d)),
            None => s.serialize_str("disabled"),
        }
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_spellings_parse() {
        assert_eq!(parse("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(parse_optional("disabled"), Ok(None));
        assert_eq!(parse_optional("0s"), Ok(None));
        assert!(parse("soon").is_err());
    }
}
