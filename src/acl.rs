//! docker_auth-compatible static ACL: (account, labels, ip, service, scope) -> granted actions.
//!
//! Semantics follow cesanta/docker_auth `authz/acl.go`, because configs are copied from it
//! verbatim: rules are tried in order, the first rule whose `match` fits decides (even when
//! it grants nothing), and no matching rule means deny. Patterns are Go `path.Match` globs
//! unless written `/like this/`, which makes them unanchored regular expressions.
//!
//! Everything that can be checked is checked in [`Acl::compile`], so a config that loads
//! never fails while authorizing; a pattern that only becomes invalid after placeholder
//! substitution simply does not match, as in docker_auth.

use std::collections::BTreeMap;
use std::net::IpAddr;

use regex::Regex;

mod glob;
mod index;
mod ip;
mod pattern;
mod reason;

pub use pattern::{placeholders, Piece};
pub use reason::{rule_name, LOG_SKIPPED};

use index::Index;
pub use ip::IpNet;
use pattern::{quote_meta, Context, Pattern, RegexCache};

/// A user's labels as returned by authentication: name -> values.
pub type Labels = BTreeMap<String, Vec<String>>;

/// One `acl:` entry as written in a docker_auth config.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEntry {
    #[serde(rename = "match", default)]
    pub match_: RawMatch,
    /// docker_auth crashes on a missing `actions`; an explicit deny is the safe reading.
    #[serde(default)]
    pub actions: Vec<String>,
    #[serde(default)]
    pub comment: Option<String>,
}

/// The `match:` conditions of an entry; an absent field matches anything.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    pub account: Option<String>,
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub name: Option<String>,
    pub service: Option<String>,
    pub ip: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
}

/// A rule that cannot be compiled, located as `acl[index].field`.
#[derive(Debug, thiserror::Error)]
#[error("acl[{index}].{field}: {message}")]
pub struct AclError {
    pub index: usize,
    /// e.g. `match.name`, `match.ip`, `match.labels.team`.
    pub field: String,
    pub message: String,
}

/// One scope of one token request, as seen by the ACL.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `""` for anonymous.
    pub account: &'a str,
    pub labels: &'a Labels,
    pub ip: Option<IpAddr>,
    pub service: &'a str,
    pub resource_type: &'a str,
    pub name: &'a str,
    pub actions: &'a [String],
}

/// The outcome for one scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Granted actions, sorted and deduplicated; empty means denied.
    pub actions: Vec<String>,
    /// 0-based index of the deciding rule; `None` when no rule matched.
    pub rule: Option<usize>,
}

/// A decision plus, for the rules before the deciding one, why each did not match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub decision: Decision,
    /// The first rules before the deciding one (all of them, or all when none decided),
    /// each with why it did not match.
    pub skipped: Vec<(usize, String)>,
    /// How many more rules came before the deciding one than `skipped` describes.
    pub unexplained: usize,
}

/// The compiled ACL.
#[derive(Debug)]
pub struct Acl {
    rules: Vec<Rule>,
    /// Which rules can match which requests, so a decision need not try them all.
    index: Index,
    /// The entries as written, for `regate check` and `regate explain`.
    entries: Vec<RawEntry>,
    /// Patterns with placeholders become new regexes per request; the same few recur.
    regexes: RegexCache,
}

impl Acl {
    /// Compiles the rules; every rule that does not compile is reported.
    pub fn compile(entries: &[RawEntry]) -> Result<Acl, Vec<AclError>> {
        let mut rules = Vec::with_capacity(entries.len());
        let mut errors = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            match Rule::compile(index, entry) {
                Ok(rule) => rules.push(rule),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Acl {
            index: Index::build(&rules),
            rules,
            entries: entries.to_vec(),
            regexes: RegexCache::default(),
        })
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The entries as written in the config, in order (index `i` is `acl[i]`).
    pub fn entries(&self) -> &[RawEntry] {
        &self.entries
    }

    pub fn comment(&self, index: usize) -> Option<&str> {
        self.rules.get(index)?.comment.as_deref()
    }

    /// Rules whose `account` can match exactly one account (no glob syntax, regex or
    /// placeholder), with that account. Lets a config check flag names no user has, like
    /// the seed's `hussien`.
    pub fn literal_accounts(&self) -> impl Iterator<Item = (usize, &str)> {
        self.rules.iter().enumerate().filter_map(|(index, rule)| {
            let pattern = rule.fields[Field::Account as usize].as_ref()?;
            pattern
                .is_literal()
                .then_some((index, pattern.raw.as_str()))
        })
    }

    /// Decides one scope. The first matching rule decides, even if it grants nothing.
    /// Only the rules that can match are tried (see `index.rs`), in the order written.
    pub fn authorize(&self, req: &Request<'_>) -> Decision {
        self.first_match(req, self.index.candidates(req))
    }

    /// [`Acl::authorize`] by trying every rule in turn, as docker_auth does: the
    /// reference the index is tested against.
    pub fn authorize_by_scan(&self, req: &Request<'_>) -> Decision {
        self.first_match(req, 0..self.rules.len())
    }

    /// [`Acl::authorize`]'s decision, and why each rule before the deciding one did not
    /// match.
    pub fn explain(&self, req: &Request<'_>) -> Explanation {
        self.explain_first(req, usize::MAX)
    }

    /// As [`Acl::explain`], describing only the first `limit` rules before the deciding
    /// one: a log line names a few, and a denial must not cost a string per rule.
    pub fn explain_first(&self, req: &Request<'_>, limit: usize) -> Explanation {
        let decision = self.authorize(req);
        let before = decision.rule.unwrap_or(self.rules.len());
        let skipped: Vec<(usize, String)> = self.rules[..before]
            .iter()
            .enumerate()
            .take(limit)
            .map(|(index, rule)| {
                let why = match rule.mismatch(req, &self.regexes) {
                    Some(why) => why.describe(rule, req),
                    // The index left out a rule that matches: a bug the tests look for.
                    None => "matches, yet was not tried (please report this)".to_owned(),
                };
                (index, why)
            })
            .collect();
        Explanation {
            unexplained: before - skipped.len(),
            decision,
            skipped,
        }
    }

    /// The first of `order` (ascending rule indexes) that matches decides.
    fn first_match(&self, req: &Request<'_>, order: impl Iterator<Item = usize>) -> Decision {
        for index in order {
            let rule = &self.rules[index];
            if rule.mismatch(req, &self.regexes).is_none() {
                return Decision {
                    actions: rule.grant(req.actions),
                    rule: Some(index),
                };
            }
        }
        Decision {
            actions: Vec::new(),
            rule: None,
        }
    }
}

/// The request fields a pattern can test and a placeholder can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Account = 0,
    Type = 1,
    Name = 2,
    Service = 3,
}

impl Field {
    const ALL: [Field; 4] = [Field::Account, Field::Type, Field::Name, Field::Service];

    pub fn key(self) -> &'static str {
        match self {
            Field::Account => "account",
            Field::Type => "type",
            Field::Name => "name",
            Field::Service => "service",
        }
    }

    pub fn from_key(key: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|field| field.key() == key)
    }

    fn value<'a>(self, req: &Request<'a>) -> &'a str {
        match self {
            Field::Account => req.account,
            Field::Type => req.resource_type,
            Field::Name => req.name,
            Field::Service => req.service,
        }
    }
}

#[derive(Debug)]
struct Rule {
    /// Indexed by `Field as usize`.
    fields: [Option<Pattern>; 4],
    ip: Option<(String, IpNet)>,
    labels: Vec<(String, Pattern)>,
    /// Regexes behind the `${field:N}` placeholders of this rule.
    captures: Vec<CaptureSource>,
    grant: Grant,
    comment: Option<String>,
}

#[derive(Debug)]
enum Grant {
    /// `["*"]` exactly: whatever was asked for.
    All,
    /// Sorted and deduplicated; a `"*"` here is just a string that grants a requested `*`.
    Only(Vec<String>),
}

#[derive(Debug)]
struct CaptureSource {
    field: Field,
    group: usize,
    regex: Regex,
}

impl Rule {
    fn compile(index: usize, entry: &RawEntry) -> Result<Rule, AclError> {
        let error = |field: String, message: String| AclError {
            index,
            field,
            message,
        };
        let m = &entry.match_;
        let raw_fields = [&m.account, &m.type_, &m.name, &m.service];
        let mut fields: [Option<Pattern>; 4] = Default::default();
        for (field, raw) in Field::ALL.into_iter().zip(raw_fields) {
            if let Some(raw) = raw {
                let pattern = Pattern::compile(raw)
                    .map_err(|message| error(format!("match.{}", field.key()), message))?;
                fields[field as usize] = Some(pattern);
            }
        }
        let ip = match &m.ip {
            Some(raw) => {
                let net = IpNet::parse(raw).ok_or_else(|| {
                    // docker_auth expands no placeholder in `ip`: say so rather than
                    // leave the reader to wonder why `${labels:net}` is not an address.
                    let why = if raw.contains("${") {
                        "; placeholders are not expanded in `ip`"
                    } else {
                        ""
                    };
                    error(
                        "match.ip".to_owned(),
                        format!("{raw:?} is neither an IP address nor a CIDR like 10.0.0.0/8{why}"),
                    )
                })?;
                Some((raw.clone(), net))
            }
            None => None,
        };
        let mut labels = Vec::new();
        for (key, raw) in m.labels.iter().flatten() {
            let pattern = Pattern::compile(raw)
                .map_err(|message| error(format!("match.labels.{key}"), message))?;
            labels.push((key.clone(), pattern));
        }
        // As in docker_auth, only the four field patterns define capture placeholders (a
        // label pattern can use one they define) and the source is that field's raw regex.
        // docker_auth leaves an unresolvable one as literal text, so the rule silently
        // never matches; here that is a load error.
        let mut captures: Vec<CaptureSource> = Vec::new();
        for user in Field::ALL {
            let pieces = fields[user as usize].iter().flat_map(Pattern::pieces);
            for piece in pieces {
                let Piece::Capture(field, group) = *piece else {
                    continue;
                };
                if captures
                    .iter()
                    .any(|c| c.field == field && c.group == group)
                {
                    continue;
                }
                let regex = raw_fields[field as usize]
                    .as_deref()
                    .and_then(|raw| raw.strip_prefix('/')?.strip_suffix('/'))
                    .and_then(|source| Regex::new(source).ok())
                    .filter(|regex| group >= 1 && group < regex.captures_len())
                    .ok_or_else(|| {
                        let key = field.key();
                        error(
                            format!("match.{}", user.key()),
                            format!(
                                "${{{key}:{group}}} needs match.{key} to be a /regex/ \
                                 with a capture group {group}"
                            ),
                        )
                    })?;
                captures.push(CaptureSource {
                    field,
                    group,
                    regex,
                });
            }
        }
        let grant = if entry.actions.len() == 1 && entry.actions[0] == "*" {
            Grant::All
        } else {
            let mut allowed = entry.actions.clone();
            allowed.sort();
            allowed.dedup();
            Grant::Only(allowed)
        };
        Ok(Rule {
            fields,
            ip,
            labels,
            captures,
            grant,
            comment: entry.comment.clone(),
        })
    }

    /// The first condition that fails, in docker_auth's order; `None` means the rule matches.
    fn mismatch<'r>(&'r self, req: &Request<'_>, regexes: &RegexCache) -> Option<Mismatch<'r>> {
        let ctx = Context {
            req,
            captures: self.resolve_captures(req),
            regexes,
        };
        for field in Field::ALL {
            if let Some(pattern) = &self.fields[field as usize] {
                if !pattern.matches(field.value(req), &ctx, true) {
                    return Some(Mismatch::Field(field));
                }
            }
        }
        if let Some((_, net)) = &self.ip {
            match req.ip {
                None => return Some(Mismatch::NoIp),
                Some(ip) if !net.contains(ip) => return Some(Mismatch::Ip(ip)),
                Some(_) => {}
            }
        }
        for (key, pattern) in &self.labels {
            let Some(values) = req.labels.get(key) else {
                return Some(Mismatch::LabelMissing(key));
            };
            // docker_auth substitutes field and capture placeholders here, not labels.
            if !values.iter().any(|v| pattern.matches(v, &ctx, false)) {
                return Some(Mismatch::Label(key));
            }
        }
        None
    }

    fn resolve_captures(&self, req: &Request<'_>) -> Vec<(Field, usize, String)> {
        let mut resolved = Vec::new();
        for source in &self.captures {
            // No match leaves the placeholder literal, as in docker_auth.
            let Some(caps) = source.regex.captures(source.field.value(req)) else {
                continue;
            };
            // docker_auth inserts the text raw; quoting it keeps an account such as
            // `*@test.com` from turning `${account:1}/*` into a wildcard over every namespace.
            let text = caps.get(source.group).map_or("", |m| m.as_str());
            resolved.push((source.field, source.group, quote_meta(text)));
        }
        resolved
    }

    fn grant(&self, requested: &[String]) -> Vec<String> {
        let mut actions: Vec<String> = match &self.grant {
            Grant::All => requested.to_vec(),
            Grant::Only(allowed) => requested
                .iter()
                .filter(|action| allowed.binary_search(action).is_ok())
                .cloned()
                .collect(),
        };
        actions.sort();
        actions.dedup();
        actions
    }
}

enum Mismatch<'r> {
    Field(Field),
    NoIp,
    Ip(IpAddr),
    LabelMissing(&'r str),
    Label(&'r str),
}

impl Mismatch<'_> {
    fn describe(&self, rule: &Rule, req: &Request<'_>) -> String {
        match self {
            Mismatch::Field(field) => {
                let raw = rule.fields[*field as usize]
                    .as_ref()
                    .map_or("", |p| p.raw.as_str());
                let value = field.value(req);
                format!("{} {value:?} does not match {raw:?}", field.key())
            }
            Mismatch::NoIp => {
                let raw = rule.ip.as_ref().map_or("", |(raw, _)| raw.as_str());
                format!("ip: no client address to test against {raw:?}")
            }
            Mismatch::Ip(ip) => {
                let raw = rule.ip.as_ref().map_or("", |(raw, _)| raw.as_str());
                format!("ip {ip} is not in {raw:?}")
            }
            Mismatch::LabelMissing(key) => format!("label {key:?} is missing"),
            Mismatch::Label(key) => {
                let values = req.labels.get(*key).map_or(&[][..], Vec::as_slice);
                let raw = rule
                    .labels
                    .iter()
                    .find(|(k, _)| k == key)
                    .map_or("", |(_, p)| p.raw.as_str());
                format!("label {key:?} values {values:?} do not match {raw:?}")
            }
        }
    }
}

#[cfg(test)]
mod tests;
