//! A serde deserializer over a [`Node`]: every error carries the key path and where the
//! key was written; scalars take the type the reader asks for.

use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};

use super::{is_null, Key, Node, Origin, Seg, Value};

/// A deserialization failure, with the key path and the node's origin.
#[derive(Debug, Clone)]
pub struct Error {
    pub message: String,
    pub path: Vec<Seg>,
    pub origin: Option<Origin>,
    /// For "unknown field": the field and the keys the section takes.
    pub unknown: Option<(String, &'static [&'static str])>,
    located: bool,
}

impl Error {
    fn locate(mut self, path: &[Seg], origin: &Origin) -> Error {
        if !self.located {
            self.path = path.to_vec();
            self.origin = Some(origin.clone());
            self.located = true;
        }
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error {
            message: msg.to_string(),
            path: Vec::new(),
            origin: None,
            unknown: None,
            located: false,
        }
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        let mut e = Error::custom(format_args!("unknown field `{field}`"));
        e.unknown = Some((field.to_owned(), expected));
        e
    }

    fn invalid_type(unexp: de::Unexpected, exp: &dyn de::Expected) -> Self {
        Error::custom(format_args!(
            "{} where {} belongs",
            plain_unexpected(&unexp),
            plain_expected(&exp.to_string())
        ))
    }

    fn missing_field(field: &'static str) -> Self {
        Error::custom(format_args!("`{field}` is required"))
    }
}

/// What was found, in the words of a config file.
fn plain_unexpected(u: &de::Unexpected) -> String {
    match u {
        de::Unexpected::Map => "a mapping (key: value lines)".into(),
        de::Unexpected::Seq => "a list".into(),
        de::Unexpected::Str(s) => format!("the text `{s}`"),
        de::Unexpected::Unit => "nothing".into(),
        other => other.to_string(),
    }
}

/// What was wanted, without Rust's type names (`struct RawServer`, `i64`).
fn plain_expected(e: &str) -> String {
    if e.starts_with("struct ") || e.starts_with("a map") || e == "map" {
        "a mapping (key: value lines)".into()
    } else if e.starts_with("a sequence") || e == "sequence" {
        "a list".into()
    } else if e.starts_with("i") || e.starts_with("u") && e.len() <= 5 {
        "a whole number".into()
    } else if e.starts_with("f") && e.len() <= 3 {
        "a number".into()
    } else if e == "a boolean" {
        "true or false".into()
    } else {
        e.to_owned()
    }
}

/// Deserializes `T` from the whole tree.
pub fn from_node<T: de::DeserializeOwned>(node: &Node) -> Result<T, Error> {
    T::deserialize(De {
        node,
        path: &mut Vec::new(),
    })
    .map_err(|e| e.locate(&[], &node.origin))
}

/// Deserializes `T` from `node`, found at `path` (a key written at `origin`): errors carry
/// the whole path, as if `T` had been read with the tree around it. A section read entry by
/// entry (100,000 users) never holds all its entries in a second form.
pub fn from_node_at<T: de::DeserializeOwned>(
    node: &Node,
    path: &[Seg],
    origin: &Origin,
) -> Result<T, Error> {
    T::deserialize(De {
        node,
        path: &mut path.to_vec(),
    })
    .map_err(|e| e.locate(path, origin))
}

/// Parses and deserializes in one step (tests, fixtures).
pub fn from_str<T: de::DeserializeOwned>(src: &str) -> Result<T, Error> {
    let node = Node::parse(src).map_err(|e| Error {
        message: e.message,
        path: e.path,
        origin: Some(Origin::File(e.position.0, e.position.1)),
        unknown: None,
        located: true,
    })?;
    from_node(&node)
}

struct De<'n, 'p> {
    node: &'n Node,
    path: &'p mut Vec<Seg>,
}

impl De<'_, '_> {
    fn scalar(&self) -> Option<(&str, bool)> {
        match &self.node.value {
            Value::Scalar { text, plain } => Some((text, *plain)),
            _ => None,
        }
    }

    fn unexpected(&self) -> de::Unexpected<'_> {
        match &self.node.value {
            Value::Scalar { text, .. } => de::Unexpected::Str(text),
            Value::Seq(_) => de::Unexpected::Seq,
            Value::Map(_) => de::Unexpected::Map,
        }
    }

    /// A boolean as YAML 1.2 writes it; from the environment also 1/0 and yes/no.
    fn boolean(&self) -> Option<bool> {
        let (text, _) = self.scalar()?;
        let env = matches!(self.node.origin, Origin::Env(_));
        match text {
            "true" | "True" | "TRUE" => Some(true),
            "false" | "False" | "FALSE" => Some(false),
            "1" | "yes" if env => Some(true),
            "0" | "no" if env => Some(false),
            _ => None,
        }
    }
}

macro_rules! number {
    ($method:ident, $visit:ident, $t:ty) => {
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            match self.scalar().and_then(|(t, _)| parse_number::<$t>(t)) {
                Some(n) => visitor.$visit(n),
                None => Err(de::Error::invalid_type(self.unexpected(), &visitor)),
            }
        }
    };
}

fn parse_number<T: std::str::FromStr>(text: &str) -> Option<T> {
    let t = text.trim().replace('_', "");
    t.strip_prefix('+').unwrap_or(&t).parse().ok()
}

impl<'de> de::Deserializer<'de> for De<'_, '_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.node.value {
            Value::Scalar { text, plain: true } => {
                if is_null(text) {
                    visitor.visit_unit()
                } else if let Some(b) = self.boolean() {
                    visitor.visit_bool(b)
                } else if let Some(n) = parse_number::<i64>(text) {
                    visitor.visit_i64(n)
                } else if let Some(n) = parse_number::<f64>(text).filter(|_| {
                    text.bytes()
                        .next()
                        .is_some_and(|b| b.is_ascii_digit() || b == b'-' || b == b'.')
                }) {
                    visitor.visit_f64(n)
                } else {
                    visitor.visit_str(text)
                }
            }
            Value::Scalar { text, .. } => visitor.visit_str(text),
            Value::Seq(_) => self.deserialize_seq(visitor),
            Value::Map(_) => self.deserialize_map(visitor),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.boolean() {
            Some(b) => visitor.visit_bool(b),
            None => Err(de::Error::invalid_type(self.unexpected(), &visitor)),
        }
    }

    number!(deserialize_i8, visit_i8, i8);
    number!(deserialize_i16, visit_i16, i16);
    number!(deserialize_i32, visit_i32, i32);
    number!(deserialize_i64, visit_i64, i64);
    number!(deserialize_u8, visit_u8, u8);
    number!(deserialize_u16, visit_u16, u16);
    number!(deserialize_u32, visit_u32, u32);
    number!(deserialize_u64, visit_u64, u64);
    number!(deserialize_f32, visit_f32, f32);
    number!(deserialize_f64, visit_f64, f64);

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        // A plain `2024` or `true` is text where text is wanted (a password file named
        // 2024): YAML's types are the reader's business.
        match self.scalar() {
            Some((text, _)) => visitor.visit_str(text),
            None => Err(de::Error::invalid_type(self.unexpected(), &visitor)),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.node.is_null() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.node.is_null() {
            visitor.visit_unit()
        } else {
            Err(de::Error::invalid_type(self.unexpected(), &visitor))
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.node.value {
            Value::Seq(items) => visitor.visit_seq(Items {
                items: items.iter().enumerate(),
                path: self.path,
            }),
            // An empty value (`acl:`) reads as an empty list.
            _ if self.node.is_null() => visitor.visit_seq(Items {
                items: [].iter().enumerate(),
                path: self.path,
            }),
            _ => Err(de::Error::invalid_type(self.unexpected(), &visitor)),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.node.value {
            Value::Map(entries) => visitor.visit_map(Entries {
                entries: entries.iter(),
                value: None,
                path: self.path,
            }),
            _ if self.node.is_null() => visitor.visit_map(Entries {
                entries: [].iter(),
                value: None,
                path: self.path,
            }),
            _ => Err(de::Error::invalid_type(self.unexpected(), &visitor)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.scalar() {
            Some((text, _)) => visitor.visit_enum(text.into_deserializer()),
            None => Err(de::Error::invalid_type(self.unexpected(), &visitor)),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        i128 u128 bytes byte_buf unit_struct newtype_struct tuple tuple_struct
    }
}

struct Items<'n, 'p, I: Iterator<Item = (usize, &'n Node)>> {
    items: I,
    path: &'p mut Vec<Seg>,
}

impl<'de, 'n, I: Iterator<Item = (usize, &'n Node)>> SeqAccess<'de> for Items<'n, '_, I> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        let Some((i, node)) = self.items.next() else {
            return Ok(None);
        };
        self.path.push(Seg::Index(i));
        let result = seed
            .deserialize(De {
                node,
                path: self.path,
            })
            .map_err(|e| e.locate(self.path, &node.origin));
        self.path.pop();
        result.map(Some)
    }
}

struct Entries<'n, 'p, I: Iterator<Item = &'n (Key, Node)>> {
    entries: I,
    value: Option<&'n (Key, Node)>,
    path: &'p mut Vec<Seg>,
}

impl<'de, 'n, I: Iterator<Item = &'n (Key, Node)>> MapAccess<'de> for Entries<'n, '_, I> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some(entry) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some(entry);
        let key = &entry.0;
        // An unknown key is reported at the key, with the section's path.
        seed.deserialize(key.name.as_str().into_deserializer())
            .map(Some)
            .map_err(|e: Error| e.locate(self.path, &key.origin))
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, Error> {
        let (key, node) = self.value.take().expect("a key comes before its value");
        self.path.push(Seg::Key(key.name.clone()));
        let result = seed
            .deserialize(De {
                node,
                path: self.path,
            })
            .map_err(|e| e.locate(self.path, &key.origin));
        self.path.pop();
        result
    }
}
