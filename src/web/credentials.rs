//! Credentials: the `docker login` command for this registry, the CA certificate to
//! trust when regate serves a private CA, and named, expiring tokens for CI (shown once,
//! listed, revoked), kept in the same store the login chain checks first
//! (`auth::credentials`).

use std::time::{Duration, SystemTime};

use askama::Template;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_DISPOSITION, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};

use super::form::{self, Form};
use super::format;
use super::page::{self, Problem, Shell};
use super::{url_encode, Visit};
use crate::auth::credentials::Credentials;
use crate::body::{self, Body};

/// The lifetimes offered, in days (a year at most: a CI token that never ends is one
/// nobody remembers to revoke).
const LIFETIMES: [u64; 4] = [7, 30, 90, 365];
const DEFAULT_DAYS: u64 = 90;
/// Tokens one account may hold at once.
const MOST: usize = 50;

#[derive(Template)]
#[template(path = "credentials.html")]
struct CredentialsPage {
    shell: Shell,
    login: String,
    host: String,
    account: String,
    https: bool,
    ca: bool,
    tokens: Vec<Row>,
    lifetimes: Vec<(u64, bool)>,
    notice: Option<String>,
    error: Option<String>,
    name: String,
}

struct Row {
    id: String,
    name: String,
    created: String,
    expires: String,
    expired: bool,
}

#[derive(Template)]
#[template(path = "credential_new.html")]
struct CreatedPage {
    shell: Shell,
    account: String,
    name: String,
    secret: String,
    expires: String,
    login: String,
}

fn store(visit: &Visit<'_>) -> Credentials {
    Credentials::new(visit.rt.state.clone())
}

fn store_problem(e: crate::state::StoreError) -> Problem {
    tracing::error!("the credential store failed: {e}");
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "Your tokens could not be read or saved just now. Try again later.",
    )
}

/// A name people can tell apart and read back: letters, digits, space, `.`, `_`, `-`.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.chars().count())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " ._-".contains(c))
}

pub async fn page(visit: &Visit<'_>) -> Result<Response<Body>, Problem> {
    if visit.session.is_none() {
        return Ok(visit.sign_in_first());
    }
    let query = visit.target.split_once('?').map_or("", |(_, q)| q);
    let notice = Form::parse(query)
        .and_then(|f| f.get("revoked").map(str::to_owned))
        // Only a token's name: the address is anyone's to write.
        .filter(|n| valid_name(n))
        .map(|n| format!("Revoked \u{201c}{n}\u{201d}: it no longer logs in."));
    render(visit, notice, None, "").await
}

async fn render(
    visit: &Visit<'_>,
    notice: Option<String>,
    error: Option<String>,
    name: &str,
) -> Result<Response<Body>, Problem> {
    let session = visit.session_for_form()?;
    let now = format::now();
    let tokens = store(visit)
        .list(&session.account)
        .await
        .map_err(store_problem)?
        .into_iter()
        .map(|c| Row {
            expires: c.expires.map_or_else(|| "never".to_owned(), format::utc),
            expired: c.expires.is_some_and(|e| e <= now),
            created: format::utc(c.created),
            id: c.id,
            name: c.name,
        })
        .collect();
    let mut shell = visit.shell();
    shell.current = "credentials";
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let mut resp = page::render(&CredentialsPage {
        shell,
        login: format!("docker login {} -u {}", visit.host, session.account),
        host: visit.host.clone(),
        account: session.account.clone(),
        https: visit.https,
        ca: private_ca(visit).is_some(),
        tokens,
        lifetimes: LIFETIMES.iter().map(|d| (*d, *d == DEFAULT_DAYS)).collect(),
        notice,
        error,
        name: name.to_owned(),
    })?;
    *resp.status_mut() = status;
    Ok(resp)
}

/// A new token: shown once, on this answer only (never in a URL, never stored).
pub async fn create(visit: &Visit<'_>, req: Request<Incoming>) -> Result<Response<Body>, Problem> {
    let session = visit.session_for_form()?;
    let form = form::read(req, Some(session)).await?;
    let name = form.get("name").unwrap_or("").trim().to_owned();
    let days: Option<u64> = form
        .get("days")
        .and_then(|d| d.parse().ok())
        .filter(|d| LIFETIMES.contains(d));
    let store = store(visit);
    let existing = store.list(&session.account).await.map_err(store_problem)?;
    let error = if !valid_name(&name) {
        Some("Give the token a name of 1 to 64 letters, digits, spaces, dots, dashes or underscores (e.g. ci-deploy).")
    } else if existing.iter().any(|c| c.name == name) {
        Some("You already have a token of that name: choose another, or revoke that one first.")
    } else if days.is_none() {
        Some("Choose how long the token lasts.")
    } else if existing.len() >= MOST {
        Some("You hold the most tokens one account may: revoke one you no longer use first.")
    } else {
        None
    };
    if let Some(error) = error {
        return render(visit, None, Some(error.to_owned()), &name).await;
    }
    let days = days.unwrap_or(DEFAULT_DAYS);
    let expires = SystemTime::now() + Duration::from_secs(days * 86_400);
    let (secret, kept) = store
        .issue(&session.identity(), &name, Some(expires))
        .await
        .map_err(store_problem)?;
    tracing::info!(
        target: "regate::audit",
        client = %visit.client_ip,
        account = %session.account,
        credential = %kept.id,
        name = %kept.name,
        expires = kept.expires.unwrap_or(0),
        "credential created"
    );
    let mut shell = visit.shell();
    shell.current = "credentials";
    page::render(&CreatedPage {
        shell,
        account: session.account.clone(),
        name: kept.name,
        secret: secret.expose().to_owned(),
        expires: kept.expires.map_or_else(|| "never".to_owned(), format::utc),
        login: format!(
            "echo \"$REGISTRY_TOKEN\" | docker login {} -u {} --password-stdin",
            visit.host, session.account
        ),
    })
}

pub async fn revoke(visit: &Visit<'_>, req: Request<Incoming>) -> Result<Response<Body>, Problem> {
    let session = visit.session_for_form()?;
    let form = form::read(req, Some(session)).await?;
    let id = form.get("id").unwrap_or("");
    let store = store(visit);
    // Only the account's own: the store's keys are the account's.
    let name = store
        .list(&session.account)
        .await
        .map_err(store_problem)?
        .into_iter()
        .find(|c| c.id == id)
        .map(|c| c.name)
        .ok_or_else(|| {
            Problem::new(
                StatusCode::NOT_FOUND,
                "You have no such token (revoked already?).",
            )
        })?;
    store
        .revoke(&session.account, id)
        .await
        .map_err(store_problem)?;
    tracing::info!(
        target: "regate::audit",
        client = %visit.client_ip,
        account = %session.account,
        credential = %id,
        name = %name,
        "credential revoked"
    );
    Ok(page::see_other(&visit.href(&format!(
        "/ui/credentials?revoked={}",
        url_encode(&name)
    ))))
}

/// The CA that signed regate's certificate, when it is a private one: the last
/// certificate of `server.certificate`'s chain when it signed itself (`regate cert init`
/// writes the CA there, after the server's own), else a `ca.crt` beside it that issued it.
/// Public CAs leave their root out of the chain, so nothing is offered for them.
fn private_ca(visit: &Visit<'_>) -> Option<Vec<u8>> {
    use x509_parser::prelude::*;
    // A certificate from an ACME CA is a public one: nothing to offer.
    let files = visit.rt.config.server.tls.as_ref()?.files()?;
    let chain_pem = std::fs::read(&files.certificate).ok()?;
    let chain: Vec<Vec<u8>> = rustls_pemfile::certs(&mut chain_pem.as_slice())
        .filter_map(Result::ok)
        .map(|c| c.to_vec())
        .collect();
    let leaf_issuer = {
        let (_, leaf) = X509Certificate::from_der(chain.first()?).ok()?;
        leaf.issuer().as_raw().to_vec()
    };
    let pem = |der: &[u8]| {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap_or(""))
            .collect();
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            lines.join("\n")
        )
        .into_bytes()
    };
    let self_signed = |der: &[u8]| {
        X509Certificate::from_der(der)
            .map(|(_, c)| c.subject().as_raw() == c.issuer().as_raw() && c.is_ca())
            .unwrap_or(false)
    };
    if chain.len() > 1 {
        if let Some(root) = chain.last().filter(|r| self_signed(r)) {
            return Some(pem(root));
        }
    }
    let beside = files.certificate.parent()?.join("ca.crt");
    let ca_pem = std::fs::read(beside).ok()?;
    let ca = rustls_pemfile::certs(&mut ca_pem.as_slice())
        .filter_map(Result::ok)
        .next()?
        .to_vec();
    let (_, parsed) = X509Certificate::from_der(&ca).ok()?;
    (self_signed(&ca) && parsed.subject().as_raw() == leaf_issuer.as_slice()).then(|| pem(&ca))
}

/// `ca.crt` to download (anyone may: a CA certificate is public, and it is needed before
/// `docker login` works at all).
pub fn ca_certificate(visit: &Visit<'_>) -> Result<Response<Body>, Problem> {
    let pem = private_ca(visit).ok_or_else(|| {
        Problem::new(
            StatusCode::NOT_FOUND,
            "This registry's certificate comes from a public authority: there is nothing to download.",
        )
    })?;
    let mut resp = Response::new(body::full(pem));
    let headers = resp.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-pem-file"),
    );
    headers.insert(
        CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"ca.crt\""),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    #[test]
    fn token_names_are_plain() {
        assert!(super::valid_name("ci-deploy 2"));
        assert!(!super::valid_name(""));
        assert!(!super::valid_name("<script>"));
        assert!(!super::valid_name(&"x".repeat(65)));
    }
}
