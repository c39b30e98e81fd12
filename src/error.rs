//! The registry's error vocabulary, and the one place an error becomes a response.
//!
//! Clients (docker, containerd, containers/image) parse `{"errors":[{code,message,detail}]}`
//! and show `code: message`, so every error regate makes itself speaks that format, with the
//! status registry:2 uses for the same code (distribution `registry/api/errcode`).

use bytes::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde::Serialize;

use crate::auth::challenge::Challenge;
use crate::body::{self, Body};

/// The registry's error codes regate emits (a subset of distribution's errcode registry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Code {
    Unauthorized,
    Denied,
    NameInvalid,
    /// Nothing by that name (the admin API's unknown user or rule).
    NameUnknown,
    Unsupported,
    /// distribution spells it as one word (errcode `ErrorCodeTooManyRequests`).
    #[serde(rename = "TOOMANYREQUESTS")]
    TooManyRequests,
    Unavailable,
    Unknown,
}

impl Code {
    fn status(self) -> StatusCode {
        match self {
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::Denied => StatusCode::FORBIDDEN,
            Code::NameInvalid => StatusCode::BAD_REQUEST,
            Code::NameUnknown => StatusCode::NOT_FOUND,
            Code::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
            Code::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// One access record in an `UNAUTHORIZED` detail, spelled as registry:2 spells it
/// (`{"Type":"repository","Class":"","Name":"foo","Action":"pull"}`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct AccessDetail {
    #[serde(rename = "Type")]
    pub kind: String,
    pub class: String,
    pub name: String,
    pub action: String,
}

#[derive(Serialize)]
struct WireError<'a> {
    code: Code,
    message: &'a str,
    detail: &'a Detail,
}

/// An error's `detail`: registry:2 writes `null`, or for `UNAUTHORIZED` the access
/// records in its own field order (a `serde_json::Value` would sort them by name).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Detail {
    Access(Vec<AccessDetail>),
    Other(serde_json::Value),
}

#[derive(Serialize)]
struct WireErrors<'a> {
    errors: [WireError<'a>; 1],
    /// docker's token client prints `details` verbatim for a 401 from the realm
    /// (distribution `registry/client/errors.go` parseHTTPErrorResponse); registry routes
    /// leave it out.
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a str>,
}

/// An error answered by regate itself, never forwarded.
#[derive(Debug, Clone)]
pub struct RegistryError {
    pub code: Code,
    pub message: String,
    pub detail: Detail,
    pub status: Option<StatusCode>,
    pub challenge: Option<WwwAuthenticate>,
    /// Shown to token clients as `details` (see [`WireErrors`]).
    pub details: Option<String>,
    /// `Retry-After`, in seconds.
    pub retry_after: Option<u64>,
    /// `Connection: close`: the connection ends after this answer (HTTP/1).
    pub close: bool,
}

impl RegistryError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        RegistryError {
            code,
            message: message.into(),
            detail: Detail::Other(serde_json::Value::Null),
            status: None,
            challenge: None,
            details: None,
            retry_after: None,
            close: false,
        }
    }

    /// Ends an HTTP/1 connection after this answer.
    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = Some(status);
        self
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Detail::Other(detail);
        self
    }

    pub fn with_retry_after(mut self, wait: std::time::Duration) -> Self {
        self.retry_after = Some(wait.as_secs() + 1);
        self
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = Some(details.into());
        self
    }

    /// registry:2's 401: `UNAUTHORIZED` / "authentication required", one detail per needed
    /// action, and the Bearer challenge.
    pub fn unauthorized(challenge: Challenge) -> Self {
        let detail: Vec<AccessDetail> = challenge
            .scopes
            .iter()
            .flat_map(|s| {
                s.actions.iter().map(move |a| AccessDetail {
                    kind: s.resource_type.clone(),
                    class: String::new(),
                    name: s.name.clone(),
                    action: a.clone(),
                })
            })
            .collect();
        let mut e = RegistryError::new(Code::Unauthorized, "authentication required")
            .with_challenge(challenge);
        if !detail.is_empty() {
            e.detail = Detail::Access(detail);
        }
        e
    }

    pub fn with_challenge(mut self, challenge: Challenge) -> Self {
        self.challenge = Some(WwwAuthenticate::Bearer(Box::new(challenge)));
        self
    }

    /// The token endpoint's 401 for a refused login: `Basic realm="SERVICE"`, as
    /// docker_auth answers, so a client asks the user for a password.
    pub fn login_refused(message: impl Into<String>, service: &str) -> Self {
        let message = message.into();
        let mut e = RegistryError::new(Code::Unauthorized, message.clone()).with_details(message);
        e.challenge = Some(WwwAuthenticate::Basic {
            realm: service.to_owned(),
        });
        e
    }

    pub fn status(&self) -> StatusCode {
        self.status.unwrap_or_else(|| self.code.status())
    }

    /// The only function that turns an error into a response.
    pub fn into_response(self) -> Response<Body> {
        let wire = WireErrors {
            errors: [WireError {
                code: self.code,
                message: &self.message,
                detail: &self.detail,
            }],
            details: self.details.as_deref(),
        };
        let mut json = serde_json::to_vec(&wire).unwrap_or_default();
        json.push(b'\n');
        let mut resp = Response::new(body::full(json));
        *resp.status_mut() = self.status();
        let headers = resp.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        if self.close {
            headers.insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(secs) = self.retry_after {
            headers.insert(hyper::header::RETRY_AFTER, HeaderValue::from(secs));
        }
        let challenge = match &self.challenge {
            Some(WwwAuthenticate::Bearer(c)) => Some(c.to_string()),
            Some(WwwAuthenticate::Basic { realm }) => Some(format!("Basic realm={realm:?}")),
            None => None,
        };
        if let Some(v) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            headers.insert(hyper::header::WWW_AUTHENTICATE, v);
        }
        resp
    }
}

/// How a 401 asks for credentials.
#[derive(Debug, Clone)]
pub enum WwwAuthenticate {
    /// Registry routes: the token challenge.
    Bearer(Box<Challenge>),
    /// The token endpoint itself: a password.
    Basic { realm: String },
}

/// An OAuth2 error (RFC 6749 5.2), the token endpoint's answer to its POST form.
#[derive(Debug, Clone)]
pub struct OAuthError {
    pub error: &'static str,
    pub description: String,
}

impl OAuthError {
    pub fn new(error: &'static str, description: impl Into<String>) -> OAuthError {
        OAuthError {
            error,
            description: description.into(),
        }
    }

    pub fn into_response(self) -> Response<Body> {
        json_response(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({"error": self.error, "error_description": self.description}),
        )
    }
}

/// Every error answer regate makes: the registry's format, or OAuth2's.
#[derive(Debug, Clone)]
pub enum Failure {
    Registry(RegistryError),
    OAuth(OAuthError),
}

impl Failure {
    /// The only place a failure becomes a response.
    pub fn into_response(self) -> Response<Body> {
        match self {
            Failure::Registry(e) => e.into_response(),
            Failure::OAuth(e) => e.into_response(),
        }
    }
}

impl From<RegistryError> for Failure {
    fn from(e: RegistryError) -> Failure {
        Failure::Registry(e)
    }
}

impl From<OAuthError> for Failure {
    fn from(e: OAuthError) -> Failure {
        Failure::OAuth(e)
    }
}

/// registry:2's answer to a path its router does not know: plain text, no challenge.
pub fn not_found() -> Response<Body> {
    let mut resp = Response::new(body::full(Bytes::from_static(b"404 page not found\n")));
    *resp.status_mut() = StatusCode::NOT_FOUND;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// A small JSON body (token responses, health).
pub fn json_response(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    let json = serde_json::to_vec(value).unwrap_or_default();
    let mut resp = Response::new(body::full(json));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}
