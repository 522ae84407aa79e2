//! The real dashboards, unmodified, each a child process on a loopback port:
//! Django's admin site (server-rendered, login form with a CSRF token) and
//! JupyterLab (a single-page app on a JSON API and websockets). Installed
//! from PyPI by `install.sh` into one venv; killed with their children on drop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tempfile::TempDir;

use crate::support::process::free_port;

pub const DJANGO_USER: &str = "alice";
pub const DJANGO_PASSWORD: &str = "Alice-pass-1";
pub const JUPYTER_PASSWORD: &str = "Jupyter-pass-1";

/// How long an app may take to answer its first request.
const START_TIMEOUT: Duration = Duration::from_secs(90);

fn here() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/real_apps")
}

/// The venv with the pinned apps, installed once per test process. A failed
/// install fails the test with what to do: it never skips.
pub fn venv() -> &'static Path {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/real-apps/venv");
        let out = Command::new("bash")
            .arg(here().join("install.sh"))
            .arg(&venv)
            .output()
            .unwrap_or_else(|e| panic!("cannot run tests/real_apps/install.sh: {e}"));
        assert!(
            out.status.success(),
            "tests/real_apps/install.sh failed (it needs python3 with venv and PyPI):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        venv
    })
}

/// A running app; its whole process group is stopped on drop.
pub struct App {
    pub port: u16,
    child: Child,
    log: PathBuf,
    _dir: TempDir,
}

impl App {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn spawn(mut cmd: Command, port: u16, dir: TempDir, ready_path: &str) -> App {
        let log = dir.path().join("app.log");
        let out = std::fs::File::create(&log).expect("app log");
        let err = out.try_clone().expect("app log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let mut app = App {
            port,
            child,
            log,
            _dir: dir,
        };
        app.wait_ready(ready_path);
        app
    }

    /// Until the app answers `path` with its own status (not "starting").
    fn wait_ready(&mut self, path: &str) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("app exited ({status}) before it answered:\n{}", self.log());
            }
            if let Some(status) = http_status(self.port, path) {
                if status < 500 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "app did not answer GET {path} within {START_TIMEOUT:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let group = rustix::process::Pid::from_raw(self.child.id() as i32);
        // SIGTERM first: Jupyter shuts its kernels down (they run in
        // sessions of their own), then whatever is left is killed.
        if let Some(g) = group {
            let _ = rustix::process::kill_process_group(g, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(g) = group {
            let _ = rustix::process::kill_process_group(g, rustix::process::Signal::KILL);
        }
        let _ = self.child.wait();
    }
}

/// The status of a plain GET, or None when nothing answers yet.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 64];
    let n = s.read(&mut head).ok()?;
    let line = std::str::from_utf8(&head[..n]).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Django's own admin site with one superuser, `alice`.
pub fn django_admin() -> App {
    let venv = venv();
    let dir = tempfile::Builder::new()
        .prefix("gatehouse-django-")
        .tempdir()
        .expect("temp dir");
    let python = venv.join("bin/python");
    let django = |args: &[&str]| {
        let mut c = Command::new(&python);
        c.args(["-m", "django"])
            .args(args)
            .env("PYTHONPATH", here().join("django"))
            .env("DJANGO_SETTINGS_MODULE", "gatehouse_site.settings")
            .env("GATEHOUSE_TEST_APP_DIR", dir.path())
            .current_dir(dir.path());
        c
    };
    run(&mut django(&["migrate", "--noinput"]), "django migrate");
    run(
        django(&[
            "createsuperuser",
            "--noinput",
            "--username",
            DJANGO_USER,
            "--email",
            "alice@example.com",
        ])
        .env("DJANGO_SUPERUSER_PASSWORD", DJANGO_PASSWORD),
        "django createsuperuser",
    );
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    // runserver: Django's own server; --insecure serves the admin's static
    // files with DEBUG off (what a proxy's static location would do).
    let cmd = django(&["runserver", &addr, "--noreload", "--insecure"]);
    App::spawn(cmd, port, dir, "/admin/login/")
}

/// JupyterLab with a password (no token), on its own config and data dirs.
pub fn jupyterlab() -> App {
    jupyterlab_under("/")
}

/// JupyterLab serving everything under `base_url` (e.g. "/jupyter/").
pub fn jupyterlab_under(base_url: &str) -> App {
    let venv = venv();
    let dir = tempfile::Builder::new()
        .prefix("gatehouse-jupyter-")
        .tempdir()
        .expect("temp dir");
    let out = Command::new(venv.join("bin/python"))
        .args([
            "-c",
            "import sys; from jupyter_server.auth import passwd; print(passwd(sys.argv[1]))",
            JUPYTER_PASSWORD,
        ])
        .output()
        .expect("hash the Jupyter password");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hashed = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let port = free_port();
    let home = dir.path();
    let mut cmd = Command::new(venv.join("bin/jupyter-lab"));
    cmd.args([
        "--allow-root",
        "--no-browser",
        "--ip=127.0.0.1",
        &format!("--port={port}"),
        "--port-retries=0",
        &format!("--ServerApp.root_dir={}", home.display()),
        &format!("--PasswordIdentityProvider.hashed_password={hashed}"),
        "--IdentityProvider.token=",
        &format!("--ServerApp.base_url={base_url}"),
        // Behind a TLS-terminating proxy: believe its X-Forwarded-Proto/-For.
        "--ServerApp.trust_xheaders=True",
        // No calls home from a test machine.
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ])
    .env("HOME", home)
    .env("JUPYTER_CONFIG_DIR", home.join("config"))
    .env("JUPYTER_DATA_DIR", home.join("data"))
    .env("JUPYTER_RUNTIME_DIR", home.join("runtime"))
    .env("IPYTHONDIR", home.join("ipython"))
    .current_dir(home);
    App::spawn(cmd, port, dir, &format!("{base_url}login"))
}
