//! Security events as JSON lines (target `gatehouse::audit`): sign-ins,
//! lockouts, second-factor steps, refusals, session ends, admin actions.
//! Never secrets: no passwords, codes, seeds, cookies or session ids — only
//! the short session reference.

use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

/// Where audit lines go besides the tracing output: an append-only file,
/// reopened on SIGHUP so logrotate can move it away.
static FILE: Mutex<Option<File>> = Mutex::new(None);

/// (Re)open the audit file (`None` = no file). Created with mode 0640.
pub fn open_file(path: Option<&Path>) -> std::io::Result<()> {
    let file = match path {
        Some(p) => {
            use std::os::unix::fs::OpenOptionsExt;
            if let Some(dir) = p.parent() {
                std::fs::create_dir_all(dir)?;
            }
            Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o640)
                    .open(p)?,
            )
        }
        None => None,
    };
    *FILE.lock().unwrap_or_else(|p| p.into_inner()) = file;
    Ok(())
}

/// One audit event. Fields that do not apply are left out.
#[derive(Debug, Default, Serialize)]
pub struct Event<'a> {
    pub event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub area: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<&'a str>,
    /// The reference shown to a refused user, to find this line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<&'a str>,
}

impl Event<'_> {
    /// Emit the event as one JSON object (serde escapes CR, LF and quotes,
    /// so hostile usernames cannot forge lines).
    /// One JSON object per line, ASCII only: usernames and other client
    /// text cannot break the line, forge another, or reach a log reader as
    /// a line separator, bidi override or escape sequence.
    pub fn emit(&self) {
        let ts = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if let Some(obj) = value.as_object_mut() {
            obj.insert("ts".into(), ts.into());
        }
        let line = ascii_only(&value.to_string());
        tracing::info!(target: "gatehouse::audit", "{line}");
        if let Some(f) = FILE.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            // One write per line keeps lines whole under concurrent writers.
            if let Err(e) = f.write_all(format!("{line}\n").as_bytes()) {
                tracing::error!(error = %e, "cannot write the audit file");
            }
        }
        // Every security event is also a counter: logins, 2FA, lockouts, incidents…
        metrics::counter!("gatehouse_events_total", "event" => self.event.to_string()).increment(1);
    }
}

/// Non-ASCII characters of a JSON text as `\u` escapes (UTF-16, four hex digits each). Outside strings
/// JSON is ASCII already, so the result is the same JSON value.
fn ascii_only(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod ascii_tests {
    #[test]
    fn audit_lines_are_ascii_and_still_the_same_json() {
        let v = serde_json::json!({"user": "mall\u{2028}ory\u{202e} é 😀 \"x\"\n"});
        let line = super::ascii_only(&v.to_string());
        assert!(line.is_ascii(), "{line}");
        let back: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(back, v);
    }
}
