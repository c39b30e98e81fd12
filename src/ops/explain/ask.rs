//! What `regate explain` asks beyond the static users and rules: the login backends after
//! `users`, and the authorizers after the `acl`, as a token request asks them, each on a
//! thread with a small runtime of its own (explain is synchronous, and may be called
//! inside a runtime or outside one).

use std::sync::Arc;

use crate::acl;
use crate::acl::Labels;
use crate::auth::backend::{Decided, Described};
use crate::auth::identity::Backend;
use crate::auth::Secret;
use crate::config::Config;

use super::Password;

/// What the login backends after `users` say about an account `users` lacks: the first
/// that knows it, or the first that could not be asked.
pub(super) enum Asked {
    Found {
        backend: Backend,
        dn: String,
        labels: Labels,
        password: Option<Password>,
    },
    Missing,
    Failed(Backend, String),
}

/// Asks the same chain of login backends `/auth` asks (`runtime::logins`), from a thread
/// of its own with a small runtime: explain is synchronous, and may be called inside a
/// runtime or outside one.
pub(super) fn ask_backends(config: &Config, account: &str, password: Option<&Secret>) -> Asked {
    let ask = async {
        // The store `serve` keeps (the providers' token DB), read-only here.
        let state: Arc<dyn crate::state::Store> = match crate::runtime::Lasting::for_config(config)
        {
            Ok(lasting) => lasting.state,
            Err(_) => Arc::new(crate::state::Local::memory()),
        };
        let logins = crate::runtime::logins(config, Arc::default(), Arc::default(), state)
            .map_err(|e| e.to_string())?;
        // The static users are judged below with the token endpoint's own functions (they
        // describe nobody here).
        for backend in logins.backends() {
            match backend.describe(account, password).await {
                Described::NoMatch => continue,
                Described::Unavailable(e) => return Ok(Asked::Failed(backend.backend(), e)),
                Described::Found {
                    labels,
                    entry,
                    password_ok,
                } => {
                    return Ok(Asked::Found {
                        backend: backend.backend(),
                        dn: entry.unwrap_or_default(),
                        labels,
                        password: password_ok.map(|ok| match ok {
                            true => Password::Correct,
                            false => Password::Wrong,
                        }),
                    })
                }
            }
        }
        Ok::<_, String>(Asked::Missing)
    };
    let run = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?
            .block_on(ask)
    };
    let answer = std::thread::scope(|s| s.spawn(run).join());
    match answer {
        Ok(Ok(asked)) => asked,
        Ok(Err(e)) => Asked::Failed(Backend::Users, e),
        Err(_) => Asked::Failed(Backend::Users, "the lookup failed".into()),
    }
}

/// What the authorizers after the static `acl` decide for each request (`None` where
/// the `acl` decided), asked as a token request asks them.
pub(super) fn ask_authorizers(
    config: &Config,
    requests: &[Option<acl::Request<'_>>],
) -> Vec<Option<Result<Option<Decided>, String>>> {
    let ask = async {
        let rules = crate::runtime::sql_rules(config, None);
        let authorizers = match crate::runtime::authorizers(config, rules) {
            Ok(a) => a,
            Err(e) => {
                let e = e.to_string();
                return requests.iter().map(|r| r.map(|_| Err(e.clone()))).collect();
            }
        };
        let mut out = Vec::new();
        for request in requests {
            let Some(request) = request else {
                out.push(None);
                continue;
            };
            let mut decided = Ok(None);
            for authorizer in &authorizers {
                match authorizer.authorize(request).await {
                    Ok(None) => continue,
                    Ok(Some(d)) => {
                        decided = Ok(Some(d));
                        break;
                    }
                    Err(e) => {
                        decided = Err(e.to_string());
                        break;
                    }
                }
            }
            out.push(Some(decided));
        }
        out
    };
    let run = || match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(ask),
        Err(e) => requests
            .iter()
            .map(|r| r.map(|_| Err(e.to_string())))
            .collect(),
    };
    std::thread::scope(|s| s.spawn(run).join())
        .unwrap_or_else(|_| requests.iter().map(|_| None).collect())
}
