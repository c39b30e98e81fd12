//! docker_auth's external programs (`authn/ext_auth.go`, `authz/ext_authz.go`), run as
//! docker_auth runs them:
//!
//! - `ext_auth` gets `USER PASSWORD` on stdin (one space, no newline; the password as it
//!   is, spaces and newlines included). Exit 0: accepted, with stdout, if any, read as
//!   `{"labels": {"name": ["value", ...]}}`; 1: refused; 2: no match (the next backend
//!   is asked); anything else, or output that is not that JSON: an error (503 here, 500 in
//!   docker_auth).
//! - `ext_authz` gets docker_auth's `AuthRequestInfo` as JSON (Go's field names
//!   `Account`, `Type`, `Name`, `Service`, `IP`, `Actions`, `Labels`). Exit 0: every action
//!   asked; 1: none (a decision: no later authorizer is asked); anything else an error.
//!
//! Beyond docker_auth: each call has a time limit (then the program is killed), at most
//! `concurrency` run at once, and answers are remembered for `cache_ttl` under a keyed
//! hash of the input (no password kept). The password is written to stdin only: never to
//! the arguments, the environment or the log (stderr is logged with it blanked out).

mod run;

use serde::Serialize;

use super::backend::{Authenticator, AuthzError, BoxFuture, Decided, Described, Verdict};
use super::identity::{AuthnError, Backend, Identity};
use super::{CredentialKey, Secret};
use crate::acl::{self, Labels};

pub use run::{Exit, Program, RunError, Runner};

/// What the program said about an account and password.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Said {
    Accepted(Labels),
    Refused,
    NoMatch,
}

fn cache<V: Clone + Send + Sync + 'static>(
    program: &Program,
) -> Option<moka::sync::Cache<[u8; 32], V>> {
    (!program.cache_ttl.is_zero()).then(|| {
        moka::sync::Cache::builder()
            .max_capacity(10_000)
            .time_to_live(program.cache_ttl)
            .build()
    })
}

/// `ext_auth`.
pub struct ExtAuth {
    runner: Runner,
    cache: Option<moka::sync::Cache<[u8; 32], Said>>,
    cache_key: CredentialKey,
}

impl ExtAuth {
    pub fn new(program: Program) -> ExtAuth {
        ExtAuth {
            cache: cache(&program),
            runner: Runner::new(program),
            cache_key: CredentialKey::generate(),
        }
    }

    async fn ask(&self, account: &str, password: &Secret) -> Result<Said, AuthnError> {
        let key = self.cache_key.tag(&[account, password.expose()]);
        if let Some(said) = self.cache.as_ref().and_then(|c| c.get(&key)) {
            return Ok(said);
        }
        let input = format!("{account} {}", password.expose());
        let said = match self.runner.run(input.as_bytes()).await {
            Ok(exit) => read_authn(&exit).map_err(|why| {
                tracing::error!(
                    account,
                    command = %self.runner.program().command.display(),
                    stderr = %run::for_log(&exit.stderr, Some(password.expose())),
                    "ext_auth: {why}"
                );
                AuthnError::ProgramFailed
            })?,
            Err(e) => {
                tracing::error!(
                    account,
                    command = %self.runner.program().command.display(),
                    "ext_auth: {e}"
                );
                return Err(AuthnError::ProgramFailed);
            }
        };
        if let Some(c) = &self.cache {
            c.insert(key, said.clone());
        }
        Ok(said)
    }
}

/// docker_auth's reading of an `ext_auth` exit.
fn read_authn(exit: &Exit) -> Result<Said, String> {
    match exit.code {
        Some(0) => {
            #[derive(serde::Deserialize)]
            struct Response {
                #[serde(default)]
                labels: Option<std::collections::BTreeMap<String, Option<Vec<String>>>>,
            }
            let text = String::from_utf8_lossy(&exit.stdout);
            if text.trim().is_empty() {
                return Ok(Said::Accepted(Labels::new()));
            }
            let response: Response = serde_json::from_str(&text)
                .map_err(|e| format!("exit 0, but stdout is not {{\"labels\": {{...}}}} ({e})"))?;
            Ok(Said::Accepted(
                response
                    .labels
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.unwrap_or_default()))
                    .collect(),
            ))
        }
        Some(1) => Ok(Said::Refused),
        Some(2) => Ok(Said::NoMatch),
        Some(code) => Err(format!("exit code {code} (0, 1 or 2 expected)")),
        None => Err("ended by a signal".to_owned()),
    }
}

impl Authenticator for ExtAuth {
    fn backend(&self) -> Backend {
        Backend::ExtAuth
    }

    fn authenticate<'a>(
        &'a self,
        account: &'a str,
        password: &'a Secret,
    ) -> BoxFuture<'a, Verdict> {
        Box::pin(async move {
            match self.ask(account, password).await {
                Ok(Said::Accepted(labels)) => Verdict::Accepted(Identity {
                    account: account.to_owned(),
                    labels,
                    acl: None,
                    backend: Backend::ExtAuth,
                }),
                Ok(Said::Refused) => Verdict::Refused(AuthnError::BadCredentials),
                Ok(Said::NoMatch) => Verdict::NoMatch,
                Err(e) => Verdict::Refused(e),
            }
        })
    }

    fn is_known(&self, account: &str, password: &Secret) -> bool {
        let key = self.cache_key.tag(&[account, password.expose()]);
        self.cache
            .as_ref()
            .is_some_and(|c| matches!(c.get(&key), Some(Said::Accepted(_))))
    }

    /// The program decides only with a password.
    fn describe<'a>(
        &'a self,
        account: &'a str,
        password: Option<&'a Secret>,
    ) -> BoxFuture<'a, Described> {
        Box::pin(async move {
            let Some(password) = password else {
                return Described::Unavailable(
                    "ext_auth is asked only with a password (--password-stdin)".to_owned(),
                );
            };
            match self.ask(account, password).await {
                Ok(Said::Accepted(labels)) => Described::Found {
                    labels,
                    entry: None,
                    password_ok: Some(true),
                },
                Ok(Said::Refused) => Described::Found {
                    labels: Labels::new(),
                    entry: None,
                    password_ok: Some(false),
                },
                Ok(Said::NoMatch) => Described::NoMatch,
                Err(e) => Described::Unavailable(e.to_string()),
            }
        })
    }
}

/// docker_auth's `AuthRequestInfo`, as Go's `encoding/json` writes it.
#[derive(Serialize)]
struct RequestInfo<'a> {
    #[serde(rename = "Account")]
    account: &'a str,
    #[serde(rename = "Type")]
    type_: &'a str,
    #[serde(rename = "Name")]
    name: &'a str,
    #[serde(rename = "Service")]
    service: &'a str,
    /// Go's `net.IP` as text; none is `""`.
    #[serde(rename = "IP")]
    ip: String,
    #[serde(rename = "Actions")]
    actions: Vec<String>,
    /// A nil map is `null`.
    #[serde(rename = "Labels")]
    labels: Option<&'a Labels>,
}

/// The actions asked, as docker_auth passes them: sorted, each once.
pub fn sorted_actions(actions: &[String]) -> Vec<String> {
    let mut actions = actions.to_vec();
    actions.sort();
    actions.dedup();
    actions
}

/// The JSON an `ext_authz` program gets for a request.
pub fn request_json(request: &acl::Request<'_>) -> String {
    let info = RequestInfo {
        account: request.account,
        type_: request.resource_type,
        name: request.name,
        service: request.service,
        ip: request.ip.map(|ip| ip.to_string()).unwrap_or_default(),
        actions: sorted_actions(request.actions),
        labels: (!request.labels.is_empty()).then_some(request.labels),
    };
    serde_json::to_string(&info).unwrap_or_default()
}

/// `ext_authz`.
pub struct ExtAuthz {
    runner: Runner,
    cache: Option<moka::sync::Cache<[u8; 32], bool>>,
    cache_key: CredentialKey,
}

impl ExtAuthz {
    pub fn new(program: Program) -> ExtAuthz {
        ExtAuthz {
            cache: cache(&program),
            runner: Runner::new(program),
            cache_key: CredentialKey::generate(),
        }
    }

    /// Whether the program grants the request (every action asked) or denies it.
    async fn grants(&self, request: &acl::Request<'_>) -> Result<bool, AuthzError> {
        let input = request_json(request);
        let key = self.cache_key.tag(&[&input]);
        if let Some(granted) = self.cache.as_ref().and_then(|c| c.get(&key)) {
            return Ok(granted);
        }
        let failed = |message: String| {
            tracing::error!(
                account = request.account,
                command = %self.runner.program().command.display(),
                "ext_authz: {message}"
            );
            AuthzError {
                backend: "ext_authz".to_owned(),
                message,
            }
        };
        let exit = self
            .runner
            .run(input.as_bytes())
            .await
            .map_err(|e| failed(e.to_string()))?;
        let granted = match exit.code {
            Some(0) => true,
            Some(1) => false,
            Some(code) => {
                return Err(failed(format!(
                    "exit code {code} (0 or 1 expected); stderr: {}",
                    run::for_log(&exit.stderr, None)
                )))
            }
            None => return Err(failed("ended by a signal".to_owned())),
        };
        if let Some(c) = &self.cache {
            c.insert(key, granted);
        }
        Ok(granted)
    }
}

impl super::backend::Authorizer for ExtAuthz {
    fn name(&self) -> &str {
        "ext_authz"
    }

    fn authorize<'a>(
        &'a self,
        request: &'a acl::Request<'a>,
    ) -> BoxFuture<'a, Result<Option<Decided>, AuthzError>> {
        Box::pin(async move {
            let granted = self.grants(request).await?;
            Ok(Some(Decided {
                actions: match granted {
                    true => sorted_actions(request.actions),
                    false => Vec::new(),
                },
                rule: "ext_authz".to_owned(),
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(code: i32, stdout: &str) -> Exit {
        Exit {
            code: Some(code),
            stdout: stdout.as_bytes().to_vec(),
            stderr: Vec::new(),
        }
    }

    #[test]
    fn exits_read_as_docker_auth_reads_them() {
        assert_eq!(read_authn(&exit(0, "")), Ok(Said::Accepted(Labels::new())));
        let labels = read_authn(&exit(0, r#"{"labels":{"group":["a","b"],"x":null}}"#)).unwrap();
        let Said::Accepted(labels) = labels else {
            panic!()
        };
        assert_eq!(labels["group"], ["a", "b"]);
        assert!(labels["x"].is_empty());
        assert_eq!(read_authn(&exit(1, "")), Ok(Said::Refused));
        assert_eq!(read_authn(&exit(2, "")), Ok(Said::NoMatch));
        assert!(read_authn(&exit(3, "")).is_err());
        assert!(read_authn(&exit(0, "garbage")).is_err());
    }

    #[test]
    fn the_request_is_go_s_auth_request_info() {
        let labels = Labels::from([("g".to_owned(), vec!["x".to_owned()])]);
        let actions = vec!["push".to_owned(), "pull".to_owned()];
        let none = Labels::new();
        let mut req = acl::Request {
            account: "alice",
            labels: &labels,
            ip: Some("10.1.2.3".parse().unwrap()),
            service: "Docker registry",
            resource_type: "repository",
            name: "alice/app",
            actions: &actions,
        };
        assert_eq!(
            request_json(&req),
            r#"{"Account":"alice","Type":"repository","Name":"alice/app","Service":"Docker registry","IP":"10.1.2.3","Actions":["pull","push"],"Labels":{"g":["x"]}}"#
        );
        req.labels = &none;
        req.ip = None;
        assert!(request_json(&req).ends_with(r#""IP":"","Actions":["pull","push"],"Labels":null}"#));
    }
}
