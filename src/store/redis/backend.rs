//! How the Redis store reaches its deployment: the URL's scheme, and one
//! connection handle for a single node (ConnectionManager), Sentinel (asked
//! again after a connection error) or Cluster.

use std::sync::Mutex;
use std::time::Duration;

use percent_encoding::percent_decode_str;
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, Value};

use crate::store::StoreError;

pub(super) enum Scheme {
    Single,
    Sentinel { tls: bool },
    Cluster { tls: bool },
}

impl Scheme {
    pub(super) fn of(url: &str) -> Result<Scheme, StoreError> {
        let scheme = url.split_once("://").map_or("", |(s, _)| s);
        match scheme {
            "redis" | "rediss" | "redis+unix" | "unix" => Ok(Scheme::Single),
            "redis+sentinel" => Ok(Scheme::Sentinel { tls: false }),
            "rediss+sentinel" => Ok(Scheme::Sentinel { tls: true }),
            "redis-cluster" => Ok(Scheme::Cluster { tls: false }),
            "rediss-cluster" => Ok(Scheme::Cluster { tls: true }),
            // Never echo the URL: it may carry a password.
            _ => Err(StoreError::Config(
                "unsupported scheme; use file:, redis://, rediss://, redis+sentinel://, redis-cluster:// or rediss-cluster://"
                    .to_owned(),
            )),
        }
    }
}

/// `scheme://[userinfo@]host:port[,host:port…][/rest]` split into its parts.
struct MultiHost<'a> {
    userinfo: Option<&'a str>,
    hosts: Vec<&'a str>,
    path: &'a str,
}

fn split_multi_host(url: &str) -> Result<MultiHost<'_>, StoreError> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let hosts: Vec<&str> = hosts.split(',').filter(|h| !h.is_empty()).collect();
    if hosts.is_empty() {
        return Err(StoreError::Config(
            "no host:port in the Redis URL".to_owned(),
        ));
    }
    Ok(MultiHost {
        userinfo,
        hosts,
        path,
    })
}

fn bad_url(e: RedisError) -> StoreError {
    StoreError::Config(format!(
        "not a usable Redis URL ({})",
        format_args!("{:?}", e.kind())
    ))
}

fn connect_failed(e: RedisError) -> StoreError {
    StoreError::Unavailable(format!("cannot connect to Redis: {e}"))
}

fn connect_timed_out() -> StoreError {
    StoreError::Unavailable("cannot connect to Redis: connect timeout".to_owned())
}

pub(super) enum Backend {
    Single(ConnectionManager, Box<redis::Client>),
    Sentinel(Box<Sentinel>),
    Cluster(ClusterConnection),
}

pub(super) struct Sentinel {
    client: tokio::sync::Mutex<SentinelClient>,
    /// Dropped after a connection error so the next operation asks the sentinels again:
    /// after a failover the master is somewhere else.
    current: Mutex<Option<MultiplexedConnection>>,
    connect_timeout: Duration,
}

impl Backend {
    pub(super) async fn single(
        url: &str,
        connect: Duration,
        command: Duration,
    ) -> Result<Backend, StoreError> {
        let client = redis::Client::open(url).map_err(bad_url)?;
        let pubsub_client = client.clone();
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect))
            .set_response_timeout(Some(command))
            .set_max_delay(Duration::from_secs(2));
        let manager =
            tokio::time::timeout(connect, ConnectionManager::new_with_config(client, config))
                .await
                .map_err(|_| connect_timed_out())?
                .map_err(connect_failed)?;
        Ok(Backend::Single(manager, Box::new(pubsub_client)))
    }

    pub(super) async fn sentinel(
        url: &str,
        tls: bool,
        connect: Duration,
    ) -> Result<Backend, StoreError> {
        let parts = split_multi_host(url)?;
        let mut path = parts.path.split('/');
        let master = path.next().filter(|m| !m.is_empty()).ok_or_else(|| {
            StoreError::Config("redis+sentinel:// URL needs the master name: …/mymaster".to_owned())
        })?;
        let mut info = redis::RedisConnectionInfo::default();
        if let Some(db) = path.next().filter(|d| !d.is_empty()) {
            let db = db
                .parse()
                .map_err(|_| StoreError::Config("database number is not a number".to_owned()))?;
            info = info.set_db(db);
        }
        if let Some(userinfo) = parts.userinfo {
            let (user, pass) = userinfo.split_once(':').unwrap_or(("", userinfo));
            let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
            if !user.is_empty() {
                info = info.set_username(decode(user));
            }
            info = info.set_password(decode(pass));
        }
        let mut node = SentinelNodeConnectionInfo::default().set_redis_connection_info(info);
        if tls {
            node = node.set_tls_mode(redis::TlsMode::Secure);
        }
        let sentinel_scheme = if tls { "rediss" } else { "redis" };
        let sentinels: Vec<String> = parts
            .hosts
            .iter()
            .map(|h| format!("{sentinel_scheme}://{h}"))
            .collect();
        let client =
            SentinelClient::build(sentinels, master, Some(node), SentinelServerType::Master)
                .map_err(bad_url)?;
        let backend = Sentinel {
            client: tokio::sync::Mutex::new(client),
            current: Mutex::new(None),
            connect_timeout: connect,
        };
        backend.connection().await?;
        Ok(Backend::Sentinel(Box::new(backend)))
    }

    pub(super) async fn cluster(
        url: &str,
        tls: bool,
        connect: Duration,
        command: Duration,
    ) -> Result<Backend, StoreError> {
        let parts = split_multi_host(url)?;
        let scheme = if tls { "rediss" } else { "redis" };
        let auth = parts.userinfo.map(|u| format!("{u}@")).unwrap_or_default();
        let nodes: Vec<String> = parts
            .hosts
            .iter()
            .map(|h| format!("{scheme}://{auth}{h}"))
            .collect();
        let client = ClusterClient::builder(nodes)
            .connection_timeout(connect)
            .response_timeout(command)
            .build()
            .map_err(bad_url)?;
        let conn = tokio::time::timeout(connect, client.get_async_connection())
            .await
            .map_err(|_| connect_timed_out())?
            .map_err(connect_failed)?;
        Ok(Backend::Cluster(conn))
    }

    pub(super) async fn conn(&self) -> Result<Conn, StoreError> {
        match self {
            Backend::Single(m, _) => Ok(Conn::Manager(m.clone())),
            Backend::Cluster(c) => Ok(Conn::Cluster(c.clone())),
            Backend::Sentinel(s) => s.connection().await.map(Conn::Multiplexed),
        }
    }

    /// A connection for subscriptions (not on a Cluster).
    pub(super) async fn pubsub(&self, timeout: Duration) -> Result<redis::aio::PubSub, StoreError> {
        let connect = async {
            match self {
                Backend::Single(_, client) => client.get_async_pubsub().await,
                Backend::Sentinel(s) => {
                    let client = s.client.lock().await.async_get_client().await?;
                    client.get_async_pubsub().await
                }
                Backend::Cluster(_) => Err(RedisError::from((
                    ErrorKind::InvalidClientConfig,
                    "no subscriptions on a Cluster",
                ))),
            }
        };
        tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| connect_timed_out())?
            .map_err(connect_failed)
    }

    pub(super) fn forget_connection(&self) {
        if let Backend::Sentinel(s) = self {
            if let Ok(mut current) = s.current.lock() {
                *current = None;
            }
        }
    }
}

impl Sentinel {
    async fn connection(&self) -> Result<MultiplexedConnection, StoreError> {
        if let Some(c) = self.current.lock().ok().and_then(|c| c.clone()) {
            return Ok(c);
        }
        let mut client = self.client.lock().await;
        let conn = tokio::time::timeout(self.connect_timeout, client.get_async_connection())
            .await
            .map_err(|_| connect_timed_out())?
            .map_err(connect_failed)?;
        if let Ok(mut current) = self.current.lock() {
            *current = Some(conn.clone());
        }
        Ok(conn)
    }
}

/// One connection handle of whichever kind, so operations are written once.
#[derive(Clone)]
pub(super) enum Conn {
    Manager(ConnectionManager),
    Multiplexed(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Manager(c) => c.req_packed_command(cmd),
            Conn::Multiplexed(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Manager(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Multiplexed(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Manager(c) => c.get_db(),
            Conn::Multiplexed(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}
