//! "My access": what the signed-in user may do on a repository, and the rule that
//! decides, so "why can't I push?" has an answer. The actions come from `decide` (what a
//! token request would get, with its audit line); the rule from `regate explain`'s own
//! report, for the same account, labels and address.
//!
//! Everyone sees the deciding rule (its place, comment and actions); only admins also see
//! why each earlier rule did not match, which names other accounts and other
//! repositories' patterns.

use askama::Template;
use hyper::{Response, StatusCode};

use super::form::Form;
use super::page::{self, Problem, Shell};
use super::Visit;
use crate::auth::authorize::decide;
use crate::auth::scope::Scope;
use crate::body::Body;
use crate::ops::explain;

const ACTIONS: [&str; 3] = ["pull", "push", "delete"];

#[derive(Template)]
#[template(path = "access.html")]
struct AccessPage {
    shell: Shell,
    account: String,
    backend: String,
    labels: String,
    address: String,
    repository: String,
    error: Option<String>,
    answer: Option<Answer>,
}

struct Answer {
    rows: Vec<(&'static str, bool, &'static str)>,
    /// `acl[3] "everyone pulls"`, or why there is none.
    rule: Option<String>,
    rule_actions: String,
    /// One sentence on what to do about a denial.
    advice: Option<String>,
    /// `regate explain`'s report, for admins.
    report: Option<String>,
}

fn what(action: &str) -> &'static str {
    match action {
        "pull" => "download images (docker pull)",
        "push" => "upload images and tags (docker push, with pull)",
        _ => "delete images and tags",
    }
}

pub async fn page(visit: &Visit<'_>, query: &str) -> Result<Response<Body>, Problem> {
    let Some(session) = &visit.session else {
        return Ok(visit.sign_in_first());
    };
    let form = Form::parse(query).ok_or_else(|| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "The address of this page is not valid.",
        )
    })?;
    let repository = form.get("repository").unwrap_or("").trim().to_owned();
    let identity = session.identity();
    let mut status = StatusCode::OK;
    let mut error = None;
    let mut answer = None;
    if !repository.is_empty() && !crate::route::valid_name(&repository) {
        status = StatusCode::BAD_REQUEST;
        error = Some(format!(
            "\u{201c}{repository}\u{201d} is not a repository name: lower-case letters, digits and . _ - separators, in parts joined by /."
        ));
    } else if !repository.is_empty() {
        let scope = Scope::new("repository", &repository, &ACTIONS);
        let decided = decide(
            visit.rt,
            &identity,
            visit.client_ip,
            std::slice::from_ref(&scope),
        )
        .await
        .map_err(|e| {
            tracing::error!("My access could not decide: {e}");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "The access rules could not be read. Try again later.",
            )
        })?;
        let granted: Vec<String> = decided.into_iter().flat_map(|a| a.actions).collect();
        // `regate explain` for the same account, labels and address. It may ask the LDAP
        // directory about the account, which blocks: off the async workers.
        let config = visit.rt.config.clone();
        let (account, labels, ip) = (
            identity.account.clone(),
            identity.labels.clone(),
            visit.client_ip,
        );
        let report = tokio::task::spawn_blocking(move || {
            let scopes = [scope];
            explain::explain(
                &config,
                &explain::Input {
                    account: &account,
                    password: None,
                    ip: Some(ip),
                    labels: Some(&labels),
                    scopes: &scopes,
                },
            )
        })
        .await
        .map_err(|_| {
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "This page could not be shown.",
            )
        })?;
        let scope = report.scopes.first();
        let rule = scope.and_then(|s| {
            s.rule
                .map(|i| crate::acl::rule_name(&report.acl, i, s.comment.as_deref()))
        });
        let rule_actions = scope
            .and_then(|s| s.rule_actions.clone())
            .map(|a| match a.as_slice() {
                [all] if all == "*" => "every action asked for (\"*\")".to_owned(),
                [] => "nothing".to_owned(),
                a => a.join(", "),
            })
            .unwrap_or_default();
        let may = |a: &str| granted.iter().any(|g| g == a);
        let denied: Vec<&str> = ACTIONS.into_iter().filter(|a| !may(a)).collect();
        let advice = (!denied.is_empty()).then(|| match &rule {
            Some(r) => format!(
                "{r} is the first rule that matches you on {repository}, and it does not grant {}. To get {}, ask an administrator to change that rule or to add one before it.",
                denied.join(" or "),
                if denied.len() == 1 { "it" } else { "them" },
            ),
            None => format!(
                "No rule matches you on {repository}, so everything there is denied by default. Ask an administrator for a rule."
            ),
        });
        answer = Some(Answer {
            rows: ACTIONS.into_iter().map(|a| (a, may(a), what(a))).collect(),
            rule,
            rule_actions,
            advice,
            report: visit.admin.then(|| report.to_text()),
        });
    }
    let mut shell = visit.shell();
    shell.current = "access";
    let labels = if identity.labels.is_empty() {
        "none".to_owned()
    } else {
        identity
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={}", v.join("|")))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut resp = page::render(&AccessPage {
        shell,
        account: identity.account.clone(),
        backend: identity.backend.section().to_owned(),
        labels,
        address: visit.client_ip.to_string(),
        repository,
        error,
        answer,
    })?;
    *resp.status_mut() = status;
    Ok(resp)
}
