//! Who is asking, and what they get: shared by the token endpoint and by Basic
//! credentials on registry routes. Throttling, the audit lines and the counters live here
//! so every way in is judged the same.

use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::acl;
use crate::error::{Code, RegistryError};
use crate::runtime::Runtime;

use super::backend::{AuthzError, Decided};
use super::identity::{AuthnError, Identity};
use super::scope::Scope;
use super::token::Access;
use super::Secret;

/// How a caller proves who it is.
pub enum Login {
    Anonymous,
    Password {
        user: String,
        password: Secret,
    },
    /// A refresh token from an earlier offline login (docker's identity token).
    Refresh(Secret),
}

#[derive(Debug)]
pub enum Refused {
    /// Too many failures for this account or address; wait this long.
    Throttled(Duration),
    Authn(AuthnError),
    /// Logged in, but an authorizer could not decide.
    Authz(AuthzError),
}

impl Refused {
    /// The answer every way in gives a refused login, unless the credentials are simply
    /// wrong: 429 for a lock (with how long to wait) or a full bcrypt pool (try again
    /// shortly), 503 for a directory that cannot answer (not 401: the password may be
    /// right, and a client must not ask the user for another one). `Err` says how the
    /// credentials were wrong; the caller knows how to ask again.
    pub fn answer(self) -> Result<RegistryError, AuthnError> {
        let too_many = |message: &str, wait: Duration| {
            RegistryError::new(Code::TooManyRequests, message)
                .with_details(message)
                .with_retry_after(wait)
        };
        match self {
            Refused::Throttled(wait) => {
                Ok(too_many("too many failed logins; try again later", wait))
            }
            Refused::Authn(e @ AuthnError::Busy) => Ok(too_many(&e.to_string(), Duration::ZERO)),
            Refused::Authn(e) if e.is_unavailable() => Ok(RegistryError::new(
                Code::Unavailable,
                e.to_string(),
            )
            .with_details(e.to_string())),
            Refused::Authn(e) => Err(e),
            Refused::Authz(e) => Ok(unavailable(e)),
        }
    }
}

/// An authorizer that could not decide: 503, with the cause in the log only.
pub fn unavailable(e: AuthzError) -> RegistryError {
    tracing::error!("authorization failed: {e}");
    let message = "the access rules could not be read; try again later";
    RegistryError::new(Code::Unavailable, message).with_details(message)
}

/// The longest a refused login (locked, or bcrypt too busy) is held before its 429; a
/// locked one is held a quarter of what is left of its lock, at most this, so the answer
/// still comes well inside the lock and `Retry-After` still means what it says.
///
/// A tarpit: a spray is a closed loop (each connection sends its next guess when the
/// last is answered), so answering at once invites the next guess at once, and a spray
/// of 300 connections from a locked address still made ~19,000 requests a second that
/// regate had to parse, log and answer (a 1 GiB GET alongside fell to 0.29 of its
/// speed). Held for a second, the same spray sends ~300 a second. A waiting refusal costs
/// a timer, not a thread or a core; a legitimate client that is locked out waits one
/// second more than `Retry-After` already tells it to.
pub const TARPIT: Duration = Duration::from_secs(1);

async fn tarpit(wait: Duration) {
    tokio::time::sleep((wait / 4).min(TARPIT)).await;
}

/// Authenticates a login, with throttling, audit lines and counters.
pub async fn identify(rt: &Runtime, login: &Login, client_ip: IpAddr) -> Result<Identity, Refused> {
    // A named account with a password: what the throttle counts and the audit names.
    let claimed = match login {
        Login::Password { user, password } if !user.is_empty() => Some((user.as_str(), password)),
        _ => None,
    };
    // Counted when it starts, settled below: concurrent guesses cannot all pass before
    // the first failure is counted (throttle.rs).
    let attempt = match claimed {
        None => None,
        Some((user, password)) => {
            let known = rt.logins.is_known(user, password);
            match rt.throttle.begin(user, password, client_ip, known).await {
                Ok(attempt) => Some(attempt),
                Err(wait) => {
                    rt.metrics.throttled.fetch_add(1, Relaxed);
                    tracing::info!(
                        target: "regate::audit",
                        client = %client_ip,
                        account = user,
                        outcome = "throttled",
                        retry_after_secs = wait.as_secs() + 1,
                        "login refused"
                    );
                    tarpit(wait).await;
                    return Err(Refused::Throttled(wait));
                }
            }
        }
    };
    let result = match login {
        Login::Anonymous => rt.users.anonymous(),
        Login::Password { user, password } => rt.logins.authenticate(user, password).await,
        Login::Refresh(token) => match rt.tokens.verify_refresh(token.expose()) {
            Ok(r)
                if rt
                    .revocations
                    .is_revoked(&r.account, &r.jti, r.issued_at)
                    .await =>
            {
                Err(AuthnError::StaleRefresh)
            }
            Ok(r) => rt.users.refresh_identity(&r.account, &r.fingerprint),
            Err(_) => Err(AuthnError::StaleRefresh),
        },
    };
    match result {
        Ok(identity) => {
            if let Some(attempt) = attempt {
                attempt.succeeded().await;
            }
            Ok(identity)
        }
        Err(e) => {
            // A directory that cannot answer, or bcrypt too busy to look, says nothing
            // about the password: the attempt is released uncounted (dropped).
            let outcome = match e {
                AuthnError::DirectoryUnavailable => "directory_unavailable",
                AuthnError::ProviderUnavailable => "provider_unavailable",
                AuthnError::DatabaseUnavailable => "database_unavailable",
                AuthnError::ProgramFailed => "program_failed",
                AuthnError::Busy => {
                    rt.metrics.throttled.fetch_add(1, Relaxed);
                    tokio::time::sleep(TARPIT).await;
                    "busy"
                }
                _ => {
                    rt.metrics.auth_failures.fetch_add(1, Relaxed);
                    if let (Some(attempt), Some((_, password))) = (attempt, claimed) {
                        attempt.failed(password).await;
                    }
                    "authentication_failed"
                }
            };
            tracing::info!(
                target: "regate::audit",
                client = %client_ip,
                account = claimed.map_or("", |(user, _)| user),
                outcome,
                reason = %e.detail(),
                "login refused"
            );
            Err(Refused::Authn(e))
        }
    }
}

/// The actions to ask the ACL about. A request for `*` on a repository (skopeo delete)
/// is a request for everything: ask for each action too, so a rule listing pull, push
/// and delete grants them. `registry:catalog:*` stays literal: registry:2 wants the `*`
/// itself there.
pub fn requested_actions(scope: &Scope) -> Vec<String> {
    let mut requested = scope.actions.clone();
    if scope.resource_type == "repository" && requested.iter().any(|a| a == "*") {
        for a in ["pull", "push", "delete"] {
            if !requested.iter().any(|r| r == a) {
                requested.push(a.to_owned());
            }
        }
    }
    requested
}

/// One decision per requested scope; every scope is listed in the result, with no actions
/// where denied (docker_auth does the same). The static `acl` first (a robot is judged by
/// its own rules only); a scope no rule of it matches goes to the other authorizers in
/// turn. One that cannot decide fails the whole request.
pub async fn decide(
    rt: &Runtime,
    identity: &Identity,
    client_ip: IpAddr,
    scopes: &[Scope],
) -> Result<Vec<Access>, AuthzError> {
    let mut out = Vec::with_capacity(scopes.len());
    for scope in scopes {
        let judged = judge(rt, identity, client_ip, scope, true).await?;
        if judged.actions.is_empty() {
            tracing::info!(
                client = %client_ip,
                account = %identity.account,
                scope = %scope,
                "denied: {}",
                judged.why.as_deref().unwrap_or("no rule matched")
            );
        }
        tracing::info!(
            target: "regate::audit",
            client = %client_ip,
            account = %identity.account,
            backend = %identity.backend,
            scope = %scope,
            granted = %judged.actions.join(","),
            rule = %judged.rule,
            "token decision"
        );
        let counter = if judged.actions.is_empty() {
            &rt.metrics.scopes_denied
        } else {
            &rt.metrics.scopes_granted
        };
        counter.fetch_add(1, Relaxed);
        out.push(Access {
            resource_type: scope.resource_type.clone(),
            name: scope.name.clone(),
            actions: judged.actions,
        });
    }
    Ok(out)
}

/// What [`decide`] grants, decided by the same rules and authorizers, without its audit
/// lines and counters: for showing what someone may see. The web pages ask this about
/// every repository of the catalog to filter it, and a page view is not a token request
/// (10,000 audit lines for one list would drown the ones that matter).
pub async fn granted(
    rt: &Runtime,
    identity: &Identity,
    client_ip: IpAddr,
    scopes: &[Scope],
) -> Result<Vec<Access>, AuthzError> {
    let mut out = Vec::with_capacity(scopes.len());
    for scope in scopes {
        let judged = judge(rt, identity, client_ip, scope, false).await?;
        out.push(Access {
            resource_type: scope.resource_type.clone(),
            name: scope.name.clone(),
            actions: judged.actions,
        });
    }
    Ok(out)
}

/// One scope judged: what it is granted, the rule that decided (`acl[3] (comment)`), and,
/// when asked for, why every earlier rule did not match.
struct Judged {
    actions: Vec<String>,
    rule: String,
    why: Option<String>,
}

async fn judge(
    rt: &Runtime,
    identity: &Identity,
    client_ip: IpAddr,
    scope: &Scope,
    explain: bool,
) -> Result<Judged, AuthzError> {
    let rules = identity.acl.as_deref().unwrap_or(&rt.acl);
    let list = || match identity.acl {
        Some(_) => format!("robots.{}.acl", identity.account),
        None => "acl".to_owned(),
    };
    let requested = requested_actions(scope);
    let request = acl::Request {
        account: &identity.account,
        labels: &identity.labels,
        ip: Some(client_ip),
        service: rt.tokens.service(),
        resource_type: &scope.resource_type,
        name: &scope.name,
        actions: &requested,
    };
    let decision = rules.authorize(&request);
    // Only a denial that is logged needs the reasons, and its line names the first few
    // rules only: each costs a string, and a denial must not cost one per rule.
    let why = (explain && decision.actions.is_empty()).then(|| {
        rules
            .explain_first(&request, acl::LOG_SKIPPED)
            .reason(rules, &list())
    });
    let (actions, rule) = match decision.rule {
        Some(i) => {
            let comment = rules
                .comment(i)
                .map(|c| format!(" ({c})"))
                .unwrap_or_default();
            (decision.actions, format!("{}[{i}]{comment}", list()))
        }
        // A robot's rules are its only ones.
        None if identity.acl.is_some() => (Vec::new(), "no rule matched".to_owned()),
        None => match ask_others(rt, &request).await? {
            Some(decided) => (decided.actions, decided.rule),
            None => (Vec::new(), "no rule matched".to_owned()),
        },
    };
    Ok(Judged { actions, rule, why })
}

/// The authorizers after the static `acl`, in order: the first that decides.
async fn ask_others(
    rt: &Runtime,
    request: &acl::Request<'_>,
) -> Result<Option<Decided>, AuthzError> {
    for authorizer in &rt.authorizers {
        if let Some(decided) = authorizer.authorize(request).await? {
            return Ok(Some(decided));
        }
    }
    Ok(None)
}
