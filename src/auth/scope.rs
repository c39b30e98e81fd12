//! The token scope grammar: `type[(class)]:name:action[,action]*`
//! (distribution `docs/spec/auth/scope.md`).
//!
//! A name may carry a `host:port/` prefix, so the scope is split at the first and the last
//! `:`, never naively in three. The resource class is dropped: registry:2 ignores it when it
//! compares access, and docker_auth drops it too, so `repository(plugin)` is `repository`.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub resource_type: String,
    pub name: String,
    /// As requested, in request order, without duplicates.
    pub actions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("scope {0:?} is not type:name:actions")]
    Shape(String),
    #[error("scope {0:?} has an invalid resource type")]
    Type(String),
    #[error("scope {0:?} has an invalid action")]
    Action(String),
}

impl Scope {
    pub fn new(resource_type: &str, name: &str, actions: &[&str]) -> Scope {
        Scope {
            resource_type: resource_type.to_owned(),
            name: name.to_owned(),
            actions: actions.iter().map(|a| (*a).to_owned()).collect(),
        }
    }

    pub fn parse(s: &str) -> Result<Scope, ScopeError> {
        let shape = || ScopeError::Shape(s.to_owned());
        let (kind, rest) = s.split_once(':').ok_or_else(shape)?;
        let (name, actions) = rest.rsplit_once(':').ok_or_else(shape)?;
        if name.is_empty() {
            return Err(shape());
        }
        let resource_type = parse_type(kind).ok_or_else(|| ScopeError::Type(s.to_owned()))?;
        let mut list: Vec<String> = Vec::new();
        for action in actions.split(',') {
            // The grammar says /[a-z]*/, but registry:2 itself asks for `*` (catalog) and
            // skopeo asks for `*` on delete.
            let ok = action == "*" || action.bytes().all(|b| b.is_ascii_lowercase());
            if !ok {
                return Err(ScopeError::Action(s.to_owned()));
            }
            if !action.is_empty() && !list.iter().any(|a| a == action) {
                list.push(action.to_owned());
            }
        }
        Ok(Scope {
            resource_type: resource_type.to_owned(),
            name: name.to_owned(),
            actions: list,
        })
    }

    /// Several scopes separated by spaces (the challenge's and OAuth2 POST's form).
    pub fn parse_list(s: &str) -> Result<Vec<Scope>, ScopeError> {
        s.split(' ')
            .filter(|p| !p.is_empty())
            .map(Scope::parse)
            .collect()
    }
}

/// `resourcetype := [a-z0-9]+ [ '(' [a-z0-9]+ ')' ]`; returns the type without the class.
fn parse_type(kind: &str) -> Option<&str> {
    let word = |w: &str| {
        !w.is_empty()
            && w.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    match kind.split_once('(') {
        None => word(kind).then_some(kind),
        Some((base, class)) => {
            let class = class.strip_suffix(')')?;
            (word(base) && word(class)).then_some(base)
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.resource_type,
            self.name,
            self.actions.join(",")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_repository_scope() {
        let s = Scope::parse("repository:foo/bar:pull,push").unwrap();
        assert_eq!(s, Scope::new("repository", "foo/bar", &["pull", "push"]));
        assert_eq!(s.to_string(), "repository:foo/bar:pull,push");
    }

    #[test]
    fn name_with_host_and_port() {
        let s = Scope::parse("repository:localhost:5000/foo:pull").unwrap();
        assert_eq!(s.name, "localhost:5000/foo");
        assert_eq!(s.actions, ["pull"]);
    }

    #[test]
    fn class_is_dropped() {
        let s = Scope::parse("repository(plugin):vieux/sshfs:pull").unwrap();
        assert_eq!(s.resource_type, "repository");
    }

    #[test]
    fn catalog_star() {
        let s = Scope::parse("registry:catalog:*").unwrap();
        assert_eq!(s, Scope::new("registry", "catalog", &["*"]));
    }

    #[test]
    fn duplicates_and_empty_actions_are_dropped() {
        let s = Scope::parse("repository:a:pull,,pull").unwrap();
        assert_eq!(s.actions, ["pull"]);
        let s = Scope::parse("repository:a:").unwrap();
        assert!(s.actions.is_empty());
    }

    #[test]
    fn malformed() {
        for bad in [
            "",
            "repository",
            "repository:foo",
            "repository::pull",
            "Repo:foo:pull",
            "repository(:foo:pull",
            "repository:foo:PULL",
            "repository:foo:pu-ll",
        ] {
            assert!(Scope::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn space_separated_list() {
        let l = Scope::parse_list("repository:a:pull,push  repository:b:pull").unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[1].name, "b");
        assert!(Scope::parse_list("").unwrap().is_empty());
    }
}
