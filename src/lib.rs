//! gatehouse: a TLS-terminating access gateway in front of an unmodified
//! dashboard. See DESIGN.md for the path of a request; `gate.rs` strings the
//! stages together.

pub mod access;
pub mod admin;
pub mod audit;
pub mod auth;
pub mod client_ip;
pub mod clock;
pub mod config;
pub mod demo;
pub mod error;
pub mod gate;
pub mod h2_flood;
pub mod incidents;
pub mod listener;
pub mod login_probe;
pub mod metrics;
pub mod own_pages;
pub mod pages;
pub mod proxy;
pub mod session;
pub mod store;
pub mod tls;

/// With the feature `heap-stats` (built by `bench/soak` only), mimalloc
/// behind a counter of the bytes allocated and not yet freed, published as
/// `gatehouse_heap_allocated_bytes`: RSS alone cannot tell objects kept (a
/// leak) from free memory the allocator holds on to.
#[cfg(feature = "heap-stats")]
#[global_allocator]
pub static HEAP: cap::Cap<mimalloc::MiMalloc> = cap::Cap::new(mimalloc::MiMalloc, usize::MAX);

use crate::auth::two_factor::TwoFactor;
use crate::clock::{SharedClock, SystemClock};
use crate::config::validate::Settings;
use crate::gate::{Gate, Live, LiveError};
use crate::session::vault::VaultedNames;
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Live(#[from] LiveError),
    #[error("{0}")]
    Bind(#[from] std::io::Error),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("store.secret_key_file: {0}")]
    SecretKey(#[from] crate::store::SealError),
}

/// Entry point used by the binary and by tests (which start gateways
/// in-process on port 0).
pub struct Gateway {
    settings: Settings,
    clock: SharedClock,
    store: Option<Arc<dyn store::Store>>,
}

impl Gateway {
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            clock: Arc::new(SystemClock),
            store: None,
        }
    }

    /// Share an already open store (several in-process gateways on one
    /// embedded file, as several processes share one Redis).
    pub fn with_store(mut self, store: Arc<dyn store::Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Use another clock (tests move time instead of sleeping).
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    pub async fn start(self) -> Result<Handle, StartError> {
        let bound = listener::Bound::bind(
            &self.settings.server.listen,
            self.settings.server.redirect_http,
        )
        .await?;
        let addrs = bound
            .tls
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect();
        let redirect_addr = bound.redirect.as_ref().and_then(|l| l.local_addr().ok());
        let metrics_listener = metrics::bind(self.settings.metrics_listen).await?;
        let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
        if metrics_listener.is_some() {
            // Installed before anything records (the certificate expiry gauge
            // is set while the TLS configuration is built).
            let _ = metrics::recorder();
        }
        let store = match self.store {
            Some(s) => s,
            None => store::open(&self.settings.store).await?,
        };
        let sealer = Arc::new(store::Sealer::load_or_create(
            &self.settings.store.secret_key_file,
        )?);
        let two_factor = TwoFactor::new(store.clone(), sealer.clone());
        let vaulted = VaultedNames::new(&self.settings.login.session_cookies);
        let live = Live::build(self.settings, &store)?;
        let store_for_passwords = store.clone();
        let gate = Arc::new(Gate {
            live: ArcSwap::from_pointee(live),
            store,
            clock: self.clock,
            vaulted,
            two_factor,
            passwords: crate::auth::password::Passwords::new(store_for_passwords),
            sealer,
        });
        let serving = listener::serve(gate.clone(), bound)?;
        let metrics_task = metrics_listener.map(|l| {
            let upstream = gate.live.load().settings.upstream.authority.to_string();
            metrics::serve(
                l,
                metrics::Readiness {
                    gate: gate.clone(),
                    upstream,
                    connections: serving.loads(),
                },
            )
        });
        Ok(Handle {
            gate,
            serving,
            addrs,
            redirect_addr,
            metrics_addr,
            _metrics_task: metrics_task.map(AbortOnDrop),
        })
    }
}

/// A running gateway.
pub struct Handle {
    gate: Arc<Gate>,
    serving: listener::Serving,
    addrs: Vec<SocketAddr>,
    redirect_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    _metrics_task: Option<AbortOnDrop>,
}

/// Stops a background task when its owner goes away.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Handle {
    /// The TLS listeners' actual addresses.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    pub fn redirect_addr(&self) -> Option<SocketAddr> {
        self.redirect_addr
    }

    /// How many connections each worker thread (`server.worker_threads`)
    /// serves now; the thread that started the gateway is the first.
    pub fn connections_per_worker(&self) -> Vec<usize> {
        self.serving.loads().per_worker()
    }

    /// The store this gateway uses (tests and the admin operations).
    pub fn store(&self) -> Arc<dyn store::Store> {
        self.gate.store.clone()
    }

    /// The session operations (log out all, per user) for admin code and tests.
    pub fn live(&self) -> Arc<Live> {
        self.gate.live.load_full()
    }

    pub fn settings(&self) -> Arc<Settings> {
        self.gate.live.load().settings.clone()
    }

    /// Put a new configuration into service for new connections and requests.
    /// On error the running configuration stays. Listener addresses are not
    /// re-bound and the thread count stays: changing them needs a restart
    /// (logged).
    pub fn reload(&self, settings: Settings) -> Result<(), LiveError> {
        let old = self.gate.live.load_full();
        if old.settings.server.listen != settings.server.listen
            || old.settings.server.redirect_http != settings.server.redirect_http
        {
            tracing::warn!("listen addresses changed: restart gatehouse to apply them");
        }
        if old.settings.server.worker_threads != settings.server.worker_threads {
            tracing::warn!("server.worker_threads changed: restart gatehouse to apply it");
        }
        if old.settings.store != settings.store {
            tracing::warn!("store settings changed: restart gatehouse to apply them");
        }
        self.gate
            .vaulted
            .learn(settings.login.session_cookies.iter().map(String::as_str));
        let live = Live::build(settings, &self.gate.store).inspect_err(|_| {
            ::metrics::counter!("gatehouse_config_reloads_total", "result" => "failed")
                .increment(1);
        })?;
        self.gate.live.store(Arc::new(live));
        ::metrics::counter!("gatehouse_config_reloads_total", "result" => "ok").increment(1);
        Ok(())
    }

    /// Stop accepting, let in-flight requests finish up to `deadline`.
    /// Returns false when connections were still open at the deadline.
    pub async fn shutdown(self, deadline: Duration) -> bool {
        let drained = self.serving.drain(deadline).await;
        self.gate.store.close().await;
        drained
    }
}
