//! The config file as a tree of YAML nodes that remember where they were written, and a
//! serde deserializer over that tree whose every error carries the key path and position.
//!
//! Positions come from the parser itself (saphyr-parser, the maintained YAML 1.2 parser of
//! the yaml-rust line), so flow maps, quoted keys, anchors and aliases are located exactly;
//! nothing re-scans the text. A node set by a `REGATE_*` variable remembers the variable
//! instead of a line, so an error in it names the variable.
//!
//! What docker_auth's YAML library (yaml.v2) accepts and this tree accepts too: anchors and
//! aliases, `<<` merge keys. What it refuses, where yaml.v2 silently keeps the last one: a
//! key written twice in one mapping.

use saphyr_parser::{Parser, Span};

mod de;
mod parse;

pub use de::{from_node, from_node_at, from_str, Error};

/// One step of a key path: `acl[3].match.name` is `acl`, `3`, `match`, `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

pub fn key(k: &str) -> Seg {
    Seg::Key(k.to_owned())
}

/// The path as a user reads it: `acl[3].match.name`, `users."".password`.
pub fn display(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                if k.is_empty() || k.contains(['.', ' ', '[']) {
                    out.push_str(&format!("{k:?}"));
                } else {
                    out.push_str(k);
                }
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Where a node came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// 1-based line and column in the file.
    File(usize, usize),
    /// Set by this environment variable.
    Env(String),
}

impl Origin {
    pub fn position(&self) -> Option<(usize, usize)> {
        match self {
            Origin::File(line, col) => Some((*line, *col)),
            Origin::Env(_) => None,
        }
    }

    pub fn variable(&self) -> Option<&str> {
        match self {
            Origin::Env(v) => Some(v),
            Origin::File(..) => None,
        }
    }

    pub(super) fn of(span: &Span) -> Origin {
        Origin::File(span.start.line(), span.start.col() + 1)
    }
}

#[derive(Debug, Clone)]
pub struct Node {
    pub value: Value,
    pub origin: Origin,
}

#[derive(Debug, Clone)]
pub enum Value {
    /// A scalar as written; its type is decided by what the reader asks for (YAML 1.2's
    /// core schema for a plain scalar read as "anything").
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    /// Entries in file order; `Key::origin` is where the key itself was written.
    Map(Vec<(Key, Node)>),
}

#[derive(Debug, Clone)]
pub struct Key {
    pub name: String,
    pub origin: Origin,
}

/// A parse failure: position and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub position: (usize, usize),
    pub message: String,
    pub path: Vec<Seg>,
}

/// A document as far as it could be read, and what went wrong in it.
pub struct Parsed {
    pub root: Node,
    /// Keys written twice in one mapping (the first is kept).
    pub duplicates: Vec<SyntaxError>,
    /// The syntax error reading stopped at: the tree ends there.
    pub broken: Option<SyntaxError>,
}

/// Aliases are copies, and nested ones multiply ("billion laughs": 9 lines that expand to
/// 10⁹ values). The values aliases add are bounded, not the values written: those are
/// bounded by the file's size, and a file of 100,000 users is honest. Aliases may add this
/// many values, plus [`ALIAS_COPIES_PER_VALUE`] for each value the file writes itself.
pub(super) const MAX_ALIAS_COPIES: usize = 200_000;
/// See [`MAX_ALIAS_COPIES`]: a file that shares a label set among all its users copies a
/// few values per user; a bomb copies exponentially many per value it writes.
pub(super) const ALIAS_COPIES_PER_VALUE: usize = 4;

impl Node {
    pub fn empty_map(origin: Origin) -> Node {
        Node {
            value: Value::Map(Vec::new()),
            origin,
        }
    }

    /// Parses one YAML document. An empty document is an empty mapping.
    pub fn parse(src: &str) -> Result<Node, SyntaxError> {
        let parsed = Node::parse_all(src)?;
        let mut errors: Vec<SyntaxError> =
            parsed.duplicates.into_iter().chain(parsed.broken).collect();
        errors.sort_by_key(|e| e.position);
        match errors.is_empty() {
            true => Ok(parsed.root),
            false => Err(errors.remove(0)),
        }
    }

    /// As [`Node::parse`], but nothing is fatal but too many aliases: a key written twice
    /// keeps its first value, and a syntax error ends the tree where it stands; both are
    /// returned beside the tree, so a reader can report them with its own findings.
    pub fn parse_all(src: &str) -> Result<Parsed, SyntaxError> {
        let mut builder = parse::Builder {
            parser: Parser::new_from_str(src),
            src,
            // The parser counts characters; in ASCII (nearly every config) they are the
            // bytes, and a copy at 4 bytes a character (40 MiB for 100,000 users) is spared.
            chars: match src.is_ascii() {
                true => Vec::new(),
                false => src.chars().collect(),
            },
            anchors: Vec::new(),
            written: 0,
            copied: 0,
            duplicates: Vec::new(),
            broken: None,
        };
        let node = builder.document()?;
        Ok(Parsed {
            root: node,
            duplicates: builder.duplicates,
            broken: builder.broken,
        })
    }

    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar { text, plain: true } if is_null(text))
    }

    /// The value at `key` of a mapping.
    pub fn get(&self, name: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.name == name).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Where the last step of `path` that exists was written (the key for a mapping step,
    /// the item for a list step), and the variable that set it or its value, if one did.
    pub fn locate(&self, path: &[Seg]) -> (Option<(usize, usize)>, Option<&str>) {
        let mut node = self;
        let mut position = None;
        let mut variable = None;
        for seg in path {
            let next = match (seg, &node.value) {
                (Seg::Key(k), Value::Map(entries)) => entries
                    .iter()
                    .find(|(key, _)| key.name == *k)
                    .map(|(key, value)| (&key.origin, value)),
                (Seg::Index(i), Value::Seq(items)) => items.get(*i).map(|n| (&n.origin, n)),
                _ => None,
            };
            let Some((origin, next)) = next else { break };
            // A key the file has keeps its line; a value or section the environment set
            // names the variable.
            position = origin.position().or(position);
            variable = origin.variable().or(next.origin.variable());
            node = next;
        }
        (position, variable)
    }

    /// The node at `path`, if there is one.
    pub fn find(&self, path: &[Seg]) -> Option<&Node> {
        let mut node = self;
        for seg in path {
            node = match (seg, &node.value) {
                (Seg::Key(k), Value::Map(entries)) => entries
                    .iter()
                    .find(|(key, _)| key.name == *k)
                    .map(|(_, v)| v)?,
                (Seg::Index(i), Value::Seq(items)) => items.get(*i)?,
                _ => return None,
            };
        }
        Some(node)
    }

    /// Sets the scalar at `path` (making the mappings on the way), as an environment
    /// variable does; a mapping made here remembers the variable too.
    pub fn set(&mut self, path: &[&str], value: Value, origin: Origin) {
        let Some((last, parents)) = path.split_last() else {
            return;
        };
        let mut node = self;
        for name in parents {
            if !matches!(node.value, Value::Map(_)) || node.is_null() {
                *node = Node::empty_map(origin.clone());
            }
            let Value::Map(entries) = &mut node.value else {
                unreachable!("made a mapping above")
            };
            let i = match entries.iter().position(|(k, _)| k.name == *name) {
                Some(i) => i,
                None => {
                    let key = Key {
                        name: (*name).to_owned(),
                        origin: origin.clone(),
                    };
                    entries.push((key, Node::empty_map(origin.clone())));
                    entries.len() - 1
                }
            };
            node = &mut entries[i].1;
        }
        if !matches!(node.value, Value::Map(_)) {
            *node = Node::empty_map(origin.clone());
        }
        let Value::Map(entries) = &mut node.value else {
            unreachable!("made a mapping above")
        };
        let value = Node {
            value,
            origin: origin.clone(),
        };
        match entries.iter_mut().find(|(k, _)| k.name == *last) {
            // The file's key keeps its line; the value remembers the variable.
            Some((_, v)) => *v = value,
            None => entries.push((
                Key {
                    name: (*last).to_owned(),
                    origin,
                },
                value,
            )),
        }
    }
}

pub(super) fn is_null(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

/// Whitespace YAML does not take as whitespace, as text pasted from a web page or an editor
/// brings it: non-breaking spaces (U+00A0) outside quotes, and tabs in an indentation. One
/// error per line, naming what and how many; YAML's own error for such a line is rarely
/// about the cause.
pub fn foreign_whitespace(src: &str) -> Vec<SyntaxError> {
    let mut out = Vec::new();
    for (i, line) in src.lines().enumerate() {
        let mut quote = None;
        let mut nbsp = (0, 0);
        for (col, c) in line.chars().enumerate() {
            match (c, quote) {
                ('#', None) => break,
                ('"' | '\'', None) => quote = Some(c),
                (c, Some(q)) if c == q => quote = None,
                ('\u{a0}', None) => {
                    if nbsp.0 == 0 {
                        nbsp.1 = col + 1;
                    }
                    nbsp.0 += 1;
                }
                _ => {}
            }
        }
        let indent: String = line
            .chars()
            .take_while(|c| matches!(c, ' ' | '\t' | '\u{a0}'))
            .collect();
        let tabs = indent.chars().filter(|c| *c == '\t').count();
        let plural = |n: usize, one: &str, many: &str| match n {
            1 => format!("1 {one}"),
            n => format!("{n} {many}"),
        };
        if nbsp.0 > 0 {
            out.push(SyntaxError {
                position: (i + 1, nbsp.1),
                message: format!(
                    "line {} has {} where YAML needs plain spaces (text pasted from a web page?)",
                    i + 1,
                    plural(nbsp.0, "non-breaking space", "non-breaking spaces")
                ),
                path: Vec::new(),
            });
        }
        if tabs > 0 {
            out.push(SyntaxError {
                position: (i + 1, indent.find('\t').map_or(1, |c| c + 1)),
                message: format!(
                    "line {} is indented with {}; YAML indents with spaces only",
                    i + 1,
                    plural(tabs, "tab", "tabs")
                ),
                path: Vec::new(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests;
