//! Talking to the ACME CA (RFC 8555): the account, an order for `host`, its TLS-ALPN-01
//! validation (RFC 8737) answered by the HTTPS listener itself, then a key and CSR made here
//! and the chain the CA issues for them.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use instant_acme::{
    Account, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType, HttpClient,
    Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

use super::store::{Issued, Store};
use super::{AcmeError, Settings};
use crate::tls::Certificates;

/// One request to the CA that takes longer fails the attempt (it is retried later).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How the order is polled while the CA validates and then issues: 250 ms, doubling, for
/// up to two minutes.
fn polling() -> RetryPolicy {
    RetryPolicy::new().timeout(Duration::from_secs(120))
}

/// The CA's HTTP client and, once registered or loaded, the account.
pub struct Client {
    http: Http,
    account: Option<Account>,
}

impl Client {
    /// Fails only when `ca_certificate` cannot be read.
    pub fn new(settings: &Settings) -> Result<Client, AcmeError> {
        Ok(Client {
            http: Http::new(settings.ca_certificate.as_deref())?,
            account: None,
        })
    }

    /// Makes the next attempt load the account (and the CA's directory) again.
    pub fn forget_account(&mut self) {
        self.account = None;
    }

    /// One certificate for `settings.host`, validated through `certs` (the listener's
    /// resolver shows the CA the challenge certificate while the order waits).
    pub async fn obtain(
        &mut self,
        settings: &Settings,
        store: &Store,
        certs: &Certificates,
    ) -> Result<Issued, AcmeError> {
        let account = match self.account.take() {
            Some(account) => account,
            None => self.account(settings, store).await?,
        };
        let issued = issue(&account, &settings.host, certs).await;
        self.account = Some(account);
        let (key_pem, chain_pem) = issued?;
        Ok(Issued {
            key_pem,
            chain_pem,
            directory: settings.directory_url.clone(),
        })
    }

    /// The account registered earlier with this CA, or a new one (saved to `cache_dir`).
    /// Registering agrees to the CA's terms of service, as docker_auth (autocert's
    /// `AcceptTOS`) does.
    async fn account(&self, settings: &Settings, store: &Store) -> Result<Account, AcmeError> {
        let builder = Account::builder_with_http(Box::new(self.http.clone()));
        if let Some(credentials) = store.account(&settings.directory_url) {
            return Ok(builder.from_credentials(credentials).await?);
        }
        let contact = settings.email.as_ref().map(|e| format!("mailto:{e}"));
        let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
        let (account, credentials) = builder
            .create(
                &NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                settings.directory_url.clone(),
                None,
            )
            .await?;
        store.save_account(&credentials)?;
        tracing::info!(directory = %settings.directory_url, account = %account.id(), "registered an ACME account");
        Ok(account)
    }
}

/// Order, validate, finalize, download: the new key and chain as PEM.
async fn issue(
    account: &Account,
    host: &str,
    certs: &Certificates,
) -> Result<(String, String), AcmeError> {
    let identifiers = [Identifier::Dns(host.to_owned())];
    let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
    // Shown only while this order waits; taken down however the wait ends.
    let shown = ShownChallenge(certs);
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization?;
        let name = authorization.identifier().to_string();
        match authorization.status {
            AuthorizationStatus::Pending => {}
            // Validated recently for this account (Let's Encrypt reuses them for a while).
            AuthorizationStatus::Valid => continue,
            status => return Err(AcmeError::Authorization { name, status }),
        }
        let mut challenge = authorization
            .challenge(ChallengeType::TlsAlpn01)
            .ok_or_else(|| AcmeError::NoTlsAlpn(name.clone()))?;
        let key = challenge_certificate(&name, challenge.key_authorization().digest().as_ref())?;
        certs.set_challenge(&name, key);
        challenge.set_ready().await?;
    }
    let status = order.poll_ready(&polling()).await?;
    drop(shown);
    match status {
        OrderStatus::Ready => {}
        OrderStatus::Invalid => return Err(why_invalid(&mut order, host).await),
        other => return Err(AcmeError::Order(other)),
    }
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::new(vec![host.to_owned()])?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key)?;
    order.finalize_csr(csr.der()).await?;
    let chain = order.poll_certificate(&polling()).await?;
    Ok((key.serialize_pem(), chain))
}

/// Takes the challenge certificate down when dropped.
struct ShownChallenge<'c>(&'c Certificates);

impl Drop for ShownChallenge<'_> {
    fn drop(&mut self) {
        self.0.clear_challenge();
    }
}

/// The CA's account of a failed validation (its `error` on the challenge).
async fn why_invalid(order: &mut instant_acme::Order, host: &str) -> AcmeError {
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authorization)) = authorizations.next().await {
        let name = authorization.identifier().to_string();
        let Ok(state) = authorization.refresh().await else {
            continue;
        };
        if let Some(problem) = state.challenges.iter().find_map(|c| c.error.clone()) {
            return AcmeError::Invalid { name, problem };
        }
    }
    AcmeError::InvalidWithoutReason(host.to_owned())
}

/// RFC 8737 3: a self-signed certificate for `name` with the critical acmeIdentifier
/// extension holding the key authorization's SHA-256. rustls's usual loaders refuse an
/// unknown critical extension, so the key is assembled here, unchecked.
pub(super) fn challenge_certificate(name: &str, digest: &[u8]) -> Result<CertifiedKey, AcmeError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()])?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key)?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signer = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(der)
        .map_err(AcmeError::ChallengeKey)?;
    Ok(CertifiedKey::new(vec![cert.der().clone()], signer))
}

/// instant-acme's HTTP client: hyper-util's pooled client over hyper-rustls (ring), with
/// the roots of `ca_certificate` or the system's, HTTPS only (RFC 8555 6.1).
#[derive(Clone)]
struct Http {
    client: hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>,
}

impl Http {
    fn new(ca: Option<&std::path::Path>) -> Result<Http, AcmeError> {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(crate::tls::client_config(ca)?)
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_timer(TokioTimer::new())
            .build(connector);
        Ok(Http { client })
    }
}

impl HttpClient for Http {
    fn request(
        &self,
        req: hyper::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let sent = self.client.request(req);
        Box::pin(async move {
            match tokio::time::timeout(REQUEST_TIMEOUT, sent).await {
                Ok(Ok(response)) => Ok(BytesResponse::from(response)),
                Ok(Err(e)) => Err(instant_acme::Error::Other(Box::new(e))),
                Err(_) => Err(instant_acme::Error::Other(Box::new(AcmeError::Timeout(
                    REQUEST_TIMEOUT,
                )))),
            }
        })
    }
}
