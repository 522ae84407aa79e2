//! Security events as JSON lines (target `gatehouse::audit`): sign-ins,
//! lockouts, second-factor steps, refusals, session ends, admin actions.
//! Never secrets: no passwords, codes, seeds, cookies or session ids — only
//! the short session reference.

use serde::Serialize;

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
    pub fn emit(&self) {
        let ts = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if let Some(obj) = value.as_object_mut() {
            obj.insert("ts".into(), ts.into());
        }
        tracing::info!(target: "gatehouse::audit", "{value}");
        // Every security event is also a counter: logins, 2FA, lockouts, incidents…
        metrics::counter!("gatehouse_events_total", "event" => self.event.to_string()).increment(1);
    }
}
