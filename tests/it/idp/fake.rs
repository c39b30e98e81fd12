//! A FAKE OpenID provider that answers wrongly on purpose: what a broken or hostile
//! provider (or someone between it and regate) would send. The real provider
//! (`provider.mjs`) signs only good id_tokens; these are the bad ones, each chosen by a
//! mode the browser sets first (`GET /__mode?m=MODE`):
//!
//! | mode | the answer |
//! |---|---|
//! | `good` | a valid id_token (the control) |
//! | `wrong-aud`, `wrong-iss`, `expired`, `nonce` | one claim wrong |
//! | `unsigned` | `alg: none`, no signature |
//! | `bad-signature` | signed by another key under the published key's `kid` |
//! | `unknown-kid` | signed by a key never published |
//! | `rotated` | signed by a new key, published from now on (regate must refetch) |
//! | `deny` | the authorization answered `error=access_denied` |
//! | `hold` | the authorization shows a link back instead of redirecting |
//! | `hang` | the token endpoint never answers |
//!
//! Codes are single use, as RFC 6749 4.1.2 asks.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

pub const CLIENT: &str = "regate";
pub const SECRET: &str = "fake-secret";

struct Key {
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
}

fn key(kid: &str) -> Key {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let point = pair.public_key_raw();
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    Key {
        kid: kid.to_owned(),
        encoding: EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
        jwk: json!({"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
                    "x": b64(&point[1..33]), "y": b64(&point[33..65])}),
    }
}

struct State {
    url: String,
    mode: String,
    /// code -> the nonce of its authorization
    codes: HashMap<String, String>,
    used: HashSet<String>,
    published: Vec<Key>,
    /// The key `rotated` signs with; published once used.
    next: Option<Key>,
    jwks_fetches: u32,
    token_requests: u32,
}

pub struct Fake {
    pub url: String,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Fake {
    pub async fn start() -> Fake {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State {
            url: url.clone(),
            mode: "good".into(),
            codes: HashMap::new(),
            used: HashSet::new(),
            published: vec![key("key-1")],
            next: Some(key("key-2")),
            jwks_fetches: 0,
            token_requests: 0,
        }));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(answer(&state, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Fake { url, state, task }
    }

    pub fn jwks_fetches(&self) -> u32 {
        self.state.lock().unwrap().jwks_fetches
    }

    pub fn token_requests(&self) -> u32 {
        self.state.lock().unwrap().token_requests
    }
}

fn random() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 24];
    ring::rand::SystemRandom::new().fill(&mut bytes).unwrap();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn query(req: &Request<hyper::body::Incoming>) -> HashMap<String, String> {
    form(req.uri().query().unwrap_or(""))
}

fn form(text: &str) -> HashMap<String, String> {
    text.split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| {
            let dec = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (dec(k), dec(v))
        })
        .collect()
}

fn reply(status: u16, kind: &str, body: String, location: Option<String>) -> Response<Full<Bytes>> {
    let mut b = Response::builder()
        .status(status)
        .header("content-type", kind)
        .header("cache-control", "no-store");
    if let Some(l) = location {
        b = b.header("location", l);
    }
    b.body(Full::new(Bytes::from(body))).unwrap()
}

fn with_query(base: &str, pairs: &[(&str, &str)]) -> String {
    let q: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}={}",
                percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
            )
        })
        .collect();
    format!(
        "{base}{}{}",
        if base.contains('?') { '&' } else { '?' },
        q.join("&")
    )
}

async fn answer(
    state: &Mutex<State>,
    req: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    match path.as_str() {
        "/.well-known/openid-configuration" => {
            let url = state.lock().unwrap().url.clone();
            let doc = json!({
                "issuer": url, "authorization_endpoint": format!("{url}/authorize"),
                "token_endpoint": format!("{url}/token"), "jwks_uri": format!("{url}/jwks"),
                "userinfo_endpoint": format!("{url}/userinfo"),
                "response_types_supported": ["code"], "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["ES256"],
            });
            reply(200, "application/json", doc.to_string(), None)
        }
        "/jwks" => {
            let mut s = state.lock().unwrap();
            s.jwks_fetches += 1;
            let keys: Vec<Value> = s.published.iter().map(|k| k.jwk.clone()).collect();
            reply(
                200,
                "application/json",
                json!({ "keys": keys }).to_string(),
                None,
            )
        }
        "/__mode" => {
            let mode = query(&req).remove("m").unwrap_or_default();
            state.lock().unwrap().mode = mode.clone();
            let page = format!("<!doctype html><html lang=en><title>fake provider</title><p id=mode>{mode}</p></html>");
            reply(200, "text/html", page, None)
        }
        "/authorize" => {
            let q = query(&req);
            let redirect = q.get("redirect_uri").cloned().unwrap_or_default();
            let st = q.get("state").cloned().unwrap_or_default();
            let code = random();
            let mode = {
                let mut s = state.lock().unwrap();
                s.codes
                    .insert(code.clone(), q.get("nonce").cloned().unwrap_or_default());
                s.mode.clone()
            };
            match mode.as_str() {
                "deny" => {
                    let to = with_query(
                        &redirect,
                        &[
                            ("error", "access_denied"),
                            ("error_description", "The user said no"),
                            ("state", &st),
                        ],
                    );
                    reply(302, "text/plain", String::new(), Some(to))
                }
                "hold" => {
                    let to = with_query(&redirect, &[("code", &code), ("state", &st)]);
                    let page = format!("<!doctype html><html lang=en><title>fake provider</title><a id=back href=\"{to}\">back to regate</a></html>");
                    reply(200, "text/html", page, None)
                }
                _ => {
                    let to = with_query(&redirect, &[("code", &code), ("state", &st)]);
                    reply(302, "text/plain", String::new(), Some(to))
                }
            }
        }
        "/token" => {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let f = form(&String::from_utf8_lossy(&body));
            let code = f.get("code").cloned().unwrap_or_default();
            let (mode, nonce) = {
                let mut s = state.lock().unwrap();
                s.token_requests += 1;
                let fresh = s.used.insert(code.clone());
                match s.codes.get(&code) {
                    Some(nonce) if fresh => (s.mode.clone(), nonce.clone()),
                    _ => {
                        let e = json!({"error": "invalid_grant", "error_description": "the code was used already or is unknown"});
                        return reply(400, "application/json", e.to_string(), None);
                    }
                }
            };
            if mode == "hang" {
                tokio::time::sleep(std::time::Duration::from_secs(120)).await;
            }
            let id_token = id_token(state, &mode, &nonce);
            let t = json!({"access_token": "fake-access", "token_type": "Bearer", "expires_in": 300,
                           "refresh_token": "fake-refresh", "id_token": id_token});
            reply(200, "application/json", t.to_string(), None)
        }
        _ => reply(404, "text/plain", "no such page".into(), None),
    }
}

fn id_token(state: &Mutex<State>, mode: &str, nonce: &str) -> String {
    let mut s = state.lock().unwrap();
    let now = now();
    let mut claims = json!({
        "iss": s.url, "aud": CLIENT, "sub": "u-alice", "exp": now + 300, "iat": now,
        "nonce": nonce, "email": "alice@example.com", "email_verified": true,
    });
    match mode {
        "wrong-aud" => claims["aud"] = json!("someone-else"),
        "wrong-iss" => claims["iss"] = json!("https://evil.example"),
        "expired" => {
            claims["exp"] = json!(now - 3600);
            claims["iat"] = json!(now - 7200);
        }
        "nonce" => claims["nonce"] = json!("not-the-one-sent"),
        _ => {}
    }
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    if mode == "unsigned" {
        return format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT"})),
            b64(&claims)
        );
    }
    let sign = |key: &Key, kid: &str| {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, &claims, &key.encoding).unwrap()
    };
    match mode {
        "bad-signature" => {
            let stranger = key("stranger");
            sign(&stranger, &s.published[0].kid)
        }
        "unknown-kid" => sign(&key("never-published"), "never-published"),
        "rotated" => {
            if let Some(next) = s.next.take() {
                s.published.push(next);
            }
            let k = s.published.last().unwrap();
            sign(k, &k.kid)
        }
        _ => {
            // The newest published key signs, as a provider after a rotation does.
            let k = s.published.last().unwrap();
            sign(k, &k.kid)
        }
    }
}
