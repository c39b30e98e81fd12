//! Which rules can match a request, so that a decision tries only those.
//!
//! A config generated from an account database has a rule or two per account; trying all
//! of them in order made `/auth` 12× slower at 5,000 rules than at 50 (issue #20). Most
//! such rules name one account, or one repository namespace, literally: a rule whose
//! `account` is a literal can only match that account, and one whose `name` starts with
//! literal text can only match names that start with it. Every rule goes into exactly one
//! bucket: its literal account, else its name's literal prefix, else "everything else".
//! A request's candidates are its account's bucket, the buckets of the prefixes its name
//! has, and "everything else"; they are merged by rule index, so the rules are still tried
//! in the order written and the first match decides, as in docker_auth. A rule left out
//! cannot match, so the first candidate that matches is the first rule that matches;
//! `index/tests.rs` checks that against the plain scan on random configs.

use std::collections::HashMap;

use super::{Field, Request, Rule};

#[derive(Debug, Default)]
pub(super) struct Index {
    /// Rules whose `account` matches exactly one string, by that string.
    by_account: HashMap<String, Vec<usize>>,
    /// Other rules whose `name` starts with literal text, by that text.
    by_name_prefix: HashMap<String, Vec<usize>>,
    /// The lengths (bytes) of the keys of `by_name_prefix`, ascending, each once: a name
    /// is looked up once per length, not once per character.
    prefix_lengths: Vec<usize>,
    /// The rest, which any request may match.
    other: Vec<usize>,
}

impl Index {
    pub(super) fn build(rules: &[Rule]) -> Index {
        let mut index = Index::default();
        // Rules are visited in order, so every bucket is sorted by rule index.
        for (i, rule) in rules.iter().enumerate() {
            let account = rule.fields[Field::Account as usize].as_ref();
            let name = rule.fields[Field::Name as usize].as_ref();
            if let Some(account) = account.filter(|p| p.is_literal()) {
                index
                    .by_account
                    .entry(account.raw.clone())
                    .or_default()
                    .push(i);
            } else if let Some(prefix) = name.and_then(|p| p.literal_prefix()) {
                index
                    .by_name_prefix
                    .entry(prefix.to_owned())
                    .or_default()
                    .push(i);
            } else {
                index.other.push(i);
            }
        }
        let mut lengths: Vec<usize> = index.by_name_prefix.keys().map(String::len).collect();
        lengths.sort_unstable();
        lengths.dedup();
        index.prefix_lengths = lengths;
        index
    }

    /// The rules that can match `req`, in rule order.
    pub(super) fn candidates(&self, req: &Request<'_>) -> Candidates<'_> {
        let mut lists: Vec<&[usize]> = Vec::with_capacity(4);
        if let Some(rules) = self.by_account.get(req.account) {
            lists.push(rules);
        }
        for &len in &self.prefix_lengths {
            // A length past the end, or inside a character, is a prefix no key equals.
            let Some(prefix) = req.name.get(..len) else {
                if len > req.name.len() {
                    break;
                }
                continue;
            };
            if let Some(rules) = self.by_name_prefix.get(prefix) {
                lists.push(rules);
            }
        }
        if !self.other.is_empty() {
            lists.push(&self.other);
        }
        Candidates { lists }
    }
}

/// Rule indexes from several sorted lists, smallest first. No index is in two lists (a
/// rule has one bucket, and a name has one prefix of each length).
pub(super) struct Candidates<'a> {
    lists: Vec<&'a [usize]>,
}

impl Iterator for Candidates<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        // A request has a handful of lists at most: scanning their heads beats a heap.
        let (at, &first) = self
            .lists
            .iter()
            .enumerate()
            .filter_map(|(at, list)| Some((at, list.first()?)))
            .min_by_key(|(_, &first)| first)?;
        self.lists[at] = &self.lists[at][1..];
        Some(first)
    }
}

#[cfg(test)]
mod tests;
