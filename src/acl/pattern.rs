//! ACL patterns: `/regex/` or Go glob, with docker_auth's placeholders substituted into the
//! pattern text before it is matched.

use regex::Regex;

use super::glob::Glob;
use super::{Field, Request};

/// What one rule evaluation needs beyond the pattern itself.
pub(super) struct Context<'c, 'r> {
    pub(super) req: &'c Request<'r>,
    /// Resolved `${field:N}` values, already quoted.
    pub(super) captures: Vec<(Field, usize, String)>,
    pub(super) regexes: &'c RegexCache,
}

/// Cartesian products of `${labels:...}` values beyond this are not tried; it bounds the
/// work one request can cause, far above any real label set.
const MAX_LABEL_COMBINATIONS: usize = 4096;

#[derive(Debug)]
pub(super) struct Pattern {
    pub(super) raw: String,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// No placeholders: compiled once.
    Fixed(Matcher),
    /// Rebuilt per request, because substitution happens before the regex-or-glob choice.
    Template(Vec<Piece>),
}

#[derive(Debug)]
enum Matcher {
    Regex(Regex),
    Glob(Glob),
}

/// A pattern, cut at its placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    /// `${account}` etc.: the request's value, regex-quoted.
    Var(Field),
    /// `${labels:KEY}`: each of the user's values in turn, unquoted (docker_auth does so).
    Label(String),
    /// `${field:N}`: group N of that field's `/regex/` applied to the request's value.
    Capture(Field, usize),
}

impl Pattern {
    pub(super) fn compile(raw: &str) -> Result<Pattern, String> {
        let pieces = parse_pieces(raw);
        let kind = if pieces.iter().all(|p| matches!(p, Piece::Text(_))) {
            Kind::Fixed(Matcher::compile(raw)?)
        } else {
            // Values are unknown until a request arrives; a neutral stand-in still catches
            // every error that does not depend on them.
            let sample = render(&pieces, |_| Some("x".into()));
            Matcher::compile(&sample)
                .map_err(|e| format!("{e} (with each placeholder replaced by \"x\")"))?;
            Kind::Template(pieces)
        };
        Ok(Pattern {
            raw: raw.to_owned(),
            kind,
        })
    }

    /// True when the pattern matches exactly one string: the raw text itself.
    pub(super) fn is_literal(&self) -> bool {
        matches!(self.kind, Kind::Fixed(Matcher::Glob(_)))
            && !self.raw.contains(['*', '?', '[', '\\'])
    }

    /// The text every match starts with, when there is some: a glob's bytes before its
    /// first `*`, `?`, `[` or `\` (each other byte matches only itself, in Go's
    /// `path.Match` too). `None` for a regex, a pattern with placeholders, or no such text.
    pub(super) fn literal_prefix(&self) -> Option<&str> {
        if !matches!(self.kind, Kind::Fixed(Matcher::Glob(_))) {
            return None;
        }
        let end = self
            .raw
            .find(['*', '?', '[', '\\'])
            .unwrap_or(self.raw.len());
        (end > 0).then(|| &self.raw[..end])
    }

    pub(super) fn pieces(&self) -> &[Piece] {
        match &self.kind {
            Kind::Fixed(_) => &[],
            Kind::Template(pieces) => pieces,
        }
    }

    pub(super) fn matches(&self, value: &str, ctx: &Context<'_, '_>, with_labels: bool) -> bool {
        let pieces = match &self.kind {
            Kind::Fixed(matcher) => return matcher.is_match(value),
            Kind::Template(pieces) => pieces,
        };
        let substitute = |piece: &Piece, labels: &[(&str, &str)]| match piece {
            Piece::Text(_) => None,
            Piece::Var(field) => Some(quote_meta(field.value(ctx.req))),
            Piece::Label(key) => labels
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| (*v).to_owned()),
            Piece::Capture(field, group) => ctx
                .captures
                .iter()
                .find(|(f, g, _)| f == field && g == group)
                .map(|(_, _, text)| text.clone()),
        };
        let try_with = |labels: &[(&str, &str)]| {
            let pattern = render(pieces, |piece| substitute(piece, labels));
            ctx.regexes.pattern_matches(&pattern, value)
        };
        // docker_auth first tries the label placeholders left as they are.
        if try_with(&[]) {
            return true;
        }
        if !with_labels {
            return false;
        }
        let mut sets: Vec<(&str, &[String])> = Vec::new();
        for piece in pieces {
            if let Piece::Label(key) = piece {
                if let Some(values) = ctx.req.labels.get(key) {
                    if !sets.iter().any(|(k, _)| k == key) {
                        sets.push((key, values));
                    }
                }
            }
        }
        if sets.is_empty() || sets.iter().any(|(_, values)| values.is_empty()) {
            return false;
        }
        // Odometer over the cartesian product of the label values.
        let mut digits = vec![0usize; sets.len()];
        for _ in 0..MAX_LABEL_COMBINATIONS {
            let choice: Vec<(&str, &str)> = sets
                .iter()
                .zip(&digits)
                .map(|((key, values), &i)| (*key, values[i].as_str()))
                .collect();
            if try_with(&choice) {
                return true;
            }
            let mut position = 0;
            loop {
                let Some(digit) = digits.get_mut(position) else {
                    return false;
                };
                *digit += 1;
                if *digit < sets[position].1.len() {
                    break;
                }
                *digit = 0;
                position += 1;
            }
        }
        false
    }
}

impl Matcher {
    fn compile(pattern: &str) -> Result<Matcher, String> {
        match regex_source(pattern) {
            Some(source) => Regex::new(source)
                .map(Matcher::Regex)
                .map_err(|e| format!("invalid regular expression {source:?}: {e}")),
            None => Glob::new(pattern)
                .map(Matcher::Glob)
                .map_err(|e| format!("invalid glob {pattern:?}: {e}")),
        }
    }

    fn is_match(&self, value: &str) -> bool {
        match self {
            Matcher::Regex(regex) => regex.is_match(value),
            Matcher::Glob(glob) => glob.is_match(value),
        }
    }
}

/// The regex inside `/.../`; anything else (including `//`) is a glob.
fn regex_source(pattern: &str) -> Option<&str> {
    let inner = pattern.strip_prefix('/')?.strip_suffix('/')?;
    (!inner.is_empty()).then_some(inner)
}

/// Splits a pattern into text and placeholders; an unknown `${...}` stays text.
pub(super) fn parse_pieces(raw: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut rest = raw;
    while let Some(start) = rest.find("${") {
        text.push_str(&rest[..start]);
        let tail = &rest[start..];
        match parse_placeholder(tail) {
            Some((piece, used)) => {
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(piece);
                rest = &tail[used..];
            }
            None => {
                text.push_str("${");
                rest = &tail[2..];
            }
        }
    }
    text.push_str(rest);
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    pieces
}

/// Each `${...}` written in `raw`, in order, as the ACL reads it: a placeholder, or
/// `Err(inner)` for one that is none (it stays literal text). `regate check` asks this
/// rather than scanning patterns a second way.
pub fn placeholders(raw: &str) -> Vec<Result<Piece, &str>> {
    let mut out = Vec::new();
    let mut rest = raw;
    while let Some(start) = rest.find("${") {
        let tail = &rest[start..];
        match parse_placeholder(tail) {
            Some((piece, used)) => {
                out.push(Ok(piece));
                rest = &tail[used..];
            }
            None => {
                let Some(end) = tail.find('}') else { break };
                out.push(Err(&tail[2..end]));
                rest = &tail[2..];
            }
        }
    }
    out
}

/// Parses the placeholder at the start of `s` (which starts with `${`).
fn parse_placeholder(s: &str) -> Option<(Piece, usize)> {
    let end = s.find('}')?;
    let inner = &s[2..end];
    let piece = if let Some(key) = inner.strip_prefix("labels:") {
        Piece::Label(key.to_owned())
    } else if let Some(field) = Field::from_key(inner) {
        Piece::Var(field)
    } else {
        let (field, group) = inner.split_once(':')?;
        if group.is_empty() || !group.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Piece::Capture(Field::from_key(field)?, group.parse().ok()?)
    };
    Some((piece, end + 1))
}

/// Joins the pieces; `value` returns `None` for a placeholder that keeps its literal text.
fn render(pieces: &[Piece], mut value: impl FnMut(&Piece) -> Option<String>) -> String {
    let mut out = String::new();
    for piece in pieces {
        if let Piece::Text(text) = piece {
            out.push_str(text);
            continue;
        }
        match value(piece) {
            Some(v) => out.push_str(&v),
            None => match piece {
                Piece::Text(_) => {}
                Piece::Var(field) => out.push_str(&format!("${{{}}}", field.key())),
                Piece::Label(key) => out.push_str(&format!("${{labels:{key}}}")),
                Piece::Capture(field, group) => {
                    out.push_str(&format!("${{{}:{group}}}", field.key()))
                }
            },
        }
    }
    out
}

/// Go's `regexp.QuoteMeta`: the escaped text is literal in a regex and, since `\` escapes
/// in `path.Match` too, in a glob; one quoting serves both because the pattern's kind is
/// only known after substitution.
pub(super) fn quote_meta(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if r"\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Regexes built from substituted patterns, keyed by source; `None` caches a failure.
/// Bounded, least recently used out first (moka).
#[derive(Debug)]
pub(super) struct RegexCache(moka::sync::Cache<String, Option<Regex>>);

/// Enough for every distinct substituted pattern of a busy registry.
pub(super) const REGEX_CACHE_CAPACITY: usize = 1024;

impl Default for RegexCache {
    fn default() -> RegexCache {
        RegexCache(moka::sync::Cache::new(REGEX_CACHE_CAPACITY as u64))
    }
}

impl RegexCache {
    /// Matches a substituted pattern; one that is malformed matches nothing, as in Go.
    fn pattern_matches(&self, pattern: &str, value: &str) -> bool {
        let Some(source) = regex_source(pattern) else {
            return Glob::new(pattern).is_ok_and(|glob| glob.is_match(value));
        };
        let regex = self.0.get_with_by_ref(source, || Regex::new(source).ok());
        regex.is_some_and(|regex| regex.is_match(value))
    }
}
