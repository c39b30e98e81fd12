//! The `regate` command: parse, load the config, set up logging, run until a signal.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;

mod cli;

use cli::{AclArgs, CertCommand, Cli, Command, ExplainArgs, UserArgs};
use regate::config::{AuditLog, Config, ConfigError};
use regate::ops::accounts::{self, AclCommand, UserCommand};
use regate::ops::{certs, explain};

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
