//! regate: one binary in front of an unmodified registry:2. It terminates TLS, answers the
//! Docker token-auth challenge, serves `/auth` tokens, enforces docker_auth-compatible ACLs
//! and streams authorized traffic to the registry.
//!
//! [`start`] is the one entry point the binary and the tests share.
// One call is unsafe: `memory::give_back_freed` (glibc's malloc_trim), allowed there alone.
#![deny(unsafe_code)]

pub mod accounts;
pub mod acl;
pub mod acme;
pub mod api;
pub mod auth;
pub mod body;
pub mod cache;
pub mod config;
pub mod error;
pub mod files;
pub mod fuzzing;
pub mod gateway;
pub mod memory;
pub mod metrics;
pub mod ops;
pub mod percent;
pub mod proxy;
pub mod reload;
pub mod route;
pub mod runtime;
pub mod server;
pub mod sql;
pub mod state;
pub mod timeouts;
pub mod tls;
pub mod web;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use auth::keys::KeyError;
use config::Config;
use gateway::Gateway;
use reload::{ReloadError, Reloader};
pub use runtime::{signing_key, Lasting, Runtime};

/// A boxed future, for traits used behind `dyn` (login backends, the state store).
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("token key: {0}")]
    Key(#[from] KeyError),
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("ldap_auth: {0}")]
    Ldap(#[from] auth::ldap::SetupError),
    #[error("{0}")]
    Idp(#[from] auth::idp::SetupError),
    #[error("token DB: {0}")]
    State(#[from] state::StoreError),
    #[error("casbin_authz: {0}")]
    Casbin(String),
    #[error("upstream: {0}")]
    Upstream(#[from] tls::CaError),
    #[error("shared_state: {0}")]
    SharedState(#[from] state::RedisSetupError),
    #[error("server.letsencrypt: {0}")]
    Acme(#[from] acme::AcmeError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A running gateway.
pub struct Server {
    local_addr: SocketAddr,
    redirect_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    gateway: Arc<Gateway>,
    reloader: Arc<Reloader>,
    hup: watch::Sender<()>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Server {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The plain-HTTP redirect listener's address, when configured.
    pub fn redirect_addr(&self) -> Option<SocketAddr> {
        self.redirect_addr
    }

    /// The `/metrics` listener's address, when configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// Loads the config (and certificate) files again now, and says whether it worked.
    pub fn reload(&self) -> Result<(), ReloadError> {
        self.reloader.reload()
    }

    /// Asks the watcher for a reload, as SIGHUP does; the outcome goes to the log.
    pub fn request_reload(&self) {
        let _ = self.hup.send(());
    }

    /// Stops accepting, lets requests in flight finish (up to a limit), and returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Builds the runtime, binds the listeners and serves in the background.
pub async fn start(config: Config) -> Result<Server, Error> {
    let listen = config.server.listen;
    let redirect = config.server.redirect_listen;
    let metrics = config.server.metrics_listen;
    let timeouts = config.timeouts;
    // Before any listener: every connection is a descriptor.
    let open_files = server::cap::raise_open_files_limit();
    let max_connections = config
        .server
        .max_connections
        .unwrap_or_else(|| server::cap::default_max(open_files));
    if let Some(files) = open_files.filter(|&f| (max_connections as u64).saturating_mul(2) > f) {
        tracing::warn!(
            "server.max_connections is {max_connections} and the open files limit {files}: past about {} connections accepts fail for want of descriptors (raise the hard limit: `ulimit -Hn`, systemd's LimitNOFILE, docker's --ulimit nofile)",
            files / 2
        );
    }
    let certs = match config.server.tls.as_ref().map(|t| &t.source) {
        Some(tls::CertSource::Files(files)) => {
            Some(tls::Certificates::new(tls::load_certified_key(files)?))
        }
        // Filled from cache_dir below, or once the CA has issued one.
        Some(tls::CertSource::Acme(_)) => Some(tls::Certificates::empty()),
        None => None,
    };
    let acceptor = certs
        .as_ref()
        .zip(config.server.tls.as_ref())
        .map(|(c, settings)| {
            tokio_rustls::TlsAcceptor::from(tls::server_config(c.clone(), settings))
        });
    let lasting = Lasting::for_config(&config)?;
    let runtime = Runtime::build(config, lasting)?;
    // The cached certificate is in place before the listener opens, so it serves at once.
    let acme = match (
        &certs,
        runtime.config.server.tls.as_ref().and_then(|t| t.acme()),
    ) {
        (Some(certs), Some(settings)) => Some(acme::Acme::start(
            settings,
            certs.clone(),
            runtime.metrics.clone(),
        )?),
        _ => None,
    };
    // An issuer that cannot be read is said at start (regate serves on: accounts checked
    // lately keep working, and a sign-in tries the issuer again).
    for provider in runtime.logins.providers() {
        let provider = provider.clone();
        tokio::spawn(async move {
            match provider.warm().await {
                Ok(()) => {
                    tracing::info!(section = %provider.backend(), provider = %provider.label(), "identity provider ready")
                }
                Err(e) => tracing::error!(
                    section = %provider.backend(),
                    "the identity provider cannot be used yet: {e}; sign-ins with it fail until it can (each tries again)"
                ),
            }
        });
    }
    let listener = bind(listen).await?;
    let local_addr = local_addr_of(&listener, listen)?;
    let gateway = Arc::new(Gateway::new(runtime)?);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (hup, hup_rx) = watch::channel(());
    let reloader = Arc::new(Reloader::new(gateway.clone(), certs));

    let handler = {
        let gateway = gateway.clone();
        move |req, conn| gateway.clone().handle(req, conn)
    };
    let proxy_protocol = gateway.runtime().config.server.proxy_protocol.clone();
    // The main and the redirect listener share the clients' cap.
    let cap = Arc::new(server::cap::Cap::clients(
        max_connections,
        gateway.runtime().metrics.clone(),
    ));
    let mut tasks = vec![tokio::spawn(server::serve(
        listener,
        acceptor,
        handler,
        timeouts,
        proxy_protocol.clone(),
        cap.clone(),
        shutdown_rx.clone(),
    ))];
    let mut redirect_addr = None;
    if let Some(addr) = redirect {
        let listener = bind(addr).await?;
        redirect_addr = Some(local_addr_of(&listener, addr)?);
        let https_port = local_addr.port();
        let handler = move |req, _conn| gateway::redirect_to_https(req, https_port);
        tasks.push(tokio::spawn(server::serve(
            listener,
            None,
            handler,
            timeouts,
            proxy_protocol,
            cap,
            shutdown_rx.clone(),
        )));
    }
    let mut metrics_addr = None;
    if let Some(addr) = metrics {
        let listener = bind(addr).await?;
        metrics_addr = Some(local_addr_of(&listener, addr)?);
        let gateway = gateway.clone();
        let handler = move |req, _conn| gateway::metrics_only(gateway.clone(), req);
        tasks.push(tokio::spawn(server::serve(
            listener,
            None,
            handler,
            timeouts,
            None,
            Arc::new(server::cap::Cap::metrics_listener()),
            shutdown_rx.clone(),
        )));
    }
    if let Some(acme) = acme {
        tasks.push(tokio::spawn(acme.run(shutdown_rx.clone())));
    }
    tasks.push(tokio::spawn(
        Reloader::clone(&reloader).run(hup_rx, shutdown_rx),
    ));
    tracing::info!(addr = %local_addr, https = gateway.runtime().config.server.tls.is_some(), max_connections, open_files = %open_files.map_or_else(|| "unlimited".to_owned(), |n| n.to_string()), "regate listening");
    Ok(Server {
        local_addr,
        redirect_addr,
        metrics_addr,
        gateway,
        reloader,
        hup,
        shutdown,
        tasks,
    })
}

fn local_addr_of(listener: &TcpListener, asked: SocketAddr) -> Result<SocketAddr, Error> {
    listener.local_addr().map_err(|source| Error::Bind {
        addr: asked,
        source,
    })
}

/// Binds `addr`; `[::]` falls back to `0.0.0.0` where IPv6 is off.
async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    match TcpListener::bind(addr).await {
        Ok(l) => Ok(l),
        Err(e) if addr.ip().is_unspecified() && addr.is_ipv6() => {
            let v4 = SocketAddr::from(([0, 0, 0, 0], addr.port()));
            TcpListener::bind(v4)
                .await
                .map_err(|_| Error::Bind { addr, source: e })
        }
        Err(source) => Err(Error::Bind { addr, source }),
    }
}
