//! How a config reports: [`ConfigError`] (`file:line:column: key: message`, a hint, and
//! the errors found beside it), and the context each section is read in ([`Cx`]).

use std::fmt;
use std::path::{Path, PathBuf};

use super::yaml::{display as display_path, key, Node, Seg};

/// What went wrong, and where: `file:line:column: key: message`, and a hint when one helps.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub position: Option<(usize, usize)>,
    pub key: Option<String>,
    pub message: String,
    pub hint: Option<String>,
    /// Further errors found in the same file, in file order.
    pub also: Vec<ConfigError>,
}

impl ConfigError {
    /// An error about the whole file, not a key in it.
    pub fn file(file: &Path, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: file.to_owned(),
            position: None,
            key: None,
            message: message.into(),
            hint: None,
            also: Vec::new(),
        }
    }

    /// This error and the ones found with it.
    pub fn all(&self) -> impl Iterator<Item = &ConfigError> {
        std::iter::once(self).chain(self.also.iter())
    }

    fn one(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, column)) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        f.write_str(": ")?;
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.one(f)?;
        for e in &self.also {
            f.write_str("\n")?;
            e.one(f)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// A section failed; its errors are recorded in the [`Cx`].
#[derive(Debug)]
pub(crate) struct Failed;

/// What validating one file needs: where errors point, where relative paths start; and
/// what it found.
pub(crate) struct Cx<'a> {
    file: &'a Path,
    pub(super) doc: &'a Node,
    base: PathBuf,
    pub(super) warnings: Vec<String>,
    pub(super) errors: Vec<ConfigError>,
}

impl<'a> Cx<'a> {
    pub(super) fn new(file: &'a Path, doc: &'a Node) -> Cx<'a> {
        Cx {
            file,
            doc,
            base: file.parent().unwrap_or(Path::new(".")).to_owned(),
            warnings: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// An error at `path`, located in the file (or naming the variable that set it).
    pub fn error(&self, path: &[Seg], message: impl Into<String>) -> ConfigError {
        let (position, variable) = self.doc.locate(path);
        ConfigError {
            file: self.file.to_owned(),
            position,
            key: (!path.is_empty()).then(|| display_path(path)),
            message: message.into(),
            hint: variable.map(|v| format!("set from the environment by {v}")),
            also: Vec::new(),
        }
    }

    /// Records an error made with [`Cx::error`].
    pub fn push(&mut self, e: ConfigError) -> Failed {
        self.errors.push(e);
        Failed
    }

    /// Records an error at a path of keys and fails the section.
    pub fn fail<T>(&mut self, path: &[&str], message: impl Into<String>) -> Result<T, Failed> {
        let path: Vec<Seg> = path.iter().map(|k| key(k)).collect();
        Err(self.fail_at(&path, message))
    }

    pub fn fail_at(&mut self, path: &[Seg], message: impl Into<String>) -> Failed {
        let e = self.error(path, message);
        self.errors.push(e);
        Failed
    }

    /// As [`Cx::fail`], with a hint on what to write instead.
    pub fn fail_hint<T>(
        &mut self,
        path: &[&str],
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Result<T, Failed> {
        let path: Vec<Seg> = path.iter().map(|k| key(k)).collect();
        let mut e = self.error(&path, message);
        let hint = hint.into();
        e.hint = Some(match e.hint.take() {
            Some(env) => format!("{hint}; {env}"),
            None => hint,
        });
        self.errors.push(e);
        Err(Failed)
    }

    pub fn warn(&mut self, message: impl Into<String>) {
        self.warnings.push(message.into());
    }

    /// A path from the file, relative to the config's folder unless absolute.
    pub fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.base.join(p)
        }
    }

    pub fn file(&self) -> &Path {
        self.file
    }
}

/// The parsed file, kept for the lints that point into it.
pub struct Document {
    pub file: PathBuf,
    pub root: Node,
}

impl Document {
    /// Line and column of `path` (or of the nearest enclosing key that exists).
    pub fn position(&self, path: &[Seg]) -> Option<(usize, usize)> {
        self.root.locate(path).0
    }
}
