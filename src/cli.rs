//! The `regate` command line (clap): commands, their arguments and their help. A module of
//! the binary (`main.rs`), not of the library.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    version,
    about = "Users, permissions and HTTPS in front of an unmodified registry:2"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
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
pub(crate) struct ConfigPath {
    /// The config file (docker_auth's format plus regate's keys).
    #[arg(
        long = "config",
        value_name = "FILE",
        short = 'c',
        global = true,
        env = "REGATE_CONFIG",
        default_value = "/config/regate.yml"
    )]
    pub(crate) path: PathBuf,
}

#[derive(clap::Args)]
pub(crate) struct ExplainArgs {
    #[command(flatten)]
    pub(crate) config: ConfigPath,
    /// The account asking; "" for anonymous.
    #[arg(long)]
    pub(crate) account: String,
    /// Read the account's password on stdin and say whether it is right.
    #[arg(long)]
    pub(crate) password_stdin: bool,
    /// The client address, for rules with `ip`.
    #[arg(long)]
    pub(crate) ip: Option<std::net::IpAddr>,
    /// A label KEY=VALUE (repeat for several); replaces the user's labels from `users`.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub(crate) labels: Vec<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
    /// Docker scopes, e.g. repository:alice/app:pull,push or registry:catalog:*.
    #[arg(required = true, value_name = "SCOPE")]
    pub(crate) scopes: Vec<String>,
}

#[derive(Subcommand)]
pub(crate) enum UserArgs {
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
pub(crate) enum AclArgs {
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
pub(crate) enum CertCommand {
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
