//! `casbin_authz` as written -> [`CasbinConfig`]: docker_auth's `model_path` and
//! `policy_path`, relative to the config's folder. Both files are read and checked when
//! the config loads, so a model that does not parse is an error with the line.

use serde::Deserialize;

use super::keys::Key;
use super::{Cx, Failed};
use crate::auth::casbin::{Casbin, CasbinConfig};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCasbin {
    model_path: Option<String>,
    policy_path: Option<String>,
}

pub(super) const KEYS: &[Key] = &[
    Key::scalar("model_path", "", "the casbin model (`.conf`)"),
    Key::scalar(
        "policy_path",
        "",
        "the policy (`.csv`; docker_auth's quoted JSON labels read as written)",
    ),
];

pub(super) fn build(raw: RawCasbin, cx: &mut Cx<'_>) -> Result<CasbinConfig, Failed> {
    let section = "casbin_authz";
    let Some(model) = raw.model_path.filter(|p| !p.is_empty()) else {
        return cx.fail(
            &[section],
            "`model_path` is required: the casbin model file",
        );
    };
    let Some(policy) = raw.policy_path.filter(|p| !p.is_empty()) else {
        return cx.fail(
            &[section],
            "`policy_path` is required: the casbin policy file",
        );
    };
    let config = CasbinConfig {
        model_path: cx.resolve(&model),
        policy_path: cx.resolve(&policy),
    };
    Casbin::load(&config).or_else(|m| cx.fail(&[section], m))?;
    Ok(config)
}

#[cfg(test)]
#[test]
fn the_keys_are_the_structs() {
    super::keys::assert_keys_match::<RawCasbin>(KEYS);
}
