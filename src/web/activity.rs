//! Activity, for admins: recent pushes, deletes and refused logins from the audit log
//! (this process's [`journal`]), filtered, with pushes and pulls per day as a small chart,
//! and the same rows as CSV.
//!
//! An admin is whoever the ACL grants `read` on `regate:activity` (type `regate`, name
//! `activity`), decided like any scope: `{account: admin}, actions: ["*"]` makes one, as
//! does `{labels: {group: ops}, type: regate, name: activity}, actions: [read]`. `read`
//! is no registry action, so no pull rule (`actions: [pull]` for everyone) makes an admin.

use std::net::IpAddr;

use askama::Template;
use hyper::header::{HeaderValue, CONTENT_DISPOSITION, CONTENT_TYPE};
use hyper::{Response, StatusCode};

use super::form::Form;
use super::format;
use super::journal::{journal, Event, Kind};
use super::page::{self, Problem, Shell};
use super::{url_encode, Visit};
use crate::auth::authorize::{decide, granted};
use crate::auth::identity::Identity;
use crate::auth::scope::Scope;
use crate::body::{self, Body};
use crate::runtime::Runtime;

/// Rows on the page (the CSV has all kept).
const SHOWN: usize = 200;
/// Days in the chart.
const CHART_DAYS: u64 = 14;

fn scope() -> Scope {
    Scope::new("regate", "activity", &["read"])
}

/// Whether the ACL makes `identity` an admin (for the menu: no audit line per page).
pub async fn is_admin(rt: &Runtime, identity: &Identity, client_ip: IpAddr) -> bool {
    granted(rt, identity, client_ip, &[scope()])
        .await
        .is_ok_and(|g| g.iter().any(|a| a.actions.iter().any(|x| x == "read")))
}

#[derive(Template)]
#[template(path = "activity.html")]
struct ActivityPage {
    shell: Shell,
    since: String,
    kind: String,
    account: String,
    repository: String,
    rows: Vec<Row>,
    matching: usize,
    csv: String,
    bars: Vec<Bar>,
    days: Vec<DayRow>,
    top: u64,
}

struct Row {
    time: String,
    what: &'static str,
    kind: &'static str,
    account: String,
    subject: String,
    client: String,
    detail: String,
}

/// One day's two bars, in the chart's units (`viewBox` 0 0 700 170, bars up to 130 high).
struct Bar {
    x: u64,
    push_y: u64,
    push_h: u64,
    pull_x: u64,
    pull_y: u64,
    pull_h: u64,
    label: String,
    show_label: bool,
    pushes: u64,
    pulls: u64,
}

struct DayRow {
    day: String,
    pushes: u64,
    pulls: u64,
}

fn what(kind: Kind) -> &'static str {
    match kind {
        Kind::Push => "push",
        Kind::Delete => "delete",
        Kind::RefusedLogin => "refused login",
    }
}

fn day_label(day: u64) -> String {
    format::utc(day * 86_400)[5..10].to_owned()
}

pub async fn page(visit: &Visit<'_>, query: &str) -> Result<Response<Body>, Problem> {
    let Some(session) = &visit.session else {
        return Ok(visit.sign_in_first());
    };
    let decided = decide(visit.rt, &session.identity(), visit.client_ip, &[scope()])
        .await
        .map_err(|_| {
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "The access rules could not be read. Try again later.",
            )
        })?;
    if !decided
        .iter()
        .any(|a| a.actions.iter().any(|x| x == "read"))
    {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "Only administrators see the activity: a rule granting read on regate:activity makes one.",
        ));
    }
    let form = Form::parse(query).ok_or_else(|| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "The address of this page is not valid.",
        )
    })?;
    let kind_key = form.get("kind").unwrap_or("").to_owned();
    let kind = Kind::from_key(&kind_key);
    let account = form.get("account").unwrap_or("").trim().to_owned();
    let repository = form.get("repository").unwrap_or("").trim().to_owned();
    let keep = |e: &Event| {
        kind.is_none_or(|k| e.kind == k)
            && (account.is_empty() || e.account == account)
            && (repository.is_empty() || e.repository.contains(&repository))
    };
    let csv = form.get("format") == Some("csv");
    let (events, matching) = journal().events(keep, if csv { usize::MAX } else { SHOWN });
    if csv {
        return Ok(csv_response(&events));
    }
    let today = format::now() / 86_400;
    let days = journal().days(today, CHART_DAYS);
    let top = days
        .iter()
        .map(|(_, d)| d.pulls.max(d.pushes))
        .max()
        .unwrap_or(0)
        .max(1);
    let height = |n: u64| if n == 0 { 0 } else { (n * 130 / top).max(2) };
    let bars = days
        .iter()
        .enumerate()
        .map(|(i, (day, d))| {
            let x = 40 + i as u64 * 47;
            Bar {
                x,
                push_y: 140 - height(d.pushes),
                push_h: height(d.pushes),
                pull_x: x + 18,
                pull_y: 140 - height(d.pulls),
                pull_h: height(d.pulls),
                label: day_label(*day),
                show_label: i % 2 == 1,
                pushes: d.pushes,
                pulls: d.pulls,
            }
        })
        .collect();
    let rows = events
        .iter()
        .map(|e| Row {
            time: format::utc(e.time),
            what: what(e.kind),
            kind: e.kind.key(),
            account: e.account.clone(),
            subject: match e.kind {
                Kind::RefusedLogin => String::new(),
                _ if e.reference.contains(':') => {
                    format!("{}@{}", e.repository, format::short_digest(&e.reference))
                }
                _ => format!("{}:{}", e.repository, e.reference),
            },
            client: e.client.clone(),
            detail: match e.kind {
                Kind::RefusedLogin => e.detail.clone(),
                _ => format::short_digest(&e.detail),
            },
        })
        .collect();
    let mut csv_href = visit.href("/ui/activity?format=csv");
    for (k, v) in [
        ("kind", &kind_key),
        ("account", &account),
        ("repository", &repository),
    ] {
        if !v.is_empty() {
            csv_href.push_str(&format!("&{k}={}", url_encode(v)));
        }
    }
    let mut shell = visit.shell();
    shell.current = "activity";
    page::render(&ActivityPage {
        shell,
        since: format::utc(journal().started()),
        kind: kind_key,
        account,
        repository,
        rows,
        matching,
        csv: csv_href,
        bars,
        days: days
            .iter()
            .rev()
            .map(|(day, d)| DayRow {
                day: format::utc(day * 86_400)[..10].to_owned(),
                pushes: d.pushes,
                pulls: d.pulls,
            })
            .collect(),
        top,
    })
}

/// The rows as CSV (RFC 4180), newest first.
fn csv_response(events: &[Event]) -> Response<Body> {
    let field = |s: &str| {
        // A cell starting with = + - @ is a formula to a spreadsheet: quote it as text.
        let s = if s.starts_with(['=', '+', '-', '@']) {
            format!("'{s}")
        } else {
            s.to_owned()
        };
        format!("\"{}\"", s.replace('"', "\"\""))
    };
    let mut out = String::from("time,event,account,repository,reference,client,detail\r\n");
    for e in events {
        let cells = [
            format::utc(e.time),
            what(e.kind).to_owned(),
            e.account.clone(),
            e.repository.clone(),
            e.reference.clone(),
            e.client.clone(),
            e.detail.clone(),
        ];
        let line: Vec<String> = cells.iter().map(|c| field(c)).collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    let mut resp = Response::new(body::full(out));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    resp.headers_mut().insert(
        CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"regate-activity.csv\""),
    );
    resp
}
