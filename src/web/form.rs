//! A form a page posted: `application/x-www-form-urlencoded`, at most 64 KiB, decoded with
//! the one strict percent-decoder; and the check that it came from this site.

use std::collections::HashMap;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Request, StatusCode};

use super::page::Problem;
use super::session::{csrf_ok, Session};
use crate::percent::form_decode;

/// A form larger than this is not one of ours.
const LIMIT: usize = 64 * 1024;

/// A posted form's fields (the last of a repeated name wins).
pub struct Form(HashMap<String, String>);

impl Form {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn parse(encoded: &str) -> Option<Form> {
        let mut fields = HashMap::new();
        for pair in encoded.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            fields.insert(form_decode(k)?, form_decode(v)?);
        }
        Some(Form(fields))
    }
}

/// Reads the form of `req`, refusing one from another site: the browser's `Origin` (or,
/// without it, `Sec-Fetch-Site`) must say this site, and with `session`, the form's `csrf`
/// must be the session's.
pub async fn read(req: Request<Incoming>, session: Option<&Session>) -> Result<Form, Problem> {
    if !same_site(&req) {
        return Err(Problem::stale_form());
    }
    let bad = || Problem::new(StatusCode::BAD_REQUEST, "The form could not be read.");
    let body: Bytes = Limited::new(req.into_body(), LIMIT)
        .collect()
        .await
        .map_err(|_| bad())?
        .to_bytes();
    let text = std::str::from_utf8(&body).map_err(|_| bad())?;
    let form = Form::parse(text).ok_or_else(bad)?;
    if let Some(session) = session {
        if !csrf_ok(session, form.get("csrf")) {
            return Err(Problem::stale_form());
        }
    }
    Ok(form)
}

/// A request a page of this site sent: `Origin` (when the browser sends one) names the
/// host asked, and `Sec-Fetch-Site` (when sent) is not `cross-site`.
fn same_site<B>(req: &Request<B>) -> bool {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    if header("sec-fetch-site").as_deref() == Some("cross-site") {
        return false;
    }
    let Some(origin) = header("origin") else {
        return true;
    };
    let host = crate::proxy::request_host(req).and_then(|h| h.to_str().ok().map(str::to_owned));
    let origin_host = origin
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/').to_owned());
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(&h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode_strictly() {
        let f = Form::parse("username=al+ice&password=p%2Bw%26&next=%2Fui%2F").unwrap();
        assert_eq!(f.get("username"), Some("al ice"));
        assert_eq!(f.get("password"), Some("p+w&"));
        assert_eq!(f.get("next"), Some("/ui/"));
        assert!(Form::parse("a=%+1").is_none());
    }

    #[test]
    fn a_form_from_another_site_is_refused() {
        let req = |origin: Option<&str>, site: Option<&str>| {
            let mut b = Request::builder().header("host", "registry.example:5000");
            if let Some(o) = origin {
                b = b.header("origin", o);
            }
            if let Some(s) = site {
                b = b.header("sec-fetch-site", s);
            }
            b.body(()).unwrap()
        };
        assert!(same_site(&req(None, None)));
        assert!(same_site(&req(
            Some("https://registry.example:5000"),
            Some("same-origin")
        )));
        assert!(!same_site(&req(Some("https://evil.example"), None)));
        assert!(!same_site(&req(None, Some("cross-site"))));
        assert!(!same_site(&req(Some("null"), None)));
    }
}
