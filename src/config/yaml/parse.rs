//! From saphyr-parser's events to a [`Node`] tree: aliases copied (with a bound), `<<`
//! merged, duplicate keys and the first syntax error kept for the reader to report.

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Span};

use std::collections::HashSet;

use super::{Key, Node, Origin, Seg, SyntaxError, Value, ALIAS_COPIES_PER_VALUE, MAX_ALIAS_COPIES};

pub(super) struct Builder<'a> {
    pub(super) parser: Parser<'a, saphyr_parser::StrInput<'a>>,
    /// The source, for the `-` of a list item (the parser marks the item's content).
    pub(super) src: &'a str,
    /// The source's characters when it is not ASCII (the parser's positions count
    /// characters); empty for ASCII, where they are its bytes.
    pub(super) chars: Vec<char>,
    /// Anchored nodes by anchor id (ids start at 1).
    pub(super) anchors: Vec<Option<Node>>,
    /// Values read from the file itself.
    pub(super) written: usize,
    /// Values aliases copied: bounded (see [`MAX_ALIAS_COPIES`]).
    pub(super) copied: usize,
    pub(super) duplicates: Vec<SyntaxError>,
    /// The syntax error the parser stopped at.
    pub(super) broken: Option<SyntaxError>,
}

impl<'a> Builder<'a> {
    /// The next event. After a syntax error the parser cannot go on: the error is kept and
    /// `Nothing` comes back, which closes every open list and mapping, so what was read up
    /// to the error is still a tree a reader can check (and report on, beside the error).
    fn next(&mut self) -> Result<(Event<'a>, Span), SyntaxError> {
        if self.broken.is_some() {
            return Ok((Event::Nothing, Span::default()));
        }
        match self.parser.next_event() {
            Some(Ok(e)) => Ok(e),
            Some(Err(e)) => {
                self.broken = Some(scan_error(&e));
                Ok((Event::Nothing, Span::default()))
            }
            None => Ok((Event::StreamEnd, Span::default())),
        }
    }

    pub(super) fn document(&mut self) -> Result<Node, SyntaxError> {
        let mut root = None;
        loop {
            let (event, span) = self.next()?;
            match event {
                Event::StreamStart | Event::DocumentEnd => {}
                Event::StreamEnd | Event::Nothing => break,
                Event::DocumentStart(_) if root.is_some() => {
                    return Err(SyntaxError {
                        position: (span.start.line(), span.start.col() + 1),
                        message: "a second YAML document (`---`): the config is one document"
                            .into(),
                        path: Vec::new(),
                    })
                }
                Event::DocumentStart(_) => {
                    let (event, span) = self.next()?;
                    if matches!(event, Event::DocumentEnd) {
                        continue;
                    }
                    root = Some(self.node(event, span, &mut Vec::new())?);
                }
                _ => {}
            }
        }
        Ok(match root {
            Some(node) if !node.is_null() => node,
            _ => Node::empty_map(Origin::File(1, 1)),
        })
    }

    fn node(
        &mut self,
        event: Event<'a>,
        span: Span,
        path: &mut Vec<Seg>,
    ) -> Result<Node, SyntaxError> {
        let origin = Origin::of(&span);
        let (node, anchor) = match event {
            Event::Scalar(text, style, anchor, _) => {
                self.written += 1;
                (
                    Node {
                        value: Value::Scalar {
                            text: text.into_owned(),
                            plain: style == ScalarStyle::Plain,
                        },
                        origin,
                    },
                    anchor,
                )
            }
            Event::Alias(id) => {
                let node = self
                    .anchors
                    .get(id)
                    .and_then(Option::as_ref)
                    .ok_or(SyntaxError {
                        position: (span.start.line(), span.start.col() + 1),
                        message: "an alias (*name) of an anchor that is not defined above it"
                            .into(),
                        path: path.clone(),
                    })?;
                // Counted before it is copied: a copy too many is never made.
                self.copied += count(node);
                let allowed = MAX_ALIAS_COPIES + ALIAS_COPIES_PER_VALUE * self.written;
                if self.copied > allowed {
                    return Err(SyntaxError {
                        position: (span.start.line(), span.start.col() + 1),
                        message: format!(
                            "aliases expand to more than {allowed} copied values \
                             ({MAX_ALIAS_COPIES} plus {ALIAS_COPIES_PER_VALUE} per value written)"
                        ),
                        path: path.clone(),
                    });
                }
                return Ok(node.clone());
            }
            Event::SequenceStart(anchor, _) => {
                self.written += 1;
                let mut items = Vec::new();
                loop {
                    let (event, span) = self.next()?;
                    if matches!(event, Event::SequenceEnd | Event::Nothing) {
                        break;
                    }
                    path.push(Seg::Index(items.len()));
                    let mut item = self.node(event, span, path)?;
                    path.pop();
                    // A block list's item is where its `-` is, as a reader points at it.
                    if let Some(dash) = self.dash_before(&span) {
                        item.origin = dash;
                    }
                    items.push(item);
                }
                // A list grows by doubling from 4: 100,000 short ones kept at their size
                // are tens of MiB less for as long as the tree lives.
                items.shrink_to_fit();
                (
                    Node {
                        value: Value::Seq(items),
                        origin,
                    },
                    anchor,
                )
            }
            Event::MappingStart(anchor, _) => {
                self.written += 1;
                (self.mapping(origin, path)?, anchor)
            }
            other => {
                return Err(SyntaxError {
                    position: (span.start.line(), span.start.col() + 1),
                    message: format!("unexpected {other:?}"),
                    path: path.clone(),
                })
            }
        };
        if anchor > 0 {
            if self.anchors.len() <= anchor {
                self.anchors.resize(anchor + 1, None);
            }
            self.anchors[anchor] = Some(node.clone());
        }
        Ok(node)
    }

    fn mapping(&mut self, origin: Origin, path: &mut Vec<Seg>) -> Result<Node, SyntaxError> {
        let mut entries: Vec<(Key, Node)> = Vec::new();
        // The names so far: a `users:` of 100,000 names must not compare each with all.
        let mut names = Names::default();
        // `<<: *base` entries, applied after the mapping's own keys (which win).
        let mut merges = Vec::new();
        loop {
            let (event, span) = self.next()?;
            let key_origin = Origin::of(&span);
            let name = match event {
                Event::MappingEnd | Event::Nothing => break,
                Event::Scalar(text, ..) => text.into_owned(),
                Event::Alias(_) => {
                    let node = self.node(event, span, path)?;
                    match node.value {
                        Value::Scalar { text, .. } => text,
                        _ => return Err(not_a_scalar_key(&span, path)),
                    }
                }
                _ => return Err(not_a_scalar_key(&span, path)),
            };
            let (event, span) = self.next()?;
            path.push(Seg::Key(name.clone()));
            let value = match event {
                Event::Nothing => Node {
                    value: Value::Scalar {
                        text: String::new(),
                        plain: true,
                    },
                    origin: key_origin.clone(),
                },
                event => self.node(event, span, path)?,
            };
            if name == "<<" {
                merges.push(value);
                path.pop();
                continue;
            }
            if names.contains(&entries, &name) {
                let first = entries.iter().find(|(k, _)| k.name == name).map(|(k, _)| k);
                let first = first.and_then(|k| k.origin.position()).map_or(0, |p| p.0);
                let (line, col) = key_origin.position().unwrap_or((1, 1));
                self.duplicates.push(SyntaxError {
                    position: (line, col),
                    message: format!(
                        "`{name}` is written twice in this mapping (first on line {first}); YAML keeps one, so say which"
                    ),
                    path: path.clone(),
                });
                path.pop();
                continue;
            }
            path.pop();
            names.insert(&entries, &name);
            entries.push((
                Key {
                    name,
                    origin: key_origin,
                },
                value,
            ));
        }
        for merge in merges {
            let sources = match merge.value {
                Value::Seq(items) => items,
                _ => vec![merge],
            };
            for source in sources {
                let Value::Map(more) = source.value else {
                    let (line, col) = source.origin.position().unwrap_or((1, 1));
                    return Err(SyntaxError {
                        position: (line, col),
                        message: "`<<` merges a mapping (or a list of mappings) into this one"
                            .into(),
                        path: path.clone(),
                    });
                };
                for (k, v) in more {
                    if !names.contains(&entries, &k.name) {
                        names.insert(&entries, &k.name);
                        entries.push((k, v));
                    }
                }
            }
        }
        // As for lists: most mappings have 2 or 3 keys and room for 4 or 8.
        entries.shrink_to_fit();
        Ok(Node {
            value: Value::Map(entries),
            origin,
        })
    }
}

impl Builder<'_> {
    /// The `-` that starts the block-list item whose content starts at `span`.
    fn dash_before(&self, span: &Span) -> Option<Origin> {
        let mut i = span.start.index();
        let mut col = span.start.col();
        while i > 0 && col > 0 {
            i -= 1;
            col -= 1;
            let c = match self.chars.is_empty() {
                true => char::from(*self.src.as_bytes().get(i)?),
                false => *self.chars.get(i)?,
            };
            match c {
                ' ' => continue,
                '-' => return Some(Origin::File(span.start.line(), col + 1)),
                _ => return None,
            }
        }
        None
    }
}

/// The keys of a mapping being read: compared one by one while there are few (most
/// mappings have two or three keys, and a set each would cost more than it saves), in a
/// set from [`Names::SMALL`] keys on.
#[derive(Default)]
struct Names(HashSet<String>);

impl Names {
    const SMALL: usize = 16;

    /// Whether `entries` (the keys so far) has `name`.
    fn contains(&self, entries: &[(Key, Node)], name: &str) -> bool {
        match entries.len() < Self::SMALL {
            true => entries.iter().any(|(k, _)| k.name == name),
            false => self.0.contains(name),
        }
    }

    /// Notes `name`, about to join `entries`.
    fn insert(&mut self, entries: &[(Key, Node)], name: &str) {
        if entries.len() + 1 < Self::SMALL {
            return;
        }
        if self.0.is_empty() {
            self.0.extend(entries.iter().map(|(k, _)| k.name.clone()));
        }
        self.0.insert(name.to_owned());
    }
}

fn count(node: &Node) -> usize {
    match &node.value {
        Value::Scalar { .. } => 1,
        Value::Seq(items) => 1 + items.iter().map(count).sum::<usize>(),
        Value::Map(entries) => 1 + entries.iter().map(|(_, v)| count(v)).sum::<usize>(),
    }
}

fn not_a_scalar_key(span: &Span, path: &[Seg]) -> SyntaxError {
    SyntaxError {
        position: (span.start.line(), span.start.col() + 1),
        message: "a key must be a plain name, not a list or mapping".into(),
        path: path.to_vec(),
    }
}

fn scan_error(e: &ScanError) -> SyntaxError {
    let m = e.marker();
    SyntaxError {
        position: (m.line(), m.col() + 1),
        message: e.info().to_owned(),
        path: Vec::new(),
    }
}
