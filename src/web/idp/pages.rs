//! The identity providers' pages as templates: the password page (the password once,
//! the login commands, the account's credentials), a failed sign-in, signing out; and
//! the words they use (a browser's name, a duration, a shell word).

use std::time::Duration;

use askama::Template;
use hyper::header::USER_AGENT;
use hyper::{Request, Response, StatusCode};

use super::super::page::{self, Shell};
use super::super::Visit;
use super::{host, shown_key};
use crate::auth::credentials::{Credential, Credentials};
use crate::auth::identity::Identity;
use crate::auth::idp::{IdpError, Kind, Provider};
use crate::body::Body;

pub(super) enum Shown<'a> {
    /// The password a sign-in made (signing out revokes it).
    AtSignIn(&'a str, &'a Credential),
    /// One made on the page ("another password").
    Made(&'a str, &'a Credential),
    Nothing,
}

pub(super) struct Command {
    tool: &'static str,
    line: String,
}

pub(super) struct Row {
    id: String,
    name: String,
    made: String,
    ends: String,
    current: bool,
    /// Signing out revokes it.
    at_sign_out: bool,
}

#[derive(Template)]
#[template(path = "idp_password.html")]
pub(super) struct PasswordPage<'a> {
    shell: Shell,
    provider: &'a str,
    action: String,
    account: &'a str,
    secret: Option<&'a str>,
    name: String,
    at_sign_in: bool,
    labels: Vec<(String, String)>,
    commands: Vec<Command>,
    validity: String,
    rows: Vec<Row>,
    notice: Option<String>,
    manage: bool,
}

#[derive(Template)]
#[template(path = "idp_failed.html")]
pub(super) struct Failed<'a> {
    shell: Shell,
    provider: &'a str,
    message: &'a str,
    again: String,
}

#[derive(Template)]
#[template(path = "idp_signed_out.html")]
pub(super) struct SignedOut<'a> {
    pub shell: Shell,
    pub provider: &'a str,
    pub again: String,
}

/// The registry's name in `docker login`: `registry_url`, else the host the browser used.
pub(super) fn registry_name<B>(provider: &Provider, req: &Request<B>) -> String {
    match &provider.settings.registry_url {
        Some(url) => url
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned(),
        None => host(req),
    }
}

pub(super) async fn password_page(
    visit: &Visit<'_>,
    registry: &str,
    provider: &Provider,
    shell: Shell,
    identity: &Identity,
    shown: Shown<'_>,
    notice: Option<String>,
) -> Response<Body> {
    let label = provider.label();
    let user = shell_quote(&identity.account);
    let commands = ["docker", "podman", "nerdctl"]
        .into_iter()
        .map(|tool| Command {
            tool,
            line: format!("{tool} login -u {user} {registry}"),
        })
        .collect();
    let validity = match &provider.settings.kind {
        Kind::Github { organization: Some(org), .. } => format!("regate asks GitHub again every {}: once you leave {org}, it stops working.", span(provider.settings.revalidate_after)),
        Kind::Gitlab { group: Some(g), .. } => format!("regate asks GitLab again every {}: once you leave {g}, it stops working.", span(provider.settings.revalidate_after)),
        Kind::Github { .. } | Kind::Gitlab { .. } => format!("regate asks {label} again every {}: once {label} no longer knows you, it stops working.", span(provider.settings.revalidate_after)),
        Kind::Oidc { .. } | Kind::Google { .. } => format!("regate asks {label} again whenever its access token runs out: once {label} no longer knows you, it stops working."),
    };
    let (secret, name, at_sign_in, current) = match shown {
        Shown::AtSignIn(s, c) => (Some(s), c.name.clone(), true, Some(c.id.clone())),
        Shown::Made(s, c) => (Some(s), c.name.clone(), false, Some(c.id.clone())),
        Shown::Nothing => (None, String::new(), false, None),
    };
    let section = provider.backend().section();
    let manage = !shell.csrf.is_empty();
    // The one this session's sign-out revokes.
    let goes_at_sign_out = match (&visit.session, at_sign_in) {
        (_, true) => current.clone(),
        (Some(s), false) => visit
            .rt
            .state
            .get(&shown_key(s))
            .await
            .ok()
            .flatten()
            .map(|id| String::from_utf8_lossy(&id).into_owned()),
        (None, false) => None,
    };
    let rows = Credentials::new(visit.rt.state.clone())
        .list(&identity.account)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.source == section)
        .map(|c| Row {
            current: current.as_deref() == Some(c.id.as_str()),
            at_sign_out: goes_at_sign_out.as_deref() == Some(c.id.as_str()),
            made: crate::auth::idp::when(c.created),
            ends: c.expires.map_or(
                "never (while the provider vouches)".to_owned(),
                crate::auth::idp::when,
            ),
            id: c.id,
            name: c.name,
        })
        .collect();
    let labels = identity
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), shorten(v)))
        .collect();
    let page = PasswordPage {
        shell,
        provider: &label,
        action: visit.href(&provider.route()),
        account: &identity.account,
        secret,
        name,
        at_sign_in,
        labels,
        commands,
        validity,
        rows,
        notice,
        manage,
    };
    page::render(&page).unwrap_or_else(|p| p.page(visit))
}

/// A sign-in that did not happen: what went wrong, and a way to sign in again.
pub(super) fn failed(
    visit: &Visit<'_>,
    provider: &Provider,
    status: StatusCode,
    message: String,
) -> Response<Body> {
    let label = provider.label();
    let page = Failed {
        shell: visit.shell(),
        provider: &label,
        message: &message,
        again: visit.href(&provider.route()),
    };
    let mut resp = page::render(&page).unwrap_or_else(|p| p.page(visit));
    *resp.status_mut() = status;
    resp
}

/// A provider's error, said for the person at the browser.
pub(super) fn failure(visit: &Visit<'_>, provider: &Provider, e: &IdpError) -> Response<Body> {
    let label = provider.label();
    let (status, message) = match e {
        IdpError::Unreachable(why) => (StatusCode::BAD_GATEWAY, format!("regate could not reach {label}: {why}. Try again later; if it keeps happening, tell the registry's administrator.")),
        IdpError::Refused(why) => (StatusCode::BAD_REQUEST, format!("{label} refused the sign-in: {why}. No password was made. Sign in again.")),
        IdpError::IdToken(why) => (StatusCode::BAD_GATEWAY, format!("{label}'s answer cannot be trusted: its id_token is not valid ({why}). No password was made. If it happens again, tell the registry's administrator.")),
        IdpError::NotAllowed(why) => (StatusCode::FORBIDDEN, format!("Signed in at {label}, but {why}, so this registry does not let you in. No password was made.")),
        IdpError::Misconfigured(why) => (StatusCode::BAD_GATEWAY, format!("regate and {label} do not agree: {why}. Tell the registry's administrator.")),
    };
    failed(visit, provider, status, message)
}

/// A label's values for the page: the first dozen, and how many more (a member of a
/// hundred teams does not need to read them all).
pub(super) fn shorten(values: &[String]) -> String {
    const SHOWN: usize = 12;
    match values.len() {
        n if n <= SHOWN => values.join(", "),
        n => format!("{}, and {} more", values[..SHOWN].join(", "), n - SHOWN),
    }
}

/// An account name as one shell word.
pub(super) fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@._-+=:,/".contains(&b));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// A duration for people: `1 hour`, `30 minutes`, `45 seconds`.
pub(super) fn span(d: Duration) -> String {
    let s = d.as_secs();
    let (n, unit) = if s >= 3600 && s.is_multiple_of(3600) {
        (s / 3600, "hour")
    } else if s >= 60 && s.is_multiple_of(60) {
        (s / 60, "minute")
    } else {
        (s, "second")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// "Chrome on Linux", "Firefox on macOS", ...: what a credential made at sign-in is called.
pub(super) fn browser_name<B>(req: &Request<B>) -> String {
    let ua = req
        .headers()
        .get(USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let browser = [
        ("Edg/", "Edge"),
        ("OPR/", "Opera"),
        ("Firefox/", "Firefox"),
        ("Chromium/", "Chromium"),
        ("Chrome/", "Chrome"),
        ("Safari/", "Safari"),
        ("curl/", "curl"),
    ]
    .iter()
    .find(|(needle, _)| ua.contains(needle))
    .map_or("a browser", |(_, name)| name);
    let system = [
        ("Android", "Android"),
        ("iPhone", "iOS"),
        ("iPad", "iPadOS"),
        ("Windows", "Windows"),
        ("Mac OS X", "macOS"),
        ("CrOS", "ChromeOS"),
        ("Linux", "Linux"),
    ]
    .iter()
    .find(|(needle, _)| ua.contains(needle))
    .map(|(_, name)| format!(" on {name}"))
    .unwrap_or_default();
    format!("{browser}{system}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_words() {
        let req = |ua: &str| Request::builder().header(USER_AGENT, ua).body(()).unwrap();
        assert_eq!(
            browser_name(&req("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0 Safari/537.36")),
            "Chrome on Linux"
        );
        assert_eq!(
            browser_name(&req("Mozilla/5.0 (Macintosh; Intel Mac OS X 14.5; rv:131.0) Gecko/20100101 Firefox/131.0")),
            "Firefox on macOS"
        );
        assert_eq!(browser_name(&Request::new(())), "a browser");
        assert_eq!(shell_quote("alice@example.com"), "alice@example.com");
        assert_eq!(shell_quote("o'brien x"), r"'o'\''brien x'");
        assert_eq!(span(Duration::from_secs(3600)), "1 hour");
        assert_eq!(span(Duration::from_secs(90)), "90 seconds");
        assert_eq!(span(Duration::from_secs(120)), "2 minutes");
    }
}
