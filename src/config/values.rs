//! Values with a syntax of their own: listen addresses, the upstream URL, robot expiry
//! dates, and the htpasswd file.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;

use super::ConfigError;
use crate::auth::users::is_bcrypt;

/// A robot's end: through the given day (UTC), or at an exact RFC 3339 time.
pub(super) fn parse_expiry(text: &str) -> Option<std::time::SystemTime> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(text, &Rfc3339) {
        return Some(t.into());
    }
    let mut parts = text.splitn(3, '-').map(|p| p.parse::<i32>().ok());
    let (Some(Some(y)), Some(Some(m)), Some(Some(d))) = (parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let month = time::Month::try_from(u8::try_from(m).ok()?).ok()?;
    let day = time::Date::from_calendar_date(y, month, u8::try_from(d).ok()?).ok()?;
    let end = day.next_day()?.midnight().assume_utc();
    Some(end.into())
}

/// `user:hash` lines, as `htpasswd -B` writes and registry:2's htpasswd auth reads;
/// blank lines and `#` comments skipped. Errors name the file and line.
pub(super) fn read_htpasswd(file: &Path) -> Result<Vec<(String, String)>, ConfigError> {
    let fail = |line: Option<usize>, message: String| ConfigError {
        file: file.to_owned(),
        position: line.map(|l| (l, 1)),
        key: None,
        message,
        hint: None,
    };
    let text = std::fs::read_to_string(file)
        .map_err(|e| fail(None, format!("cannot read the htpasswd file: {e}")))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, hash)) = line.split_once(':') else {
            return Err(fail(Some(i + 1), "not a `user:hash` line".into()));
        };
        if name.is_empty() {
            return Err(fail(Some(i + 1), "empty user name".into()));
        }
        if !is_bcrypt(hash) {
            let mut e = fail(Some(i + 1), format!("the hash of `{name}` is not bcrypt"));
            e.hint = Some("registry:2 and regate take bcrypt only: `htpasswd -B`".into());
            return Err(e);
        }
        out.push((name.to_owned(), hash.to_owned()));
    }
    Ok(out)
}

/// docker_auth's `addr`: `HOST:PORT`, or `:PORT` for every interface (Go's form).
pub(super) fn parse_listen(addr: &str) -> Result<SocketAddr, String> {
    let full = if addr.starts_with(':') {
        format!("[::]{addr}")
    } else {
        addr.to_owned()
    };
    full.to_socket_addrs()
        .map_err(|e| format!("`{addr}` is not HOST:PORT or :PORT ({e})"))?
        .next()
        .ok_or_else(|| format!("`{addr}` resolves to no address"))
}

pub(super) fn parse_upstream(url: &str) -> Result<hyper::Uri, String> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("`{url}` is not a URL ({e})"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => {
            return Err(format!(
                "`{url}` needs a scheme: http://HOST:PORT or https://HOST:PORT"
            ))
        }
    }
    if uri.authority().is_none() {
        return Err(format!("`{url}` has no host"));
    }
    if uri.path() != "/" && !uri.path().is_empty() {
        return Err(format!(
            "`{url}` has a path; registry:2 serves /v2/ at its root"
        ));
    }
    Ok(uri)
}
