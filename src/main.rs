//! The `regate` command: parse, load the config, set up logging, run until a signal.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use regate::config::{AuditLog, Config, ConfigError};
use regate::ops::accounts::{self, AclCommand, UserCommand};
use regate::ops::{certs, explain};

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
    /// Refuse refresh tokens (docker login's identity tokens) on every replica sharing
    /// `shared_state`: all of an account's, or one given on stdin.
    RevokeRefresh {
        #[command(flatten)]
        config: ConfigPath,
        /// Every refresh token this account holds now.
        #[arg(
            long,
            required_unless_present = "token_stdin",
            conflicts_with = "token_stdin"
        )]
        account: Option<String>,
        /// Read one refresh token on stdin and revoke it alone.
        #[arg(long)]
        token_stdin: bool,
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
    /// Accounts in the `xorm_auth` database (`xorm_user`): add, change, remove, list.
    /// Passwords are read twice without echo on a terminal, else from stdin.
    User {
        #[command(flatten)]
        config: ConfigPath,
        #[command(subcommand)]
        command: UserArgs,
    },
    /// Rules in the `acl_xorm` database (`xorm_acl_entry`), by their `seq`.
    Acl {
        #[command(flatten)]
        config: ConfigPath,
        #[command(subcommand)]
        command: AclArgs,
    },
    /// Read a password (twice, without echo, on a terminal; else from stdin) and print its
    /// bcrypt hash for `users`.
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
        global = true,
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
enum UserArgs {
    /// Add an account; its password from a prompt or stdin.
    Add {
        name: String,
        /// A label KEY=VALUE (repeat for several values or labels).
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
    },
    /// Change an account's password (from a prompt or stdin).
    Passwd { name: String },
    /// Remove an account (every row of its name).
    Del { name: String },
    /// List the accounts and their labels.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Set labels: each KEY given gets exactly the values given for it.
    Label {
        name: String,
        /// KEY=VALUE (repeat a KEY for several values).
        #[arg(value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Remove a label.
        #[arg(long, value_name = "KEY")]
        remove: Vec<String>,
    },
}

#[derive(Subcommand)]
enum AclArgs {
    /// List the rules in order, with their seq.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Add a rule (at the end, or --before/--after a seq).
    Add {
        #[arg(long)]
        account: Option<String>,
        #[arg(long = "type")]
        type_: Option<String>,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        service: Option<String>,
        #[arg(long)]
        ip: Option<String>,
        /// A label condition KEY=PATTERN (repeat for several).
        #[arg(long = "label", value_name = "KEY=PATTERN")]
        labels: Vec<String>,
        /// What it grants, comma-separated (`pull,push`, `*`); empty: an explicit deny.
        #[arg(long, default_value = "")]
        actions: String,
        #[arg(long)]
        comment: Option<String>,
        #[arg(long, value_name = "SEQ")]
        before: Option<i64>,
        #[arg(long, value_name = "SEQ")]
        after: Option<i64>,
    },
    /// Remove the rule with this seq.
    Del { seq: i64 },
    /// Move the rule with this seq before or after another.
    Move {
        seq: i64,
        #[arg(long, value_name = "SEQ")]
        before: Option<i64>,
        #[arg(long, value_name = "SEQ")]
        after: Option<i64>,
    },
    /// Number every rule 10, 20, 30, ... in its current order.
    Renumber,
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
        /// The port regate will serve HTTPS on (for the printed steps).
        #[arg(long, default_value_t = 443)]
        port: u16,
    },
    /// A new server certificate from the CA `init` made, for the same names (or those
    /// given); clients that trust the CA keep trusting regate, which picks the new pair up
    /// without a restart.
    Renew {
        /// The folder `init` wrote (ca.crt, ca.key, server.crt).
        #[arg(long, default_value = "certs")]
        out: PathBuf,
        /// The names, if they change (repeat for several); default: the current ones.
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// How many days the new certificate is valid.
        #[arg(long, default_value_t = 825)]
        days: i64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config } => serve(&config.path),
        Command::Check { config, strict } => check(&config.path, strict),
        Command::Explain(args) => explain(args).map_err(|f| f.code(2)),
        Command::HashPassword { cost } => hash_password(cost),
        Command::User { config, command } => user(&config.path, command),
        Command::Acl { config, command } => acl(&config.path, command),
        Command::Jwks { config, out } => jwks(&config.path, out),
        Command::RevokeRefresh {
            config,
            account,
            token_stdin,
        } => revoke_refresh(&config.path, account, token_stdin),
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
                    port,
                },
        } => cert_init(certs::Options {
            hosts,
            out,
            force,
            days,
            port,
        }),
        Command::Cert {
            command: CertCommand::Renew { out, hosts, days },
        } => cert_renew(certs::Renew { out, hosts, days }),
    };
    // The one place a command's failure is printed.
    match result {
        Ok(code) => code,
        Err(Failure { lines, code }) => {
            for line in lines {
                eprintln!("error: {line}");
            }
            ExitCode::from(code)
        }
    }
}

/// Why a command failed: one or more lines, printed by `main` as `error: ...`, and the
/// exit code (1; `explain` uses 2, keeping 1 for "denied", as grep does).
struct Failure {
    lines: Vec<String>,
    code: u8,
}

impl Failure {
    fn new(message: impl std::fmt::Display) -> Failure {
        Failure {
            lines: vec![message.to_string()],
            code: 1,
        }
    }

    fn code(mut self, code: u8) -> Failure {
        self.code = code;
        self
    }
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Failure {
        Failure {
            lines: e.all().map(|e| e.to_string()).collect(),
            code: 1,
        }
    }
}

type Outcome = Result<ExitCode, Failure>;

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
    // The Activity page's journal reads the audit and access events whatever the log
    // filters say.
    tracing_subscriber::registry()
        .with(logs)
        .with(audit_layer)
        .with(regate::web::journal::layer())
        .init();
    Ok(())
}

fn serve(path: &Path) -> Outcome {
    let config = Config::load(path)?;
    init_tracing(&config.audit_log).map_err(Failure::new)?;
    for w in &config.warnings {
        tracing::warn!("{}: {w}", path.display());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(format!("cannot start the async runtime: {e}")))?;
    runtime
        .block_on(serve_until_signal(config))
        .map_err(Failure::new)?;
    Ok(ExitCode::SUCCESS)
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

fn check(path: &Path, strict: bool) -> Outcome {
    let report = regate::ops::check::check(path);
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    for note in &report.notes {
        println!("{note}");
    }
    if strict && report.errors.is_empty() && !report.warnings.is_empty() {
        return Err(Failure::new(format!(
            "{}: {} warning(s), which --strict makes errors",
            path.display(),
            report.warnings.len()
        )));
    }
    if !report.errors.is_empty() {
        return Err(Failure {
            lines: report.errors,
            code: 1,
        });
    }
    if let Some(summary) = &report.summary {
        println!("{summary}");
    }
    Ok(ExitCode::SUCCESS)
}

fn explain(args: ExplainArgs) -> Outcome {
    let config = Config::load(&args.config.path)?;
    let mut scopes = Vec::new();
    for s in &args.scopes {
        scopes.extend(regate::auth::scope::Scope::parse_list(s).map_err(Failure::new)?);
    }
    let labels = match args.labels.is_empty() {
        true => None,
        false => Some(explain::parse_labels(&args.labels).map_err(Failure::new)?),
    };
    let password = match args.password_stdin {
        true => Some(password_from_stdin().map_err(Failure::new)?),
        false => None,
    };
    let report = explain::explain(
        &config,
        &explain::Input {
            account: &args.account,
            password: password.as_ref(),
            ip: args.ip,
            labels: labels.as_ref(),
            scopes: &scopes,
        },
    );
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(Failure::new)?
        );
    } else {
        print!("{}", report.to_text());
    }
    // As grep does: 0 all granted, 1 something denied (or the login refused), 2 an error.
    Ok(match report.denies() {
        true => ExitCode::from(1),
        false => ExitCode::SUCCESS,
    })
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

/// A new password: twice without echo on a terminal (as htpasswd asks), else stdin.
fn new_password() -> Result<regate::auth::Secret, String> {
    let password = if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        let first = rpassword::prompt_password("New password: ").map_err(|e| e.to_string())?;
        let again =
            rpassword::prompt_password("Re-type new password: ").map_err(|e| e.to_string())?;
        if first != again {
            return Err("the passwords do not match".to_owned());
        }
        regate::auth::Secret::new(first)
    } else {
        password_from_stdin()?
    };
    if password.expose().is_empty() {
        return Err("empty password".to_owned());
    }
    Ok(password)
}

/// Runs an account command on a small runtime, its audit lines where the config sends
/// them (`stdout` goes to stderr: stdout is the command's own output).
fn manage<F: std::future::Future<Output = Result<String, String>>>(
    path: &Path,
    run: impl FnOnce(Config) -> F,
) -> Outcome {
    let config = Config::load(path)?;
    let audit = match &config.audit_log {
        AuditLog::Stdout => AuditLog::Stderr,
        other => other.clone(),
    };
    init_tracing(&audit).map_err(Failure::new)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Failure::new)?;
    let out = runtime.block_on(run(config)).map_err(Failure::new)?;
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

fn user(path: &Path, args: UserArgs) -> Outcome {
    let command = match args {
        UserArgs::Add { name, labels } => UserCommand::Add {
            name,
            labels: explain::parse_labels(&labels).map_err(Failure::new)?,
        },
        UserArgs::Passwd { name } => UserCommand::Passwd { name },
        UserArgs::Del { name } => UserCommand::Del { name },
        UserArgs::List { json } => UserCommand::List { json },
        UserArgs::Label { name, set, remove } => UserCommand::Label {
            name,
            set: explain::parse_labels(&set).map_err(Failure::new)?,
            remove,
        },
    };
    manage(path, |config| async move {
        accounts::user(&config, command, new_password).await
    })
}

fn acl(path: &Path, args: AclArgs) -> Outcome {
    let command = match args {
        AclArgs::List { json } => AclCommand::List { json },
        AclArgs::Add {
            account,
            type_,
            name,
            service,
            ip,
            labels,
            actions,
            comment,
            before,
            after,
        } => AclCommand::Add {
            entry: accounts::entry(
                account, type_, name, service, ip, &labels, &actions, comment,
            )
            .map_err(Failure::new)?,
            at: accounts::placement(before, after).map_err(Failure::new)?,
        },
        AclArgs::Del { seq } => AclCommand::Del { seq },
        AclArgs::Move { seq, before, after } => {
            let at = accounts::placement(before, after).map_err(Failure::new)?;
            if at == regate::sql::Placement::End {
                return Err(Failure::new("move needs --before SEQ or --after SEQ"));
            }
            AclCommand::Move { seq, at }
        }
        AclArgs::Renumber => AclCommand::Renumber,
    };
    manage(path, |config| async move {
        accounts::acl(&config, command).await
    })
}

fn hash_password(cost: u32) -> Outcome {
    let password = new_password().map_err(Failure::new)?;
    println!(
        "{}",
        bcrypt::hash(password.expose(), cost).map_err(Failure::new)?
    );
    Ok(ExitCode::SUCCESS)
}

fn cert_init(opts: certs::Options) -> Outcome {
    certs::init(&opts).map_err(Failure::new)?;
    print!("{}", certs::instructions(&opts));
    Ok(ExitCode::SUCCESS)
}

fn cert_renew(opts: certs::Renew) -> Outcome {
    let hosts = certs::renew(&opts).map_err(Failure::new)?;
    println!(
        "Wrote {}/server.crt and server.key for {}, signed by the same CA; a running regate serves them from its next look (within a second).",
        opts.out.display(),
        hosts.join(", ")
    );
    Ok(ExitCode::SUCCESS)
}

fn probe(url: &str, insecure: bool, timeout: u64) -> Outcome {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Failure::new)?;
    let timeout = std::time::Duration::from_secs(timeout);
    match runtime.block_on(regate::ops::probe::probe(url, insecure, timeout)) {
        Ok(status) if (200..300).contains(&status) => Ok(ExitCode::SUCCESS),
        Ok(status) => Err(Failure::new(format!("{url}: {status}"))),
        Err(e) => Err(Failure::new(format!("{url}: {e}"))),
    }
}

fn revoke_refresh(path: &Path, account: Option<String>, token_stdin: bool) -> Outcome {
    use regate::ops::revoke::{revoke, What};
    let config = Config::load(path)?;
    let what = match (account, token_stdin) {
        (Some(account), _) => What::Account(account),
        (None, _) => {
            let mut token = String::new();
            std::io::stdin()
                .read_to_string(&mut token)
                .map_err(|e| Failure::new(format!("reading the token on stdin: {e}")))?;
            What::Token(token)
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(format!("cannot start the async runtime: {e}")))?;
    let done = runtime
        .block_on(revoke(&config, what))
        .map_err(Failure::new)?;
    println!("{done}");
    Ok(ExitCode::SUCCESS)
}

fn jwks(path: &Path, out: Option<PathBuf>) -> Outcome {
    let config = Config::load(path)?;
    let key = regate::signing_key(&config).map_err(|e| Failure::new(format!("token key: {e}")))?;
    let text = format!("{:#}\n", key.jwks());
    match out {
        Some(file) => std::fs::write(&file, text)
            .map_err(|e| Failure::new(format!("{}: {e}", file.display())))?,
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}
