//! The `gatehouse` command: argument parsing, logging, signals, exit codes.
//! No policy lives here; everything is in the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use gatehouse::config::validate::{self, ConfigError, Settings};
use gatehouse::demo::{Dashboard, DashboardOptions};
use gatehouse::{Gateway, Handle};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Many small short-lived allocations per request (headers, session
/// records): with glibc's allocator, malloc and free were near 10 % of the
/// gateway's CPU under load (perf, commit 810a251). With the feature
/// `heap-stats` the library's counting allocator (`gatehouse::HEAP`) takes
/// its place.
#[cfg(not(feature = "heap-stats"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use tokio::signal::unix::{signal, SignalKind};

#[derive(Parser)]
#[command(
    name = "gatehouse",
    version,
    about = "Access gateway for web dashboards: IP/country allow-lists, two-factor and session policy"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway with a configuration file.
    Run {
        #[arg(long, short, default_value = "/etc/gatehouse/gatehouse.toml")]
        config: PathBuf,
    },
    /// Run a built-in sample PBX dashboard behind the gateway (self-signed
    /// certificate, embedded store in a temporary directory).
    Demo {
        /// Address of the gateway's TLS listener.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        /// Size of the large demo recording, in MiB.
        #[arg(long, default_value_t = 1024)]
        big_recording_mib: u64,
    },
    /// Check a configuration file: prints "ok" or every problem with its key.
    CheckConfig {
        file: PathBuf,
        /// Also say, per access area, whether this client address would be
        /// let in (and warn when the admin console would refuse it).
        #[arg(long)]
        client_ip: Option<std::net::IpAddr>,
    },
    /// Fetch a dashboard's login page and print a commented [login] section
    /// for the configuration (exit 1: not a form login; 2: could not probe).
    LoginProbe {
        /// The dashboard's login page, or a page that redirects to it
        /// (e.g. https://pbx.example.com/). Redirects are followed within
        /// its origin only.
        url: String,
        /// PEM file of the CA(s) that sign the dashboard's certificate, for a
        /// private CA (default: the system's trusted roots).
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Longest wait to connect and for each request, e.g. "10s".
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Manage sessions and users directly in the configured store (for
    /// automation, and for recovery when nobody can sign in).
    Admin {
        #[arg(long, short, default_value = "/etc/gatehouse/gatehouse.toml")]
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Sessions: list, or revoke one by its reference.
    Sessions {
        #[command(subcommand)]
        command: SessionsCommand,
    },
    /// Log out all users at once.
    LogoutAll,
    /// Log one user out everywhere.
    Logout { user: String },
    /// Users gatehouse has seen.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Lift a lockout now.
    Unlock { user: String },
    /// Two-factor for one user.
    #[command(name = "2fa")]
    TwoFactor {
        #[command(subcommand)]
        command: TwoFactorCommand,
    },
    /// Security incidents (sign-ins from several countries).
    Incidents {
        #[command(subcommand)]
        command: IncidentsCommand,
    },
    /// Addresses and networks marked safe per email domain.
    Trusted {
        #[command(subcommand)]
        command: TrustedCommand,
    },
    /// A user's last sign-in attempts, newest first.
    History {
        user: String,
        #[arg(long, default_value_t = 20)]
        count: usize,
    },
}

#[derive(Subcommand)]
enum IncidentsCommand {
    List {
        /// Closed ones too.
        #[arg(long)]
        all: bool,
    },
    Show {
        id: String,
    },
    Close {
        id: String,
        #[arg(long)]
        note: String,
    },
}

#[derive(Subcommand)]
enum TrustedCommand {
    /// Entries matching a search text (address, network, description, domain).
    List {
        #[arg(default_value = "")]
        search: String,
    },
    /// Mark an address, or its network (--prefix 22..31 for IPv4, 48..127 for IPv6), safe.
    Add {
        domain: String,
        ip: String,
        #[arg(long)]
        prefix: Option<u8>,
        #[arg(long)]
        description: String,
    },
    Remove {
        domain: String,
        network: String,
    },
}

#[derive(Subcommand)]
enum SessionsCommand {
    List {
        #[arg(long)]
        user: Option<String>,
        /// Only sessions of this client class: web, mobile, desktop or service.
        #[arg(long)]
        class: Option<String>,
    },
    Revoke {
        reference: String,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    List,
    Show { user: String },
}

#[derive(Subcommand)]
enum TwoFactorCommand {
    /// Require 2FA for the user whatever the policy says.
    Require { user: String },
    /// Remove the user's authenticator (they may sign in without, where policy allows).
    Disable { user: String },
    /// New key at the next sign-in; all the user's sessions end now.
    Reset { user: String },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run { config } => match validate::load_file(&config) {
            Ok(settings) => on_runtime(async { exit(run(settings).await) }),
            Err(e) => {
                eprintln!("gatehouse: {e}");
                ExitCode::from(1)
            }
        },
        Command::CheckConfig { file, client_ip } => {
            on_runtime(async { check_config(&file, client_ip) })
        }
        Command::Admin {
            config,
            json,
            command,
        } => match validate::load_file(&config) {
            Ok(settings) => on_runtime(async { exit(admin(settings, json, command).await) }),
            Err(e) => {
                eprintln!("gatehouse: {e}");
                ExitCode::from(1)
            }
        },
        Command::Demo {
            listen,
            big_recording_mib,
        } => on_runtime(async { exit(demo(listen, big_recording_mib).await) }),
        Command::LoginProbe {
            url,
            ca_file,
            timeout,
        } => on_runtime(login_probe(&url, ca_file, timeout)),
    }
}

/// Runs `main` on tokio's single-threaded runtime. A gateway serves its
/// connections on `server.worker_threads` such runtimes, one per thread
/// (`listener::workers`); this one is the first of them and also runs the
/// gateway's background work. The work-stealing runtime cost about 15 %
/// more CPU per proxied request in `bench/run` with one worker, where it
/// still hands every wake-up through its shared queues.
fn on_runtime(main: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(main),
        Err(e) => {
            eprintln!("gatehouse: cannot start the runtime: {e}");
            ExitCode::from(2)
        }
    }
}

fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gatehouse: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn check_config(file: &Path, client_ip: Option<std::net::IpAddr>) -> ExitCode {
    match validate::load_file(file) {
        Ok(settings) => {
            println!("ok");
            print_area_rules(&settings);
            if let Some(ip) = client_ip {
                explain_access(&settings, ip);
            }
            ExitCode::SUCCESS
        }
        Err(ConfigError::Invalid(issues)) => {
            for issue in &issues {
                eprintln!("{issue}");
            }
            eprintln!("{} problem(s) in {}", issues.len(), file.display());
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

/// Print the guessed `[login]` section on stdout; on failure the reason on
/// stderr (and, for a page that is no form login, advice as TOML comments).
async fn login_probe(
    url: &str,
    ca_file: Option<PathBuf>,
    timeout: std::time::Duration,
) -> ExitCode {
    let options = gatehouse::login_probe::ProbeOptions {
        ca_file,
        timeout,
        ..Default::default()
    };
    match gatehouse::login_probe::probe(url, &options).await {
        Ok(guess) => {
            print!("{}", guess.to_toml());
            ExitCode::SUCCESS
        }
        Err(e) => {
            if let Some(advice) = e.advice() {
                print!("{advice}");
            }
            eprintln!("gatehouse: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn init_logging(settings: &Settings) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&settings.logging.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal: escape codes in the journal
    // or a log file are noise, and a log reader must never interpret bytes
    // that came from a request.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    let _ = if settings.logging.format == "json" {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    init_logging(&settings);
    gatehouse::audit::open_file(settings.audit_file.as_deref()).context("audit.file")?;
    let drain = settings.server.drain_timeout;
    let handle = Gateway::new(settings)
        .start()
        .await
        .context("cannot start")?;
    for addr in handle.addrs() {
        tracing::info!(%addr, "listening (TLS)");
    }
    if let Some(addr) = handle.metrics_addr() {
        tracing::info!(%addr, "metrics listening");
    }
    serve_until_signal(handle, drain).await
}

/// Systemd readiness, SIGHUP reloads, SIGTERM/SIGINT drain.
async fn serve_until_signal(handle: Handle, drain: std::time::Duration) -> anyhow::Result<()> {
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    loop {
        tokio::select! {
            _ = hup.recv() => reload(&handle),
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    tracing::info!("draining connections");
    if !handle.shutdown(drain).await {
        tracing::warn!("drain timeout reached with connections still open");
    }
    tracing::info!("stopped");
    Ok(())
}

fn reload(handle: &Handle) {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
    let Some(path) = handle.settings().source.clone() else {
        tracing::info!("SIGHUP ignored: configuration was not loaded from a file");
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        return;
    };
    match validate::load_file(&path)
        .map_err(|e| e.to_string())
        .and_then(|s| handle.reload(s).map_err(|e| e.to_string()))
    {
        Ok(()) => tracing::info!(config = %path.display(), "configuration reloaded"),
        Err(e) => {
            tracing::error!(config = %path.display(), error = %e, "reload refused; keeping the running configuration")
        }
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
}

const DEMO_TOML: &str = include_str!("../config/demo.toml");

async fn demo(listen: SocketAddr, big_recording_mib: u64) -> anyhow::Result<()> {
    let dashboard = Dashboard::start(
        "127.0.0.1:0".parse()?,
        DashboardOptions {
            big_recording_bytes: big_recording_mib * 1024 * 1024,
        },
    )
    .await
    .context("cannot start the demo dashboard")?;
    let state = tempfile::Builder::new()
        .prefix("gatehouse-demo-")
        .tempdir()?;
    let (pem, fingerprint) = gatehouse::tls::self_signed(&["localhost", "127.0.0.1"])?;
    std::fs::write(state.path().join("cert.pem"), &pem.cert)?;
    std::fs::write(state.path().join("key.pem"), &pem.key)?;
    let toml = DEMO_TOML
        .replace("@LISTEN@", &listen.to_string())
        .replace("@UPSTREAM@", &dashboard.url());
    let settings =
        validate::load_str(&toml, Some(state.path())).map_err(|e| anyhow::anyhow!("{e}"))?;
    init_logging(&settings);
    let drain = settings.server.drain_timeout;
    let handle = Gateway::new(settings)
        .start()
        .await
        .context("cannot start")?;
    let url = format!("https://{}", handle.addr());
    println!("gatehouse demo is running");
    println!("  open:        {url}/login");
    println!("  certificate: self-signed, SHA-256 {fingerprint}");
    for (user, pass) in gatehouse::demo::USERS {
        println!("  sign in as:  {user} / {pass}");
    }
    println!("  state:       {}", state.path().display());
    if let Some(m) = handle.metrics_addr() {
        println!("  metrics:     http://{m}/metrics");
    }
    println!("  stop with Ctrl-C");
    serve_until_signal(handle, drain).await
}

async fn admin(settings: Settings, json: bool, command: AdminCommand) -> anyhow::Result<()> {
    use gatehouse::admin::Admin;
    // Admin actions from the CLI are audited like the console's.
    gatehouse::audit::open_file(settings.audit_file.as_deref()).context("audit.file")?;
    let admin_settings = std::sync::Arc::new(settings);
    let admin = Admin::open(admin_settings.clone()).await?;
    let actor = format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    );
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let print = |value: serde_json::Value, table: String| {
        if json {
            println!("{value}");
        } else {
            print!("{table}");
        }
    };
    match command {
        AdminCommand::Sessions {
            command: SessionsCommand::List { user, class },
        } => {
            let list = admin.sessions(user.as_deref(), class.as_deref()).await?;
            let mut table = format!(
                "{:<14} {:<32} {:<12} {:<8} {:<16} {}\n",
                "REFERENCE", "USER", "STATE", "CLASS", "CLIENT", "SINCE"
            );
            for s in &list {
                table.push_str(&format!(
                    "{:<14} {:<32} {:<12} {:<8} {:<16} {}\n",
                    s.reference,
                    if s.service_account {
                        format!("{} (service)", s.user)
                    } else {
                        s.user.clone()
                    },
                    s.state,
                    s.class,
                    s.client_ip,
                    format_ms(s.created_ms)
                ));
            }
            print(serde_json::to_value(&list)?, table);
        }
        AdminCommand::Sessions {
            command: SessionsCommand::Revoke { reference },
        } => {
            admin.revoke(&reference, &actor).await?;
            print(
                serde_json::json!({"revoked": reference}),
                format!("revoked {reference}\n"),
            );
        }
        AdminCommand::LogoutAll => {
            admin.logout_all(now_ms, &actor).await?;
            print(
                serde_json::json!({"logout_all": true}),
                "all users logged out\n".into(),
            );
        }
        AdminCommand::Logout { user } => {
            let n = admin.logout_user(&user, &actor).await?;
            print(
                serde_json::json!({"user": user, "sessions_ended": n}),
                format!("{n} session(s) of {user} ended\n"),
            );
        }
        AdminCommand::User {
            command: UserCommand::List,
        } => {
            let users = admin.users().await?;
            let mut table = format!(
                "{:<32} {:<8} {:<10} {:<7} {:<9} {}\n",
                "USER", "2FA", "MODE", "LOCKED", "SESSIONS", "LAST SIGN-IN"
            );
            for u in &users {
                table.push_str(&format!(
                    "{:<32} {:<8} {:<10} {:<7} {:<9} {}\n",
                    u.user,
                    if u.two_factor_enrolled { "on" } else { "off" },
                    u.two_factor_mode,
                    if u.locked { "yes" } else { "no" },
                    u.active_sessions,
                    format_ms(u.last_sign_in_ms)
                ));
            }
            print(serde_json::to_value(&users)?, table);
        }
        AdminCommand::User {
            command: UserCommand::Show { user },
        } => {
            let u = admin.user(&user).await?;
            let table = format!(
                "user:            {}\n2fa enrolled:    {}\n2fa mode:        {}\nrequired:        {}\nlocked:          {}\nactive sessions: {}\nfirst seen:      {}\nlast sign-in:    {}\n",
                u.user, u.two_factor_enrolled, u.two_factor_mode, u.two_factor_required_by_admin, u.locked,
                u.active_sessions, format_ms(u.first_seen_ms), format_ms(u.last_sign_in_ms)
            );
            print(serde_json::to_value(&u)?, table);
        }
        AdminCommand::Unlock { user } => {
            admin.unlock(&user, &actor).await?;
            print(
                serde_json::json!({"unlocked": user}),
                format!("{user} unlocked\n"),
            );
        }
        AdminCommand::Incidents { command } => {
            let inc = gatehouse::incidents::Incidents::new(
                admin.store.clone(),
                admin_settings.incidents.clone(),
            );
            match command {
                IncidentsCommand::List { all } => {
                    let list = inc.list(all).await?;
                    let mut table = format!(
                        "{:<18} {:<32} {:<6} {:<20} {}\n",
                        "ID", "USER", "OPEN", "COUNTRIES", "LAST"
                    );
                    for i in &list {
                        let countries: Vec<String> = i
                            .finding
                            .countries
                            .iter()
                            .map(|(c, n)| format!("{c}:{n}"))
                            .collect();
                        table.push_str(&format!(
                            "{:<18} {:<32} {:<6} {:<20} {}\n",
                            i.id,
                            i.user,
                            i.open,
                            countries.join(","),
                            format_ms(i.updated_ms)
                        ));
                    }
                    print(serde_json::to_value(&list)?, table);
                }
                IncidentsCommand::Show { id } => {
                    let i = inc.get(&id).await?;
                    print(
                        serde_json::to_value(&i)?,
                        format!("{}\n", serde_json::to_string_pretty(&i)?),
                    );
                }
                IncidentsCommand::Close { id, note } => {
                    inc.close(&id, &note, &actor).await?;
                    print(
                        serde_json::json!({"closed": id}),
                        format!("incident {id} closed\n"),
                    );
                }
            }
        }
        AdminCommand::Trusted { command } => {
            let inc = gatehouse::incidents::Incidents::new(
                admin.store.clone(),
                admin_settings.incidents.clone(),
            );
            match command {
                TrustedCommand::List { search } => {
                    let found = inc.search_safe(&search).await?;
                    let mut table =
                        format!("{:<24} {:<22} {}\n", "DOMAIN", "NETWORK", "DESCRIPTION");
                    for (d, e) in &found {
                        table.push_str(&format!("{:<24} {:<22} {}\n", d, e.network, e.description));
                    }
                    let json: Vec<_> = found
                        .iter()
                        .map(|(d, e)| serde_json::json!({"domain": d, "entry": e}))
                        .collect();
                    print(serde_json::Value::Array(json), table);
                }
                TrustedCommand::Add {
                    domain,
                    ip,
                    prefix,
                    description,
                } => {
                    let e = inc
                        .mark_safe(&domain, &ip, prefix, &description, &actor, now_ms)
                        .await?;
                    print(
                        serde_json::to_value(&e)?,
                        format!("{} marked safe for {domain}\n", e.network),
                    );
                }
                TrustedCommand::Remove { domain, network } => {
                    let removed = inc.remove_safe(&domain, &network, &actor).await?;
                    print(
                        serde_json::json!({"removed": removed}),
                        format!("removed: {removed}\n"),
                    );
                }
            }
        }
        AdminCommand::History { user, count } => {
            let inc = gatehouse::incidents::Incidents::new(
                admin.store.clone(),
                admin_settings.incidents.clone(),
            );
            let h = inc.history(&user.trim().to_lowercase(), count).await?;
            let mut table = format!(
                "{:<26} {:<16} {:<8} {}\n",
                "WHEN", "ADDRESS", "COUNTRY", "RESULT"
            );
            for r in &h {
                table.push_str(&format!(
                    "{:<26} {:<16} {:<8} {}\n",
                    format_ms(r.ts_ms),
                    r.ip,
                    r.country,
                    r.result.as_str()
                ));
            }
            print(serde_json::to_value(&h)?, table);
        }
        AdminCommand::TwoFactor { command } => {
            let (what, user) = match command {
                TwoFactorCommand::Require { user } => {
                    admin.require_two_factor(&user, true, &actor).await?;
                    ("required", user)
                }
                TwoFactorCommand::Disable { user } => {
                    admin.remove_two_factor(&user, false, &actor).await?;
                    ("disabled", user)
                }
                TwoFactorCommand::Reset { user } => {
                    admin.remove_two_factor(&user, true, &actor).await?;
                    ("reset", user)
                }
            };
            print(
                serde_json::json!({"user": user, "two_factor": what}),
                format!("2fa {what} for {user}\n"),
            );
        }
    }
    Ok(())
}

fn format_ms(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    time::OffsetDateTime::from_unix_timestamp((ms / 1000) as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "-".into())
}

/// Per area: what a request needs and the second-factor rule in force there
/// (area overrides can only be set in the file, so this is where to see them).
fn print_area_rules(settings: &Settings) {
    for area in settings.access.areas() {
        println!(
            "area {:<16} auth {:<17} 2fa {}",
            area.name,
            area.auth.as_str(),
            settings.two_factor.describe_area(area.two_factor)
        );
    }
    for a in &settings.service_accounts.0 {
        println!(
            "service account {} from {} address entr(y/ies) only",
            a.name,
            a.allow.len()
        );
    }
}

/// Per area: would `ip` be let in? Warn loudly when the admin console's area
/// would refuse it (the operator is about to lock themselves out).
fn explain_access(settings: &Settings, ip: std::net::IpAddr) {
    use gatehouse::access::{decide, ClientFacts, Decision};
    let country = settings.geo.lookup(ip);
    println!(
        "client {ip}: country {}",
        country.map_or("unknown".to_string(), |c| c.to_string())
    );
    let admin_path = gatehouse::access::normalise(&settings.admin_path).ok();
    let admin_area = admin_path
        .as_ref()
        .map(|p| settings.access.area_for("", p).name.clone());
    for area in settings.access.areas() {
        let verdict = match decide(area, &ClientFacts { ip, country }) {
            Decision::Allow => "admitted".to_string(),
            Decision::Deny(reason) => format!("REFUSED ({reason})"),
        };
        println!(
            "  area {:<16} {:<28} {verdict}",
            area.name,
            format!("\"{}\"", area.title)
        );
        if Some(&area.name) == admin_area.as_ref() && verdict != "admitted" {
            eprintln!(
                "warning: the admin console ({}) is in area \"{}\", which refuses {ip}: you would lock yourself out of it",
                settings.admin_path, area.name
            );
        }
    }
}
