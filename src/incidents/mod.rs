//! Security incidents: who signs in from where. A user signing in from
//! several countries within a window is flagged; admins review sign-ins and
//! mark addresses or networks safe per email domain.

pub mod detect;
pub mod history;
pub mod trusted;

use crate::audit::Event;
use crate::store::{Key, KeyPrefix, Store, StoreError};
use detect::Finding;
use history::{LoginRecord, LoginResult};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use trusted::{SafeEntry, SafeError};

/// The validated `[incidents]` section.
#[derive(Debug, Clone)]
pub struct IncidentSettings {
    pub window: Duration,
    pub distinct_countries: usize,
    pub history: usize,
    pub webhook: Option<http::Uri>,
    /// More failed attempts than this on one user in the window opens an
    /// incident too (0 = off).
    pub burst_failures: usize,
}

/// One incident as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    pub id: String,
    pub user: String,
    pub kind: String,
    pub opened_ms: u64,
    pub updated_ms: u64,
    pub finding: Finding,
    pub open: bool,
    pub note: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum IncidentError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Safe(#[from] SafeError),
    #[error("no incident {0}")]
    NotFound(String),
    #[error("closing an incident needs a note saying why")]
    NoteRequired,
}

/// Incidents, history and safe networks over the store.
pub struct Incidents {
    store: Arc<dyn Store>,
    pub settings: IncidentSettings,
}

impl Incidents {
    pub fn new(store: Arc<dyn Store>, settings: IncidentSettings) -> Self {
        Self { store, settings }
    }

    /// Record an attempt that reached a decision; after a success, run the
    /// detection. Returns a newly opened incident, if any.
    pub async fn record(&self, rec: LoginRecord) -> Result<Option<Incident>, IncidentError> {
        let key = Key::Logins(rec.user.clone());
        let bytes =
            serde_json::to_vec(&rec).map_err(|_| StoreError::Corrupt("login record".into()))?;
        self.store
            .list_push_capped(&key, bytes.into(), self.settings.history)
            .await?;
        let now = rec.ts_ms;
        let history = self.history(&rec.user, self.settings.history).await?;
        let finding = if rec.result == LoginResult::Ok {
            let domain = crate::auth::login::email_domain(&rec.user).unwrap_or("");
            let safe: Vec<_> = self
                .safe(domain)
                .await?
                .into_iter()
                .map(|e| e.network)
                .collect();
            detect::evaluate(
                &history,
                &safe,
                now,
                self.settings.window,
                self.settings.distinct_countries,
            )
            .map(|f| ("countries", f))
        } else if self.settings.burst_failures > 0
            && detect::failures_in_window(&history, now, self.settings.window)
                > self.settings.burst_failures
        {
            Some((
                "failures",
                detect::failures(&history, now, self.settings.window),
            ))
        } else {
            None
        };
        match finding {
            Some((kind, f)) => self.open_or_update(&rec.user, kind, f, now).await,
            None => Ok(None),
        }
    }

    /// A user's last sign-in attempts, newest first.
    pub async fn history(
        &self,
        user: &str,
        count: usize,
    ) -> Result<Vec<LoginRecord>, IncidentError> {
        let raw = self
            .store
            .list_range(&Key::Logins(user.to_string()), 0, count)
            .await?;
        Ok(raw
            .iter()
            .filter_map(|b| serde_json::from_slice(b).ok())
            .collect())
    }

    /// One open incident per user and kind: a finding while one is open adds
    /// its evidence to it; otherwise a new one is opened. Concurrent sign-ins
    /// race on the pointer with create/compare-and-set, so exactly one opens it.
    async fn open_or_update(
        &self,
        user: &str,
        kind: &str,
        finding: Finding,
        now: u64,
    ) -> Result<Option<Incident>, IncidentError> {
        let pointer = Key::UserIncident(user.to_string(), kind.to_string());
        for round in 0..crate::store::CAS_ROUNDS {
            crate::store::cas_pause(round).await;
            let current = self.store.get(&pointer).await?;
            if let Some(p) = &current {
                let id = String::from_utf8_lossy(&p.value).to_string();
                if self.add_evidence(&id, &finding, now).await? {
                    return Ok(None);
                }
            }
            // No open incident behind the pointer: claim it for a new one.
            let id = hex::encode(rand::random::<[u8; 8]>());
            let incident = Incident {
                id: id.clone(),
                user: user.to_string(),
                kind: kind.to_string(),
                opened_ms: now,
                updated_ms: now,
                finding: finding.clone(),
                open: true,
                note: None,
            };
            // Written before the pointer names it, so the pointer never leads nowhere.
            self.store
                .put_json(&Key::Incident(id.clone()), &incident, None)
                .await?;
            let claimed = self
                .store
                .compare_and_set(
                    &pointer,
                    current.map(|p| p.version),
                    id.clone().into(),
                    None,
                )
                .await?;
            if !claimed {
                // Another sign-in opened (or moved) it first: add to theirs.
                self.store.delete(&Key::Incident(id)).await?;
                continue;
            }
            self.store.set_add(&Key::Incidents, &id).await?;
            let countries = incident
                .finding
                .countries
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(",");
            Event {
                event: "incident_opened",
                user: Some(user),
                reason: Some(kind),
                country: Some(&countries),
                reference: Some(&id),
                ..Event::default()
            }
            .emit();
            if let Some(url) = &self.settings.webhook {
                webhook::send(url.clone(), &incident);
            }
            return Ok(Some(incident));
        }
        Err(StoreError::Unavailable("incident update kept conflicting".into()).into())
    }

    /// Merge `finding` into incident `id` if it is still open. `false` = it
    /// is closed or gone.
    async fn add_evidence(
        &self,
        id: &str,
        finding: &Finding,
        now: u64,
    ) -> Result<bool, IncidentError> {
        let key = Key::Incident(id.to_string());
        for round in 0..crate::store::CAS_ROUNDS {
            crate::store::cas_pause(round).await;
            let Some(current) = self.store.get_json::<Incident>(&key).await? else {
                return Ok(false);
            };
            if !current.value.open {
                return Ok(false);
            }
            let mut next = current.value.clone();
            next.finding.merge(finding);
            next.updated_ms = now;
            if self
                .store
                .cas_json(&key, Some(current.version), &next, None)
                .await?
            {
                return Ok(true);
            }
        }
        Err(StoreError::Unavailable("incident update kept conflicting".into()).into())
    }

    /// Incidents, newest first; only open ones unless `all`.
    pub async fn list(&self, all: bool) -> Result<Vec<Incident>, IncidentError> {
        let mut out = Vec::new();
        for (_, v) in self
            .store
            .scan_json::<Incident>(&KeyPrefix::Incidents)
            .await?
        {
            if all || v.value.open {
                out.push(v.value);
            }
        }
        out.sort_by_key(|i| std::cmp::Reverse(i.updated_ms));
        Ok(out)
    }

    pub async fn get(&self, id: &str) -> Result<Incident, IncidentError> {
        self.store
            .get_json::<Incident>(&Key::Incident(id.to_string()))
            .await?
            .map(|v| v.value)
            .ok_or_else(|| IncidentError::NotFound(id.to_string()))
    }

    /// Close an incident with a note; the next finding opens a new one.
    pub async fn close(&self, id: &str, note: &str, actor: &str) -> Result<(), IncidentError> {
        let note = note.trim();
        if note.is_empty() {
            return Err(IncidentError::NoteRequired);
        }
        let key = Key::Incident(id.to_string());
        for round in 0..crate::store::CAS_ROUNDS {
            crate::store::cas_pause(round).await;
            let Some(current) = self.store.get_json::<Incident>(&key).await? else {
                return Err(IncidentError::NotFound(id.to_string()));
            };
            let mut next = current.value.clone();
            next.open = false;
            next.note = Some(note.chars().take(500).collect());
            if self
                .store
                .cas_json(&key, Some(current.version), &next, None)
                .await?
            {
                // The pointer may already name a newer incident; leave that one.
                let pointer = Key::UserIncident(next.user.clone(), next.kind.clone());
                if let Some(p) = self.store.get(&pointer).await? {
                    if p.value.as_ref() == id.as_bytes() {
                        self.store
                            .compare_and_set(&pointer, Some(p.version), bytes::Bytes::new(), None)
                            .await?;
                    }
                }
                Event {
                    event: "incident_closed",
                    user: Some(&next.user),
                    actor: Some(actor),
                    reference: Some(id),
                    ..Event::default()
                }
                .emit();
                return Ok(());
            }
        }
        Err(StoreError::Unavailable("incident update kept conflicting".into()).into())
    }

    /// Mark an address (or its network, /22–/31 for IPv4, /48–/127 for IPv6)
    /// safe for an email domain. A description is required.
    pub async fn mark_safe(
        &self,
        domain: &str,
        ip: &str,
        prefix: Option<u8>,
        description: &str,
        actor: &str,
        now_ms: u64,
    ) -> Result<SafeEntry, IncidentError> {
        let domain = trusted::check_domain(domain)?;
        let description = trusted::check_description(description)?;
        let network = trusted::network(ip, prefix)?;
        let entry = SafeEntry {
            network,
            description,
            added_ms: now_ms,
            added_by: actor.to_string(),
        };
        self.update_safe(&domain, |list| {
            list.retain(|e| e.network != network);
            list.push(entry.clone());
        })
        .await?;
        let net = network.to_string();
        Event {
            event: "network_marked_safe",
            actor: Some(actor),
            ip: Some(net),
            reason: Some(&entry.description),
            ..Event::default()
        }
        .emit();
        Ok(entry)
    }

    pub async fn remove_safe(
        &self,
        domain: &str,
        network: &str,
        actor: &str,
    ) -> Result<bool, IncidentError> {
        let domain = trusted::check_domain(domain)?;
        let net: ipnet::IpNet = network
            .parse()
            .or_else(|_| trusted::network(network, None))
            .map_err(|_| SafeError::Address(network.to_string()))?;
        let mut removed = false;
        self.update_safe(&domain, |list| {
            let before = list.len();
            list.retain(|e| e.network != net);
            removed = list.len() != before;
        })
        .await?;
        if !removed {
            return Ok(false);
        }
        Event {
            event: "network_unmarked_safe",
            actor: Some(actor),
            ip: Some(net.to_string()),
            ..Event::default()
        }
        .emit();
        Ok(removed)
    }

    /// Safe entries of a domain.
    pub async fn safe(&self, domain: &str) -> Result<Vec<SafeEntry>, IncidentError> {
        Ok(self
            .store
            .get_json::<Vec<SafeEntry>>(&Key::Trusted(domain.to_string()))
            .await?
            .map(|v| v.value)
            .unwrap_or_default())
    }

    /// Every domain's safe entries matching `text` (address, network or description).
    pub async fn search_safe(&self, text: &str) -> Result<Vec<(String, SafeEntry)>, IncidentError> {
        let needle = text.trim().to_lowercase();
        let ip = needle.parse::<std::net::IpAddr>().ok();
        let mut out = Vec::new();
        for key in self.store.scan_prefix(&KeyPrefix::Trusted).await? {
            let Key::Trusted(domain) = &key else { continue };
            for e in self.safe(domain).await? {
                let hit = needle.is_empty()
                    || ip.is_some_and(|ip| e.network.contains(&ip))
                    || e.network.to_string().contains(&needle)
                    || e.description.to_lowercase().contains(&needle)
                    || domain.contains(&needle);
                if hit {
                    out.push((domain.clone(), e));
                }
            }
        }
        Ok(out)
    }

    async fn update_safe(
        &self,
        domain: &str,
        mut change: impl FnMut(&mut Vec<SafeEntry>),
    ) -> Result<(), IncidentError> {
        let key = Key::Trusted(domain.to_string());
        for round in 0..crate::store::CAS_ROUNDS {
            crate::store::cas_pause(round).await;
            let current = self.store.get_json::<Vec<SafeEntry>>(&key).await?;
            let version = current.as_ref().map(|v| v.version);
            let mut list = current.map(|v| v.value).unwrap_or_default();
            change(&mut list);
            if self.store.cas_json(&key, version, &list, None).await? {
                return Ok(());
            }
        }
        Err(StoreError::Unavailable("safe list update kept conflicting".into()).into())
    }
}

mod webhook {
    //! New incidents are POSTed as JSON to `incidents.webhook` from a task of
    //! their own: bounded retries with backoff and a short timeout, never in
    //! the way of a sign-in; one log line per incident when it fails.

    use super::Incident;
    use http::{header, Request, Uri};
    use http_body_util::Full;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use std::time::Duration;

    const ATTEMPTS: u32 = 4;
    const TIMEOUT: Duration = Duration::from_secs(5);

    pub fn send(url: Uri, incident: &Incident) {
        let body = serde_json::json!({
            "event": "incident_opened",
            "id": incident.id,
            "user": incident.user,
            "kind": incident.kind,
            "opened_ms": incident.opened_ms,
            "countries": incident.finding.countries,
            "sign_ins": incident.finding.sign_ins,
            "distinct_countries": incident.finding.countries.len(),
            "first_ms": incident.finding.first_ms,
            "last_ms": incident.finding.last_ms,
            "ips": incident.finding.ips,
        })
        .to_string();
        let id = incident.id.clone();
        tokio::spawn(async move {
            let Ok(https) = hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() else {
                tracing::warn!(incident = %id, "incident webhook: no TLS roots");
                return;
            };
            let connector = https.https_or_http().enable_http1().build();
            let client: Client<_, Full<bytes::Bytes>> =
                Client::builder(TokioExecutor::new()).build(connector);
            let mut last_error = String::new();
            for attempt in 0..ATTEMPTS {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
                }
                let req = Request::post(url.clone())
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Full::new(bytes::Bytes::from(body.clone())));
                let Ok(req) = req else { return };
                match tokio::time::timeout(TIMEOUT, client.request(req)).await {
                    Ok(Ok(resp)) if resp.status().is_success() => return,
                    Ok(Ok(resp)) => last_error = format!("status {}", resp.status()),
                    Ok(Err(e)) => last_error = e.to_string(),
                    Err(_) => last_error = "timed out".into(),
                }
            }
            tracing::warn!(incident = %id, error = %last_error, "incident webhook failed after {ATTEMPTS} attempts");
        });
    }
}
