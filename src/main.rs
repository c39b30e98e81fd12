//! The `regate` command: parse, load the config, set up logging, run until a signal.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use regate::config::{AuditLog, Config};

#[derive(Parser)]
#[command(
    version,
    about = "Users, permissions and HTTPS in front of an unmodified registry:2"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        #[command(flatten)]
        config: ConfigPath,
    },
    /// Load and validate a config; exit non-zero with file, line and key on an error.
    /// Warnings (file, line and key too) point at rules that cannot work as written.
    Check {
        #[command(flatten)]
        config: ConfigPath,
        /// Exit non-zero on warnings too.
        #[arg(long)]
        strict: bool,
    },
    /// For an account and scopes: which ACL rule decides each scope, what it grants, and
    /// why every earlier rule did not match.
    Explain(ExplainArgs),
    /// Certificates for trusted HTTPS.
    Cert {
        #[command(subcommand)]
        command: CertCommand,
    },
    /// Print the token signing key as a JWKS document (registry v3's `auth.token.jwks`).
    Jwks {
        #[command(flatten)]
        config: ConfigPath,
        /// Write it to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Health check for images without a shell: exit 0 if URL answers 2xx.
    Probe {
        url: String,
        /// Do not verify an https certificate (for the gateway's own loopback port).
        #[arg(long)]
        insecure: bool,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 5)]
        timeout: u64,
    },
    /// Read a password on stdin and print its bcrypt hash for `users`.
    HashPassword {
        /// bcrypt cost (htpasswd -B uses 5; each step doubles the work).
        #[arg(long, default_value_t = 10)]
        cost: u32,
    },
}

/// `--config FILE`, shared by every command that reads one.
#[derive(clap::Args)]
struct ConfigPath {
    /// The config file (docker_auth's format plus regate's keys).
    #[arg(
        long = "config",
        value_name = "FILE",
        short = 'c',
        env = "REGATE_CONFIG",
        default_value = "/config/regate.yml"
    )]
    path: PathBuf,
}

#[derive(clap::Args)]
struct ExplainArgs {
    #[command(flatten)]
    config: ConfigPath,
    /// The account asking; "" for anonymous.
    #[arg(long)]
    account: String,
    /// Read the account's password on stdin and say whether it is right.
    #[arg(long)]
    password_stdin: bool,
    /// The client address, for rules with `ip`.
    #[arg(long)]
    ip: Option<std::net::IpAddr>,
    /// A label KEY=VALUE (repeat for several); replaces the user's labels from `users`.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Docker scopes, e.g. repository:alice/app:pull,push or registry:catalog:*.
    #[arg(required = true, value_name = "SCOPE")]
    scopes: Vec<String>,
}

#[derive(Subcommand)]
enum CertCommand {
    /// Make a private CA, a server certificate signed by it, and the token signing pair,
    /// and print where each goes.
    Init {
        /// A DNS name or IP address clients use to reach regate (repeat for several).
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
        /// The folder to write into.
        #[arg(long, default_value = "certs")]
        out: PathBuf,
        /// Replace files that exist already.
        #[arg(long)]
        force: bool,
        /// How many days the server certificate is valid.
        #[arg(long, default_value_t = 825)]
        days: i64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => serve(config.path),
        Command::Check { config, strict } => check(config.path, strict),
        Command::Explain(args) => explain(args),
        Command::HashPassword { cost } => hash_password(cost),
        Command::Jwks { config, out } => jwks(config.path, out),
        Command::Probe {
            url,
            insecure,
            timeout,
        } => probe(&url, insecure, timeout),
        Command::Cert {
            command:
                CertCommand::Init {
                    hosts,
                    out,
                    force,
                    days,
                },
        } => cert_init(regate::certs::Options {
            hosts,
            out,
            force,
            days,
        }),
    }
}

/// Logs go to stderr as text (`REGATE_LOG` filters them, e.g. `info,regate::access=off`);
/// audit lines go, as JSON, where the config says.
fn init_tracing(audit: &AuditLog) -> Result<(), String> {
    use tracing_subscriber::filter::{filter_fn, EnvFilter, FilterExt};
    use tracing_subscriber::prelude::*;

    const AUDIT: &str = "regate::audit";
    let env = EnvFilter::try_from_env("REGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(env.and(filter_fn(|m| m.target() != AUDIT)));
    let only_audit = || filter_fn(|m| m.target() == AUDIT);
    let json = || tracing_subscriber::fmt::layer().json().flatten_event(true);
    let audit_layer = match audit {
        AuditLog::Off => None,
        AuditLog::Stdout => Some(
            json()
                .with_writer(std::io::stdout)
                .with_filter(only_audit())
                .boxed(),
        ),
        AuditLog::Stderr => Some(
            json()
                .with_writer(std::io::stderr)
                .with_filter(only_audit())
                .boxed(),
        ),
        AuditLog::File(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("audit log {}: {e}", path.display()))?;
            Some(
                json()
                    .with_writer(std::sync::Mutex::new(file))
                    .with_filter(only_audit())
                    .boxed(),
            )
        }
    };
    tracing_subscriber::registry()
        .with(logs)
        .with(audit_layer)
        .init();
    Ok(())
}

fn serve(path: PathBuf) -> ExitCode {
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = init_tracing(&config.audit_log) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    for w in &config.warnings {
        tracing::warn!("{}: {w}", path.display());
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve_until_signal(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Serves; SIGHUP reloads the config, SIGINT or SIGTERM stop gracefully.
async fn serve_until_signal(config: Config) -> Result<(), regate::Error> {
    let server = regate::start(config).await?;
    let stop = shutdown_signal();
    tokio::pin!(stop);
    let mut stopped = false;
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut hup) = signal(SignalKind::hangup()) {
            loop {
                tokio::select! {
                    _ = hup.recv() => {
                        tracing::info!("SIGHUP: reloading the configuration");
                        server.request_reload();
                    }
                    _ = &mut stop => {
                        stopped = true;
                        break;
                    }
                }
            }
        }
    }
    if !stopped {
        stop.await;
    }
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn check(path: PathBuf, strict: bool) -> ExitCode {
    let (config, lints) = match regate::lint::load_and_lint(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    for w in &config.warnings {
        eprintln!("warning: {}: {w}", path.display());
    }
    for w in &lints {
        eprintln!("warning: {w}");
    }
    let warnings = config.warnings.len() + lints.len();
    // Key and certificate files are part of a config that works: read them too.
    if let Some(tls) = &config.tls {
        if let Err(e) = regate::tls::load_certified_key(tls) {
            eprintln!("error: server TLS: {e}");
            return ExitCode::FAILURE;
        }
    }
    // The directory's own files (bind password, CA) are read as serve reads them; the
    // directory itself is not contacted.
    if let Some(ldap) = &config.ldap {
        if let Err(e) = regate::auth::ldap::Directory::new(ldap.clone(), Default::default()) {
            eprintln!("error: ldap_auth: {e}");
            return ExitCode::FAILURE;
        }
    }
    if let Some(ca) = &config.upstream_ca {
        if let Err(e) = regate::tls::client_config(Some(ca)) {
            eprintln!("error: upstream: {e}");
            return ExitCode::FAILURE;
        }
    }
    match &config.token.key {
        Some(files) => {
            if let Err(e) = regate::auth::keys::SigningKey::load(&files.certificate, &files.key) {
                eprintln!("error: token key: {e}");
                return ExitCode::FAILURE;
            }
        }
        None => println!(
            "token key: none configured; `serve` uses (or generates) {}",
            config.data_dir.join("token.crt").display()
        ),
    }
    let mut robots: Vec<_> = config
        .users
        .iter()
        .filter_map(|(name, u)| u.robot.as_ref().map(|r| (name, r)))
        .collect();
    robots.sort_by_key(|(name, _)| *name);
    for (name, robot) in robots {
        let expires = match robot.expires {
            Some(t) => {
                let state = if robot.expired_at(std::time::SystemTime::now()) {
                    " (EXPIRED)"
                } else {
                    ""
                };
                let t: time::OffsetDateTime = t.into();
                format!("expires {}{state}", t.date())
            }
            None => "never expires".to_owned(),
        };
        println!("robot {name}: {} rule(s), {expires}", robot.acl.len());
    }
    if strict && warnings > 0 {
        eprintln!(
            "error: {}: {warnings} warning(s), which --strict makes errors",
            path.display()
        );
        return ExitCode::FAILURE;
    }
    println!(
        "{}: ok ({} users, {} ACL rules, upstream {}, {warnings} warning(s))",
        path.display(),
        config.users.len(),
        config.acl.len(),
        config.upstream
    );
    ExitCode::SUCCESS
}

fn explain(args: ExplainArgs) -> ExitCode {
    let config = match Config::load(&args.config.path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut scopes = Vec::new();
    for s in &args.scopes {
        match regate::auth::scope::Scope::parse_list(s) {
            Ok(list) => scopes.extend(list),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let labels = if args.labels.is_empty() {
        None
    } else {
        match regate::explain::parse_labels(&args.labels) {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    let password = if args.password_stdin {
        match password_from_stdin() {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let report = regate::explain::explain(
        &config,
        &regate::explain::Input {
            account: &args.account,
            password: password.as_ref(),
            ip: args.ip,
            labels: labels.as_ref(),
            scopes: &scopes,
        },
    );
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", report.to_text());
    }
    ExitCode::SUCCESS
}

/// A password typed or piped on stdin; one trailing newline is the terminal's, not the
/// password's.
fn password_from_stdin() -> Result<regate::auth::Secret, String> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| format!("reading stdin: {e}"))?;
    let password = input.strip_suffix('\n').unwrap_or(&input);
    let password = password.strip_suffix('\r').unwrap_or(password);
    Ok(regate::auth::Secret::new(password))
}

fn hash_password(cost: u32) -> ExitCode {
    let password = match password_from_stdin() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let password = password.expose();
    if password.is_empty() {
        eprintln!("error: empty password");
        return ExitCode::FAILURE;
    }
    match bcrypt::hash(password, cost) {
        Ok(h) => {
            println!("{h}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn cert_init(opts: regate::certs::Options) -> ExitCode {
    match regate::certs::init(&opts) {
        Ok(()) => {
            print!("{}", regate::certs::instructions(&opts));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn probe(url: &str, insecure: bool, timeout: u64) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let timeout = std::time::Duration::from_secs(timeout);
    match runtime.block_on(regate::probe::probe(url, insecure, timeout)) {
        Ok(status) if (200..300).contains(&status) => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("{url}: {status}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{url}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn jwks(path: PathBuf, out: Option<PathBuf>) -> ExitCode {
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let key = match regate::signing_key(&config) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: token key: {e}");
            return ExitCode::FAILURE;
        }
    };
    let text = format!("{:#}\n", key.jwks());
    match out {
        Some(file) => match std::fs::write(&file, text) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {}: {e}", file.display());
                ExitCode::FAILURE
            }
        },
        None => {
            print!("{text}");
            ExitCode::SUCCESS
        }
    }
}
