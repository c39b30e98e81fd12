//! docker_auth's `casbin_authz` (`authz/casbin_authz.go`): a casbin model and policy file,
//! asked once per action with `(account, type, name, service, ip, action, labels)`, where
//! `labels` is the account's labels as JSON (`null` for none). docker_auth registers a
//! `labelMatch(r.labels, p.labels)` function for its model: every value the policy lists
//! for a label must be among the request's values for it. casbin decides every scope it
//! is asked about (no "no match"): what it allows of what was asked, possibly nothing.
//!
//! The policy file is read here rather than by casbin's file adapter, which cannot read
//! docker_auth's example: a JSON value quoted in CSV's way (`"{""a"":[""b""]}"`). Fields
//! are split at commas outside quotes and outside `{...}`/`[...]`, so an unquoted JSON
//! value (docker_auth's older example) reads too. `ipMatch` is regate's: casbin's own
//! panics on a bad network, and an address that does not parse simply does not match.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::task::{Context, Poll};

use casbin::function_map::OperatorFunction;
use casbin::rhai::Dynamic;
use casbin::{CoreApi, DefaultModel, Enforcer, MemoryAdapter};

use super::backend::{Authorizer, AuthzError, BoxFuture, Decided};
use crate::acl::{self, IpNet, Labels};

/// A validated `casbin_authz` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CasbinConfig {
    pub model_path: PathBuf,
    pub policy_path: PathBuf,
}

/// The enforcer, built from the two files.
pub struct Casbin {
    enforcer: Enforcer,
}

impl std::fmt::Debug for Casbin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Casbin").finish_non_exhaustive()
    }
}

impl Casbin {
    /// Reads and checks both files.
    pub fn load(config: &CasbinConfig) -> Result<Casbin, String> {
        let read =
            |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
        let model = read(&config.model_path)?;
        let policy = read(&config.policy_path)?;
        Casbin::from_text(&model, &policy).map_err(|e| {
            format!(
                "{} and {}: {e}",
                config.model_path.display(),
                config.policy_path.display()
            )
        })
    }

    /// A model and a policy, as text.
    pub fn from_text(model: &str, policy: &str) -> Result<Casbin, String> {
        let model = now(DefaultModel::from_str(model)).map_err(|e| format!("model: {e}"))?;
        let mut enforcer = now(Enforcer::new(model, MemoryAdapter::default()))
            .map_err(|e| format!("model: {e}"))?;
        for (number, line) in policy.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields = split_fields(line);
            let Some((ptype, rule)) = fields.split_first() else {
                continue;
            };
            let section = &ptype[..ptype.len().min(1)];
            let expected = enforcer
                .get_model()
                .get_model()
                .get(section)
                .and_then(|m| m.get(ptype.as_str()))
                // A role definition (`g = _, _`) lists no tokens: its width is its value's.
                .map(|a| match a.tokens.len() {
                    0 => a.value.split(',').count(),
                    n => n,
                });
            match expected {
                None => {
                    return Err(format!(
                        "policy line {}: the model defines no `{ptype}`",
                        number + 1
                    ))
                }
                Some(n) if n != rule.len() => {
                    return Err(format!(
                        "policy line {}: `{ptype}` takes {n} fields, this line has {}",
                        number + 1,
                        rule.len()
                    ))
                }
                Some(_) => {}
            }
            enforcer
                .get_mut_model()
                .add_policy(section, ptype, rule.to_vec());
        }
        enforcer
            .build_role_links()
            .map_err(|e| format!("roles: {e}"))?;
        enforcer.add_function("labelMatch", OperatorFunction::Arg2(label_match_fn));
        enforcer.add_function("ipMatch", OperatorFunction::Arg2(ip_match_fn));
        Ok(Casbin { enforcer })
    }

    /// The actions of `request` the policy allows, in the order asked.
    pub fn allowed(&self, request: &acl::Request<'_>) -> Result<Vec<String>, String> {
        let ip = request.ip.map(|ip| ip.to_string()).unwrap_or_default();
        let labels = labels_json(request.labels);
        let mut out = Vec::new();
        for action in super::ext::sorted_actions(request.actions) {
            let allowed = self
                .enforcer
                .enforce((
                    request.account,
                    request.resource_type,
                    request.name,
                    request.service,
                    ip.as_str(),
                    action.as_str(),
                    labels.as_str(),
                ))
                .map_err(|e| e.to_string())?;
            if allowed {
                out.push(action);
            }
        }
        Ok(out)
    }
}

/// Drives a future that never waits (casbin's constructors are `async` for their file
/// and database adapters; with text and a memory adapter they finish at once).
fn now<T>(future: impl std::future::Future<Output = T>) -> T {
    let mut future = std::pin::pin!(future);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => unreachable!("casbin's in-memory model and adapter do not wait"),
    }
}

/// The labels as Go's `json.Marshal` writes them (sorted keys); none is `null`.
pub fn labels_json(labels: &Labels) -> String {
    if labels.is_empty() {
        return "null".to_owned();
    }
    serde_json::to_string(labels).unwrap_or_else(|_| "null".to_owned())
}

fn parse_labels(text: &str) -> Labels {
    serde_json::from_str::<Option<Labels>>(text)
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// docker_auth's `labelMatch(request, policy)`: every value the policy lists for a label
/// is among the request's values for it.
pub fn label_match(request: &Labels, policy: &Labels) -> bool {
    policy.iter().all(|(label, wanted)| {
        let have = request.get(label).map_or(&[][..], Vec::as_slice);
        wanted.iter().all(|w| have.contains(w))
    })
}

fn text(d: Dynamic) -> String {
    d.into_string().unwrap_or_default()
}

fn label_match_fn(request: Dynamic, policy: Dynamic) -> Dynamic {
    Dynamic::from(label_match(
        &parse_labels(&text(request)),
        &parse_labels(&text(policy)),
    ))
}

/// `ipMatch(address, address-or-network)`; anything that does not parse is no match.
pub fn ip_match(ip: &str, pattern: &str) -> bool {
    match (ip.parse::<IpAddr>(), IpNet::parse(pattern)) {
        (Ok(ip), Some(net)) => net.contains(ip),
        _ => false,
    }
}

fn ip_match_fn(ip: Dynamic, pattern: Dynamic) -> Dynamic {
    Dynamic::from(ip_match(&text(ip), &text(pattern)))
}

/// One policy line's fields: split at commas outside double quotes and outside brackets,
/// each trimmed, a quoted one unquoted (`""` is a quote).
pub fn split_fields(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut depth = 0usize;
    let mut chars = line.chars().peekable();
    let mut started = false;
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            '"' if quoted => quoted = false,
            '"' if !started => {
                quoted = true;
                started = true;
            }
            ',' if !quoted && depth == 0 => {
                fields.push(field.trim().to_owned());
                field.clear();
                started = false;
            }
            c if c.is_whitespace() && !started => {}
            c => {
                if !quoted {
                    match c {
                        '{' | '[' => depth += 1,
                        '}' | ']' => depth = depth.saturating_sub(1),
                        _ => {}
                    }
                }
                started = true;
                field.push(c);
            }
        }
    }
    fields.push(field.trim().to_owned());
    fields
}

impl Authorizer for Casbin {
    fn name(&self) -> &str {
        "casbin_authz"
    }

    fn authorize<'a>(
        &'a self,
        request: &'a acl::Request<'a>,
    ) -> BoxFuture<'a, Result<Option<Decided>, AuthzError>> {
        let decided = self
            .allowed(request)
            .map(|actions| {
                Some(Decided {
                    actions,
                    rule: "casbin_authz".to_owned(),
                })
            })
            .map_err(|message| AuthzError {
                backend: "casbin_authz".to_owned(),
                message,
            });
        Box::pin(std::future::ready(decided))
    }
}

#[cfg(test)]
mod tests;
