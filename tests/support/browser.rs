//! A real headless Chromium for end-to-end tests, driven over WebDriver.
//!
//! Each [`Browser`] is its own Debian `chromedriver` (on a port it picks
//! itself) and its own Chromium with a fresh profile, `HOME` and crash-report
//! database in one temp dir, so browsers never share cookies, cache or state:
//! for a second independent user, `Browser::launch()` again.
//!
//! Everything is killed on drop — the chromedriver's whole process group, then
//! any process whose command line still names the temp dir (Chromium's
//! crashpad handlers leave the group with `setsid`) — and the drop waits until
//! they are gone *and reaped*: `launch` makes the test process a child
//! subreaper (PR_SET_CHILD_SUBREAPER), so orphaned Chromium helpers become its
//! children instead of init's and no zombie is left for `pgrep` to see.
//! `close().await` shuts Chromium down gracefully first.
//!
//! The helpers panic with the page's URL in the message: tests `expect()`.
#![allow(dead_code)]

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// Debian's `chromium` package; override with `GATEHOUSE_CHROMIUM`.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's `chromium-driver` package; override with `GATEHOUSE_CHROMEDRIVER`.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Chromium's command line (plus `--user-data-dir`). The gateways in tests
/// use self-signed certificates, hence `--ignore-certificate-errors`.
pub const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--ignore-certificate-errors",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
];

/// How long a browser test may take in all before it fails instead of hanging CI.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Default for waits on the page.
pub const WAIT: Duration = Duration::from_secs(15);

/// Run a whole browser test under [`TEST_TIMEOUT`]; a hung browser fails the
/// test (and dropping the future kills the browser).
pub async fn within_timeout<F: Future>(test: F) -> F::Output {
    match tokio::time::timeout(TEST_TIMEOUT, test).await {
        Ok(out) => out,
        Err(_) => panic!("browser test did not finish within {TEST_TIMEOUT:?}"),
    }
}

/// `target/browser-shots/NAME.png` in this crate.
pub fn shot_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("browser-shots")
        .join(format!("{name}.png"))
}

/// One cookie in the browser's jar (all sites), as Chromium holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JarCookie {
    pub name: String,
    pub value: String,
    pub domain: String,
    pub path: String,
    pub http_only: bool,
    pub secure: bool,
    pub same_site: Option<String>,
}

/// A headless Chromium session.
pub struct Browser {
    client: Option<Client>,
    // Declared after `client`: dropped (killed) after it.
    procs: Procs,
}

impl Browser {
    /// Start chromedriver and a fresh headless Chromium. Panics (with the
    /// apt-get line) when the binaries are missing: never skips silently.
    pub async fn launch() -> Browser {
        let chromium = binary("GATEHOUSE_CHROMIUM", CHROMIUM);
        let chromedriver = binary("GATEHOUSE_CHROMEDRIVER", CHROMEDRIVER);

        let root = tempfile::Builder::new()
            .prefix("gatehouse-browser-")
            .tempdir()
            .expect("browser temp dir");
        let home = root.path().join("home");
        let profile = root.path().join("profile");
        for dir in [&home, &profile] {
            std::fs::create_dir_all(dir).expect("browser dirs");
        }
        let log = root.path().join("chromedriver.log");

        // Chromium double-forks its crashpad handlers; as a subreaper this
        // test process inherits them (and any orphan) and can reap them on
        // drop instead of leaving zombies for init.
        rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
            .expect("become a child subreaper");

        // Own process group, so one kill reaches chromedriver, Chromium and
        // its helpers; HOME/XDG point into the temp dir so nothing is written
        // to the real home (crash reports, NSS db, dconf).
        let mut child = Command::new(&chromedriver)
            .arg("--port=0")
            .arg(format!("--log-path={}", log.display()))
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .env("XDG_DATA_HOME", home.join(".local/share"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", chromedriver.display()));
        let stdout = child.stdout.take().expect("chromedriver stdout");
        let procs = Procs {
            child,
            root,
            seen: Mutex::new(Vec::new()),
        };

        // "ChromeDriver was started successfully on port 12345."
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let port = tokio::time::timeout(Duration::from_secs(20), async {
            let mut seen = Vec::new();
            while let Some(line) = rx.recv().await {
                if let Some(rest) = line.split("started successfully on port ").nth(1) {
                    return rest.trim_end_matches('.').trim().parse::<u16>().ok();
                }
                seen.push(line);
            }
            panic!("chromedriver exited before listening: {}", seen.join("\n"));
        })
        .await
        .expect("chromedriver did not start within 20 s")
        .expect("chromedriver port");

        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| a.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert("acceptInsecureCerts".into(), json!(true));
        caps.insert("pageLoadStrategy".into(), json!("normal"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": chromium, "args": args }),
        );
        let client = tokio::time::timeout(
            Duration::from_secs(30),
            ClientBuilder::new(HttpConnector::new())
                .capabilities(caps)
                .connect(&format!("http://127.0.0.1:{port}")),
        )
        .await
        .unwrap_or_else(|_| {
            panic!(
                "Chromium did not start within 30 s; chromedriver log:\n{}",
                procs.log_tail()
            )
        })
        .unwrap_or_else(|e| {
            panic!(
                "Chromium session failed: {e}; chromedriver log:\n{}",
                procs.log_tail()
            )
        });
        // Page loads and scripts must not outlive the test's own timeouts.
        client
            .update_timeouts(fantoccini::wd::TimeoutConfiguration::new(
                Some(Duration::from_secs(30)),
                Some(Duration::from_secs(30)),
                Some(Duration::ZERO),
            ))
            .await
            .expect("set WebDriver timeouts");

        Browser {
            client: Some(client),
            procs,
        }
    }

    /// The underlying fantoccini client, for anything not wrapped here.
    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("browser is open")
    }

    /// Navigate and wait for the page load to finish.
    pub async fn goto(&self, url: &str) {
        self.client()
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("goto {url}: {e}"));
    }

    pub async fn current_url(&self) -> String {
        self.client()
            .current_url()
            .await
            .expect("current url")
            .to_string()
    }

    pub async fn title(&self) -> String {
        self.client().title().await.expect("title")
    }

    /// The current DOM serialised (what `view-source` would show after scripts).
    pub async fn page_source(&self) -> String {
        self.client().source().await.expect("page source")
    }

    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        match self.client().find(Locator::Css(css)).await {
            Ok(el) => el,
            Err(e) => panic!("no element {css:?} on {}: {e}", self.current_url().await),
        }
    }

    /// Whether `css` matches anything right now (no waiting).
    pub async fn exists(&self, css: &str) -> bool {
        !self
            .client()
            .find_all(Locator::Css(css))
            .await
            .expect("find_all")
            .is_empty()
    }

    /// Clear the input matched by `css` and type `text` into it.
    pub async fn fill(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        el.clear()
            .await
            .unwrap_or_else(|e| panic!("clear {css:?}: {e}"));
        el.send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("type into {css:?}: {e}"));
    }

    pub async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css:?}: {e}"));
    }

    /// Submit the form matched by `css` the way a user would: click its first
    /// submit button, or (no button) `requestSubmit()` it.
    pub async fn submit(&self, css: &str) {
        let form = self
            .client()
            .form(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no form {css:?}: {e}"));
        if form.submit().await.is_err() {
            self.client()
                .execute(
                    "document.querySelector(arguments[0]).requestSubmit()",
                    vec![json!(css)],
                )
                .await
                .unwrap_or_else(|e| panic!("submit {css:?}: {e}"));
        }
    }

    /// Wait until `css` matches an element; panics after `timeout` with the
    /// URL and page source.
    pub async fn wait_for(&self, css: &str, timeout: Duration) {
        if !self.try_wait_for(css, timeout).await {
            panic!(
                "{css:?} did not appear within {timeout:?} on {}\n--- page ---\n{}",
                self.current_url().await,
                self.page_source().await
            );
        }
    }

    /// Like [`wait_for`](Self::wait_for) but says whether it appeared.
    pub async fn try_wait_for(&self, css: &str, timeout: Duration) -> bool {
        self.client()
            .wait()
            .at_most(timeout)
            .every(Duration::from_millis(50))
            .for_element(Locator::Css(css))
            .await
            .is_ok()
    }

    /// Wait until the URL (as a string) satisfies `pred`.
    pub async fn wait_for_url(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let url = self.current_url().await;
            if pred(&url) {
                return url;
            }
            if Instant::now() >= deadline {
                panic!("URL still {url} after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The rendered text of the element matched by `css`.
    pub async fn text(&self, css: &str) -> String {
        self.find(css)
            .await
            .text()
            .await
            .unwrap_or_else(|e| panic!("text of {css:?}: {e}"))
    }

    /// Run `script` in the page (`return …` to get a value).
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.client()
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("execute {script:?}: {e}"))
    }

    /// What the page's own scripts see in `document.cookie` (no HttpOnly cookies).
    pub async fn document_cookie(&self) -> String {
        match self.execute("return document.cookie", vec![]).await {
            Value::String(s) => s,
            other => panic!("document.cookie was {other}"),
        }
    }

    /// The browser's whole cookie jar (every site, HttpOnly included) as
    /// `(name, value, http_only)`.
    pub async fn cookies(&self) -> Vec<(String, String, bool)> {
        self.cookie_jar()
            .await
            .into_iter()
            .map(|c| (c.name, c.value, c.http_only))
            .collect()
    }

    /// The browser's whole cookie jar with attributes, straight from Chromium
    /// (CDP `Storage.getCookies` through chromedriver), not filtered by the
    /// current page or by HttpOnly like WebDriver's cookie commands.
    pub async fn cookie_jar(&self) -> Vec<JarCookie> {
        let resp = self
            .client()
            .issue_cmd(Cdp {
                cmd: "Storage.getCookies",
                params: json!({}),
            })
            .await
            .expect("CDP Storage.getCookies");
        let cookies = resp["cookies"]
            .as_array()
            .unwrap_or_else(|| panic!("no cookies in {resp}"));
        cookies
            .iter()
            .map(|c| {
                let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
                JarCookie {
                    name: s("name"),
                    value: s("value"),
                    domain: s("domain"),
                    path: s("path"),
                    http_only: c["httpOnly"].as_bool().unwrap_or(false),
                    secure: c["secure"].as_bool().unwrap_or(false),
                    same_site: c["sameSite"].as_str().map(str::to_string),
                }
            })
            .collect()
    }

    /// Save a PNG of the viewport to `path` (parent dirs created); returns it.
    pub async fn screenshot(&self, path: impl AsRef<Path>) -> PathBuf {
        let path = path.as_ref().to_path_buf();
        let png = self.client().screenshot().await.expect("screenshot");
        assert!(png.starts_with(b"\x89PNG"), "screenshot is not a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot dir");
        }
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// The ids of this browser's processes (chromedriver, Chromium and its
    /// helpers) that are still running.
    pub fn pids(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self
            .procs
            .strays()
            .into_iter()
            .map(|p| p.as_raw_nonzero().get())
            .collect();
        pids.sort_unstable();
        pids
    }

    /// End the session cleanly (Chromium exits), then kill what is left.
    pub async fn close(mut self) {
        if let Some(client) = self.client.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), client.close()).await;
        }
        // Drop does the rest.
    }
}

/// A raw Chrome DevTools Protocol command through chromedriver.
#[derive(Debug)]
struct Cdp {
    cmd: &'static str,
    params: Value,
}

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        let session = session_id.expect("a WebDriver session");
        base_url.join(&format!("session/{session}/goog/cdp/execute"))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        let body = json!({ "cmd": self.cmd, "params": self.params });
        (http::Method::POST, Some(body.to_string()))
    }
}

/// The chromedriver child and the temp dir everything lives in.
struct Procs {
    child: Child,
    root: TempDir,
    /// Every browser process `strays` has found. One that exits before the
    /// teardown is a zombie with no command line left to find it by, and
    /// until its parent dies it is not this process's to reap: the teardown
    /// waits for these too.
    seen: Mutex<Vec<rustix::process::Pid>>,
}

impl Procs {
    fn log_tail(&self) -> String {
        let log =
            std::fs::read_to_string(self.root.path().join("chromedriver.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Processes (other than zombies) whose command line names our temp dir.
    fn strays(&self) -> Vec<rustix::process::Pid> {
        let needle = self.root.path().as_os_str().as_encoded_bytes();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        let found: Vec<rustix::process::Pid> = dir
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|cmd| cmd.windows(needle.len()).any(|w| w == needle))
                    .unwrap_or(false)
            })
            .filter_map(rustix::process::Pid::from_raw)
            .collect();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        for pid in &found {
            if !seen.contains(pid) {
                seen.push(*pid);
            }
        }
        found
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        use rustix::process::{
            kill_process, kill_process_group, waitpgid, waitpid, Pid, Signal, WaitOptions,
        };
        let group = i32::try_from(self.child.id()).ok().and_then(Pid::from_raw);
        // Crashpad handlers run in their own sessions, outside the group:
        // they are found by our temp dir in their command line.
        let strays = self.strays();
        // Killed: the ones running now (a pid seen earlier may have been
        // reused). Waited for: every one seen.
        let mut known = self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(group) = group {
            let _ = kill_process_group(group, Signal::KILL);
        }
        for pid in &strays {
            let _ = kill_process(*pid, Signal::KILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Orphans were re-parented to this process (a child subreaper, see
        // `launch`): reap them so no zombie outlives the browser.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(group) = group {
                while let Ok(Some(_)) = waitpgid(group, WaitOptions::NOHANG) {}
            }
            // Helpers that exited on their own (after `close`) are zombies
            // with no command line left to recognise them by.
            for pid in browser_zombies() {
                let _ = waitpid(Some(pid), WaitOptions::NOHANG);
            }
            known.retain(|pid| match waitpid(Some(*pid), WaitOptions::NOHANG) {
                Ok(Some(_)) => false,
                Ok(None) => true,
                // Not our child (yet): done once it is gone. A zombie
                // whose parent is being killed is re-parented to this
                // process a moment later and reaped above; leaving on "no
                // longer running" left such zombies behind now and then.
                Err(_) => std::path::Path::new(&format!("/proc/{}", pid.as_raw_nonzero())).exists(),
            });
            for pid in self.strays() {
                let _ = kill_process(pid, Signal::KILL);
                if !known.contains(&pid) {
                    known.push(pid);
                }
            }
            if known.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                eprintln!("browser: processes left after kill: {known:?}");
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Zombie Chromium processes (not chromedriver: its `Child` reaps it)
/// re-parented to this process.
fn browser_zombies() -> Vec<rustix::process::Pid> {
    let me = rustix::process::getpid().as_raw_nonzero().get();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // "pid (comm) state ppid …"; comm may contain spaces or ')'.
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                return false;
            };
            let comm = &stat[open + 1..close];
            let mut rest = stat[close + 1..].split_whitespace();
            let (state, ppid) = (rest.next(), rest.next().and_then(|p| p.parse::<i32>().ok()));
            state == Some("Z")
                && ppid == Some(me)
                && comm.starts_with("chrom")
                && comm != "chromedriver"
        })
        .filter_map(rustix::process::Pid::from_raw)
        .collect()
}

/// Whether a process is running (exists and is not a zombie).
pub fn is_running(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
}

/// The binary named by `$env`, else `default`; panics with the install
/// command when it is missing.
pub fn binary(env: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    if !path.is_file() {
        panic!(
            "{} not found: the browser tests need Debian's Chromium and chromedriver; \
             run `apt-get install -y chromium chromium-driver` (or set {env})",
            path.display()
        );
    }
    path
}
