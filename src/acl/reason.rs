//! Why a scope was decided as it was, in one line for the log (`regate explain` says the same
//! at length).

use std::fmt::Write as _;

use super::{Acl, Explanation};

/// How many skipped rules a log line names before it says "and N more"; what to pass
/// [`Acl::explain_first`] for a log line.
pub const LOG_SKIPPED: usize = 10;

impl Explanation {
    /// One line for the log of a denied (or partly denied) scope: the deciding rule and
    /// what it allows, or that none matched, and why the rules before it did not match.
    /// `list` names the rules in `acl` as the config does: `acl`, or `robots.NAME.acl`.
    pub fn reason(&self, acl: &Acl, list: &str) -> String {
        let explanation = self;
        let mut out = match explanation.decision.rule {
            Some(i) => {
                let allows = acl
                    .entries()
                    .get(i)
                    .map(|e| format!("{:?}", e.actions))
                    .unwrap_or_default();
                format!(
                    "{} decided, allowing {allows}",
                    rule_name(list, i, acl.comment(i))
                )
            }
            None if acl.is_empty() => "the ACL is empty (denied by default)".to_owned(),
            None => "no rule matched (denied by default)".to_owned(),
        };
        let skipped = &explanation.skipped;
        let total = skipped.len() + explanation.unexplained;
        if total > 0 {
            let before = if explanation.decision.rule.is_some() {
                "; before it"
            } else {
                ""
            };
            let _ = write!(out, "{before}: ");
            let shown: Vec<String> = skipped
                .iter()
                .take(LOG_SKIPPED)
                .map(|(i, why)| format!("{list}[{i}] {why}"))
                .collect();
            out.push_str(&shown.join("; "));
            if total > shown.len() {
                let _ = write!(out, "; and {} more", total - shown.len());
            }
        }
        out
    }
}

/// A rule as `acl[3] "comment"` (or `robots.NAME.acl[0]`).
pub fn rule_name(list: &str, rule: usize, comment: Option<&str>) -> String {
    match comment {
        Some(c) => format!("{list}[{rule}] {c:?}"),
        None => format!("{list}[{rule}]"),
    }
}
