//! `acl:` (and each robot's `acl:`) -> [`Acl`]: docker_auth's rules, compiled; an error
//! names the rule and the field.

use super::keys::{Key, Kind};
use super::{key, Cx, Failed, Seg};
use crate::acl::{Acl, RawEntry};

pub(super) const MATCH_KEYS: &[Key] = &[
    Key::scalar("account", "", ""),
    Key::scalar("type", "", ""),
    Key::scalar("name", "", ""),
    Key::scalar("service", "", ""),
    Key::scalar("ip", "", ""),
    Key::new("labels", Kind::Free),
];

pub(super) const KEYS: &[Key] = &[
    Key::new("match", Kind::Section(MATCH_KEYS)),
    Key::new("actions", Kind::List),
    Key::scalar(
        "comment",
        "",
        "shown by `regate explain` and in the audit log",
    ),
];

pub(super) fn build(
    entries: Option<Vec<RawEntry>>,
    cx: &mut Cx<'_>,
) -> Result<std::sync::Arc<Acl>, Failed> {
    let entries = entries.unwrap_or_else(|| {
        cx.warn("no `acl`: every request is denied");
        Vec::new()
    });
    compile(&entries, &[key("acl")], cx).map(std::sync::Arc::new)
}

/// Compiles a list of rules found at `prefix`; every rule that does not compile is an
/// error of its own.
pub(super) fn compile(
    entries: &[RawEntry],
    prefix: &[Seg],
    cx: &mut Cx<'_>,
) -> Result<Acl, Failed> {
    Acl::compile(entries).map_err(|errors| {
        let mut failed = Failed;
        for e in errors {
            let mut path = prefix.to_vec();
            path.push(Seg::Index(e.index));
            path.extend(e.field.split('.').map(key));
            failed = cx.fail_at(&path, e.message);
        }
        failed
    })
}

#[cfg(test)]
#[test]
fn the_keys_are_the_structs() {
    super::keys::assert_keys_match::<RawEntry>(KEYS);
    super::keys::assert_keys_match::<crate::acl::RawMatch>(MATCH_KEYS);
}
