//! The keys the file may hold, as one tree: each section's file declares its own list
//! beside the struct that reads it (a unit test holds the two together). Everything that
//! needs to know the keys asks this tree: the "did you mean" and "belongs under" hints,
//! the `REGATE_*` overrides, and the README's table of keys.

/// One key of a section.
#[derive(Debug)]
pub struct Key {
    pub name: &'static str,
    pub kind: Kind,
    /// The default, as the README states it; empty for "none".
    pub default: &'static str,
    /// One line for the README's table; empty for docker_auth keys the README covers in
    /// prose.
    pub doc: &'static str,
}

#[derive(Debug)]
pub enum Kind {
    /// A single value: a string, number or boolean. Each has a `REGATE_*` override.
    Scalar,
    /// A list of single values.
    List,
    /// A mapping of known keys.
    Section(&'static [Key]),
    /// A mapping from names the user chooses to sections (`users.NAME`).
    Named(&'static [Key]),
    /// A list of sections (`acl[]`).
    Items(&'static [Key]),
    /// A mapping from names the user chooses to values (`labels`).
    Free,
    /// A docker_auth section regate refuses, with the reason and what to use instead.
    Refused(&'static str),
}

impl Key {
    pub const fn scalar(name: &'static str, default: &'static str, doc: &'static str) -> Key {
        Key {
            name,
            kind: Kind::Scalar,
            default,
            doc,
        }
    }

    /// A list or a mapping of free names, documented.
    pub const fn with(
        name: &'static str,
        kind: Kind,
        default: &'static str,
        doc: &'static str,
    ) -> Key {
        Key {
            name,
            kind,
            default,
            doc,
        }
    }

    pub const fn new(name: &'static str, kind: Kind) -> Key {
        Key {
            name,
            kind,
            default: "",
            doc: "",
        }
    }
}

/// Every key a variable can set: the single values and lists of values outside lists and
/// named entries, as a dotted path (`ldap_auth.bind_password_file`), with its key.
pub fn settable(root: &'static [Key]) -> Vec<(String, &'static Key)> {
    let mut out = Vec::new();
    walk(root, "", &mut |path, key| {
        // Keys under names the user chooses (`users.<name>.password`) have no variable.
        if matches!(key.kind, Kind::Scalar | Kind::List) && !path.contains(['<', '[']) {
            out.push((path.to_owned(), key));
        }
    });
    out
}

/// Calls `f` with the dotted path of every key; names the user chooses read `<name>`,
/// list items `[]`.
pub fn walk(keys: &'static [Key], prefix: &str, f: &mut dyn FnMut(&str, &'static Key)) {
    for key in keys {
        let path = if prefix.is_empty() {
            key.name.to_owned()
        } else {
            format!("{prefix}.{}", key.name)
        };
        f(&path, key);
        match &key.kind {
            Kind::Section(inner) => walk(inner, &path, f),
            Kind::Named(inner) => walk(inner, &format!("{path}.<name>"), f),
            Kind::Items(inner) => walk(inner, &format!("{path}[]"), f),
            _ => {}
        }
    }
}

/// The README's table of keys: one row per key a value is written at, in the order of
/// the file's sections. A list of sections with a doc of its own (a robot's `acl`) is one
/// row; the refused docker_auth sections have none.
pub fn table(root: &'static [Key]) -> String {
    let mut out = String::from("| key | default | what |\n|---|---|---|\n");
    rows(root, "", &mut out);
    out
}

fn rows(keys: &'static [Key], prefix: &str, out: &mut String) {
    for key in keys {
        let path = if prefix.is_empty() {
            key.name.to_owned()
        } else {
            format!("{prefix}.{}", key.name)
        };
        let leaf = match &key.kind {
            Kind::Section(inner) => {
                rows(inner, &path, out);
                false
            }
            Kind::Named(inner) => {
                rows(inner, &format!("{path}.NAME"), out);
                false
            }
            Kind::Items(inner) if key.doc.is_empty() => {
                rows(inner, &format!("{path}[]"), out);
                false
            }
            Kind::Refused(_) => false,
            _ => true,
        };
        if leaf {
            let default = match key.default {
                "" => "—".to_owned(),
                d if d.starts_with('`') || d.contains(' ') => d.to_owned(),
                d => format!("`{d}`"),
            };
            out.push_str(&format!("| `{path}` | {default} | {} |\n", key.doc));
        }
    }
}

/// The sections (by dotted path with `<name>` and `[]`) that hold a key called `name`.
pub fn sections_with(root: &'static [Key], name: &str) -> Vec<String> {
    let mut out = Vec::new();
    walk(root, "", &mut |path, key| {
        if key.name == name {
            let section = path.rsplit_once('.').map_or("", |(s, _)| s);
            out.push(section.to_owned());
        }
    });
    out
}

/// The closest of `candidates` to `word`, if close enough to be a typo.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// The keys serde accepts for `T` (its field names), for the tests that hold each
/// section's list to its struct.
#[cfg(test)]
pub fn serde_fields<T: serde::de::DeserializeOwned>() -> Vec<&'static str> {
    struct Probe(std::cell::Cell<&'static [&'static str]>);
    impl<'de> serde::Deserializer<'de> for &Probe {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: serde::de::Visitor<'de>>(
            self,
            _: V,
        ) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("probe"))
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0.set(fields);
            Err(serde::de::Error::custom("probe"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let probe = Probe(std::cell::Cell::new(&[]));
    let _ = T::deserialize(&probe);
    probe.0.get().to_vec()
}

/// Asserts that `keys` lists exactly the fields of `T`.
#[cfg(test)]
pub fn assert_keys_match<T: serde::de::DeserializeOwned>(keys: &[Key]) {
    let mut fields = serde_fields::<T>();
    let mut listed: Vec<&str> = keys.iter().map(|k| k.name).collect();
    fields.sort_unstable();
    listed.sort_unstable();
    assert_eq!(listed, fields, "{}", std::any::type_name::<T>());
}
