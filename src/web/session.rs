//! Who a browser is: a random session id in a cookie (`HttpOnly`, `SameSite=Lax`, `Secure`
//! over HTTPS), the session itself in the state store (so every replica sharing the store
//! knows it), an idle and an absolute limit, and a CSRF token for its forms.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::header::{HeaderValue, COOKIE};
use hyper::Request;
use serde::{Deserialize, Serialize};

use crate::acl::Labels;
use crate::auth::identity::{Backend, Identity};
use crate::runtime::Runtime;

/// The cookie's name.
pub const COOKIE_NAME: &str = "regate_session";

/// A signed-in browser.
#[derive(Clone, Serialize, Deserialize)]
pub struct Session {
    /// The cookie's value (random, 256 bits); never logged.
    #[serde(skip)]
    pub id: String,
    pub account: String,
    pub labels: Labels,
    /// Which login backend said yes, as its config section (`users`, `ldap_auth`, ...).
    pub backend: String,
    /// Seconds since the epoch.
    pub created: u64,
    pub seen: u64,
    /// The token every form of this session carries.
    pub csrf: String,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("account", &self.account)
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// 32 random bytes, base64url: session ids and CSRF tokens.
pub fn random_token() -> String {
    use base64::Engine;
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    // The OS's randomness; without it there is no safe session to make.
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the operating system provides randomness");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn key(id: &str) -> String {
    // The store holds a hash of the id, so a store readable by someone else (a Redis
    // dump) gives no cookie to replay.
    let digest = ring::digest::digest(&ring::digest::SHA256, id.as_bytes());
    use base64::Engine;
    format!(
        "session:{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
    )
}

/// The session a request's cookie names, if it is still good (and touches it).
pub async fn load<B>(rt: &Runtime, req: &Request<B>) -> Option<Session> {
    let id = cookie(req)?;
    let bytes = rt.state.get(&key(&id)).await.ok()??;
    let mut session: Session = serde_json::from_slice(&bytes).ok()?;
    session.id = id;
    let settings = &rt.config.ui;
    let now = now();
    let idle = now.saturating_sub(session.seen) > settings.session_idle.as_secs();
    let over = now.saturating_sub(session.created) > settings.session_max.as_secs();
    if idle || over {
        let _ = rt.state.delete(&key(&session.id)).await;
        return None;
    }
    // Touched at most once a minute: a page load is not a store write.
    if now.saturating_sub(session.seen) >= 60 {
        session.seen = now;
        let _ = save(rt, &session).await;
    }
    Some(session)
}

/// Begins a session for someone who just signed in.
pub async fn begin(rt: &Runtime, identity: &Identity) -> Result<Session, crate::state::StoreError> {
    let now = now();
    let session = Session {
        id: random_token(),
        account: identity.account.clone(),
        labels: identity.labels.clone(),
        backend: identity.backend.section().to_owned(),
        created: now,
        seen: now,
        csrf: random_token(),
    };
    save(rt, &session).await?;
    Ok(session)
}

async fn save(rt: &Runtime, session: &Session) -> Result<(), crate::state::StoreError> {
    let bytes = serde_json::to_vec(session).unwrap_or_default();
    let ttl = rt.config.ui.session_max + Duration::from_secs(60);
    rt.state.put(&key(&session.id), bytes, Some(ttl)).await
}

/// Ends a session (sign-out).
pub async fn end(rt: &Runtime, session: &Session) {
    let _ = rt.state.delete(&key(&session.id)).await;
}

impl Session {
    /// The identity the session stands for, as the ACL sees it.
    pub fn identity(&self) -> Identity {
        let session = self;
        let backend = Backend::from_section(&session.backend).unwrap_or(Backend::Users);
        Identity {
            account: session.account.clone(),
            labels: session.labels.clone(),
            acl: None,
            backend,
        }
    }
}

fn cookie<B>(req: &Request<B>) -> Option<String> {
    req.headers()
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value.to_owned())
        .filter(|v| {
            v.len() == 43
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The `Set-Cookie` that gives a browser its session (or, with `None`, takes it away).
pub fn set_cookie(
    session: Option<&Session>,
    prefix: &str,
    https: bool,
    max: Duration,
) -> HeaderValue {
    let path = if prefix.is_empty() { "/" } else { prefix };
    let secure = if https { "; Secure" } else { "" };
    let text = match session {
        Some(s) => format!(
            "{COOKIE_NAME}={}; Path={path}; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
            s.id,
            max.as_secs()
        ),
        None => format!("{COOKIE_NAME}=; Path={path}; Max-Age=0; HttpOnly; SameSite=Lax{secure}"),
    };
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Whether a form's token is the session's (compared in constant time).
pub fn csrf_ok(session: &Session, token: Option<&str>) -> bool {
    // Every byte compared, whatever the first difference: no timing tells a prefix.
    token.is_some_and(|t| {
        let (a, b) = (t.as_bytes(), session.csrf.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
    })
}
