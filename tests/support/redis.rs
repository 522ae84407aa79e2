//! Real redis-server processes for tests: a single node that can be stopped and started again
//! on the same port (outage tests), and a 3-node cluster. Never the system's redis on 6379.
//!
//! Use from a test file with `#[path = "support/redis.rs"] mod redis_fixture;`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

const START_TIMEOUT: Duration = Duration::from_secs(10);

/// One redis-server on a free port of 127.0.0.1, in its own temp dir, killed on drop.
pub struct RedisServer {
    port: u16,
    dir: TempDir,
    extra: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// Starts with extra `redis-server` arguments (e.g. cluster mode).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        require_redis_server();
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let cluster = extra.iter().any(|a| a == "--cluster-enabled");
        for _ in 0..20 {
            let port = free_port(cluster);
            let dir = tempfile::tempdir().expect("temp dir for redis-server");
            let mut server = RedisServer {
                port,
                dir,
                extra: extra.clone(),
                child: None,
            };
            // Another process may take the port between our probe and redis binding it.
            if server.try_spawn() {
                return server;
            }
        }
        panic!("could not start redis-server on a free port after 20 attempts");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills the server (SIGKILL: an outage, not a clean shutdown) and waits until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, with the same directory.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + START_TIMEOUT;
        // The port can linger briefly after the kill; keep trying until the deadline.
        while !self.try_spawn() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not restart on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn try_spawn(&mut self) -> bool {
        let log = std::fs::File::create(self.dir.path().join("redis.log")).expect("redis log file");
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--protected-mode", "no"])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("redis log file"))
            .stderr(log);
        let mut child = cmd.spawn().expect("spawn redis-server");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return false; // exited: most likely the port was taken
            }
            if query(self.port, "PING").is_some_and(|r| r.contains("PONG")) {
                self.child = Some(child);
                return true;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "redis-server on port {} did not answer PING; see {}",
                    self.port,
                    self.log_path().display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Three masters with `--cluster-enabled yes`, slots assigned by `redis-cli --cluster create`.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "5000",
                ])
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create (apt-get install -y redis-tools)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        for node in &nodes {
            loop {
                let info = query(node.port(), "CLUSTER INFO").unwrap_or_default();
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "cluster did not reach cluster_state:ok: {info}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        RedisCluster { nodes }
    }

    /// `redis-cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        format!("redis-cluster://{}", hosts.join(","))
    }
}

fn require_redis_server() {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "redis-server is not installed; the Redis store tests need it: apt-get install -y redis-server"
    );
}

/// A port that was free a moment ago. Cluster nodes also need port + 10000 (the cluster bus).
fn free_port(cluster: bool) -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        if !cluster {
            return port;
        }
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// Sends one inline command and returns the raw reply, or `None` if nothing answers.
pub fn query(port: u16, command: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().ok()?,
        Duration::from_millis(500),
    )
    .ok()?;
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    stream.write_all(format!("{command}\r\n").as_bytes()).ok()?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut reply = String::new();
    // A short reply arrives in one read; a bulk reply (CLUSTER INFO) may need a few.
    loop {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        reply.push_str(&String::from_utf8_lossy(&buf[..n]));
        if reply.starts_with('+') || reply.starts_with('-') || reply.contains("cluster_state") {
            break;
        }
        if reply.ends_with("\r\n") && reply.lines().count() > 2 {
            break;
        }
    }
    Some(reply)
}

/// A master plus one Sentinel monitoring it as `mymaster`.
pub struct RedisSentinel {
    pub master: RedisServer,
    port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl RedisSentinel {
    pub fn start() -> RedisSentinel {
        let master = RedisServer::start();
        for _ in 0..20 {
            let port = free_port(false);
            let dir = tempfile::tempdir().expect("temp dir for sentinel");
            let conf = dir.path().join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor mymaster 127.0.0.1 {} 1\nsentinel down-after-milliseconds mymaster 5000\n",
                    dir.path().display(),
                    master.port()
                ),
            )
            .expect("write sentinel.conf");
            let log = std::fs::File::create(dir.path().join("sentinel.log")).expect("sentinel log");
            let mut child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("sentinel log"))
                .stderr(log)
                .spawn()
                .expect("spawn redis-server --sentinel");
            let deadline = Instant::now() + START_TIMEOUT;
            let ready = loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break false;
                }
                let reply =
                    query(port, "SENTINEL get-master-addr-by-name mymaster").unwrap_or_default();
                if reply.contains(&master.port().to_string()) {
                    break true;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("sentinel on port {port} did not report its master");
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            if ready {
                return RedisSentinel {
                    master,
                    port,
                    dir,
                    child: Some(child),
                };
            }
        }
        panic!("could not start redis sentinel on a free port after 20 attempts");
    }

    /// `redis+sentinel://127.0.0.1:PORT/mymaster`
    pub fn url(&self) -> String {
        format!("redis+sentinel://127.0.0.1:{}/mymaster", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
