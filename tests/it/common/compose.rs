//! Reading the deployment files as Docker would: `docker compose -f FILE...` (interpolation,
//! merging, the parts of a service the tests look at) and the Dockerfile's stages. Shared by
//! the tests that run compose.yml (`compose`) and compose.ha.yml (`compose_ha`) from their
//! files.

use std::collections::BTreeMap;
use std::path::Path;

use serde_yaml::{Mapping, Value};

pub const REPO: &str = env!("CARGO_MANIFEST_DIR");

// ---------------------------------------------------------------------------------------
// The compose files

pub fn read(rel: &str) -> String {
    let path = Path::new(REPO).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn read_yaml(rel: &str) -> Value {
    serde_yaml::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// `docker compose -f FILE...`: each file interpolated, then merged into the first.
pub fn compose(files: &[&str], vars: &BTreeMap<&str, &str>) -> Value {
    let mut merged: Option<Value> = None;
    for file in files {
        let mut v = read_yaml(file);
        normalise_environment(&mut v);
        interpolate(&mut v, vars, file);
        match &mut merged {
            None => merged = Some(v),
            Some(m) => merge(m, v, ""),
        }
    }
    merged.unwrap()
}

/// `environment:` as a list of `K=V` becomes a mapping, so files of either form merge.
pub fn normalise_environment(compose: &mut Value) {
    let Some(services) = compose.get_mut("services").and_then(Value::as_mapping_mut) else {
        return;
    };
    for (_, svc) in services.iter_mut() {
        let Some(env) = svc.get_mut("environment") else {
            continue;
        };
        if let Value::Sequence(items) = env {
            let mut map = Mapping::new();
            for item in items.iter() {
                let item = item.as_str().expect("environment entries are strings");
                let (k, v) = item.split_once('=').unwrap_or((item, ""));
                map.insert(k.into(), v.into());
            }
            *env = Value::Mapping(map);
        }
    }
}

/// Compose's interpolation of `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
/// `${VAR:?message}`, `${VAR?message}`, `$VAR` and `$$` in every string value.
pub fn interpolate(value: &mut Value, vars: &BTreeMap<&str, &str>, file: &str) {
    match value {
        Value::String(s) => *s = interpolate_str(s, vars, file),
        Value::Sequence(items) => items.iter_mut().for_each(|v| interpolate(v, vars, file)),
        Value::Mapping(map) => map.iter_mut().for_each(|(_, v)| interpolate(v, vars, file)),
        Value::Tagged(t) => interpolate(&mut t.value, vars, file),
        _ => {}
    }
}

pub fn interpolate_str(s: &str, vars: &BTreeMap<&str, &str>, file: &str) -> String {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = after.strip_prefix('{') {
            let end = r
                .find('}')
                .unwrap_or_else(|| panic!("{file}: unclosed ${{ in {s:?}"));
            let expr = &r[..end];
            rest = &r[end + 1..];
            let name_len = expr.find(|c| !is_name(c)).unwrap_or(expr.len());
            let (name, op) = expr.split_at(name_len);
            let value = vars.get(name).copied();
            let set_nonempty = value.filter(|v| !v.is_empty());
            let resolved = if op.is_empty() {
                value.unwrap_or("").to_owned()
            } else if let Some(default) = op.strip_prefix(":-") {
                set_nonempty.unwrap_or(default).to_owned()
            } else if let Some(default) = op.strip_prefix('-') {
                value.unwrap_or(default).to_owned()
            } else if let Some(message) = op.strip_prefix(":?") {
                set_nonempty
                    .unwrap_or_else(|| panic!("{file}: {name} is required: {message}"))
                    .to_owned()
            } else if let Some(message) = op.strip_prefix('?') {
                value
                    .unwrap_or_else(|| panic!("{file}: {name} is required: {message}"))
                    .to_owned()
            } else {
                panic!("{file}: interpolation this test does not know: ${{{expr}}}")
            };
            out.push_str(&resolved);
        } else {
            let len = after.find(|c| !is_name(c)).unwrap_or(after.len());
            assert!(len > 0, "{file}: a lone $ in {s:?} (write $$)");
            out.push_str(vars.get(&after[..len]).copied().unwrap_or(""));
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    out
}

/// Compose's merge of a later file into an earlier one, for what these files use: mappings
/// merge key by key; `command`, `entrypoint` and `healthcheck.test` are replaced; `volumes`
/// merge by target; other sequences append; `!override` replaces and `!reset` removes.
pub fn merge(base: &mut Value, over: Value, key: &str) {
    match over {
        Value::Tagged(t) if t.tag == "override" => *base = t.value,
        Value::Mapping(over) if base.is_mapping() => {
            let base = base.as_mapping_mut().unwrap();
            for (k, v) in over {
                if matches!(&v, Value::Tagged(t) if t.tag == "reset") {
                    base.remove(&k);
                    continue;
                }
                let name = k.as_str().unwrap_or_default().to_owned();
                match base.get_mut(&k) {
                    Some(b) => merge(b, v, &name),
                    None => {
                        let v = match v {
                            Value::Tagged(t) => t.value,
                            v => v,
                        };
                        base.insert(k, v);
                    }
                }
            }
        }
        Value::Sequence(over) if base.is_sequence() && key == "volumes" => {
            let base = base.as_sequence_mut().unwrap();
            for v in over {
                let target = Mount::parse(&v).target;
                base.retain(|b| Mount::parse(b).target != target);
                base.push(v);
            }
        }
        Value::Sequence(over)
            if base.is_sequence() && !matches!(key, "command" | "entrypoint" | "test") =>
        {
            base.as_sequence_mut().unwrap().extend(over)
        }
        over => *base = over,
    }
}

pub fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    compose["services"]
        .get(name)
        .unwrap_or_else(|| panic!("no service `{name}`"))
}

pub fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null => String::new(),
        other => panic!("not a scalar: {other:?}"),
    }
}

pub fn env_of(svc: &Value) -> BTreeMap<String, String> {
    let Some(env) = svc.get("environment").and_then(Value::as_mapping) else {
        return BTreeMap::new();
    };
    env.iter().map(|(k, v)| (scalar(k), scalar(v))).collect()
}

pub fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("not a list: {v:?}"))
        .iter()
        .map(scalar)
        .collect()
}

/// One entry of a service's `volumes`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mount {
    /// A host path (bind mount) or a volume name; `None`: an anonymous volume.
    pub source: Option<String>,
    pub target: String,
    pub read_only: bool,
}

impl Mount {
    pub fn parse(v: &Value) -> Mount {
        match v {
            Value::String(s) => {
                let parts: Vec<&str> = s.split(':').collect();
                let (source, target, mode) = match parts.as_slice() {
                    [t] => (None, *t, ""),
                    [s, t] => (Some(*s), *t, ""),
                    [s, t, m] => (Some(*s), *t, *m),
                    _ => panic!("a volume this test cannot read: {s}"),
                };
                Mount {
                    source: source.map(str::to_owned),
                    target: target.to_owned(),
                    read_only: mode.split(',').any(|m| m == "ro"),
                }
            }
            Value::Mapping(_) => Mount {
                source: v.get("source").map(scalar),
                target: scalar(&v["target"]),
                read_only: v.get("read_only").and_then(Value::as_bool) == Some(true),
            },
            other => panic!("a volume this test cannot read: {other:?}"),
        }
    }

    pub fn is_bind(&self) -> bool {
        self.source
            .as_deref()
            .is_some_and(|s| s.starts_with('.') || s.starts_with('/') || s.starts_with('~'))
    }

    pub fn volume_name(&self) -> Option<&str> {
        (!self.is_bind())
            .then_some(self.source.as_deref())
            .flatten()
    }
}

pub fn mounts_of(svc: &Value) -> Vec<Mount> {
    svc.get("volumes")
        .and_then(Value::as_sequence)
        .map(|v| v.iter().map(Mount::parse).collect())
        .unwrap_or_default()
}

/// One entry of a service's `ports`.
#[derive(Debug, PartialEq)]
pub struct Port {
    pub published: Option<u16>,
    pub target: u16,
}

pub fn ports_of(svc: &Value) -> Vec<Port> {
    let Some(ports) = svc.get("ports").and_then(Value::as_sequence) else {
        return Vec::new();
    };
    ports
        .iter()
        .map(|p| match p {
            Value::Mapping(_) => Port {
                published: p.get("published").map(|v| scalar(v).parse().unwrap()),
                target: scalar(&p["target"]).parse().unwrap(),
            },
            other => {
                let s = scalar(other);
                let s = s.split('/').next().unwrap();
                let parts: Vec<&str> = s.rsplitn(3, ':').collect();
                Port {
                    published: parts.get(1).map(|p| p.parse().unwrap()),
                    target: parts[0].parse().unwrap(),
                }
            }
        })
        .collect()
}

/// The port of `:443`, `0.0.0.0:443`, `[::]:443` or `http://host:443`.
pub fn port_of(addr: &str) -> u16 {
    let addr = addr.trim_end_matches('/');
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in `{addr}`"))
}

pub fn is_internal(compose: &Value, network: &str) -> bool {
    compose["networks"]
        .get(network)
        .and_then(|n| n.get("internal"))
        .and_then(Value::as_bool)
        == Some(true)
}

pub fn networks_of(svc: &Value) -> Vec<String> {
    match svc.get("networks") {
        Some(Value::Sequence(_)) => strings(&svc["networks"]),
        Some(Value::Mapping(m)) => m.keys().map(scalar).collect(),
        _ => vec!["default".to_owned()],
    }
}

pub fn depends_on(svc: &Value) -> Vec<String> {
    match svc.get("depends_on") {
        Some(Value::Sequence(_)) => strings(&svc["depends_on"]),
        Some(Value::Mapping(m)) => m.keys().map(scalar).collect(),
        _ => Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------
// The Dockerfile

pub struct Stage {
    pub image: String,
    pub name: Option<String>,
    /// (INSTRUCTION, arguments), continuation lines joined.
    pub instructions: Vec<(String, String)>,
}

pub fn dockerfile() -> Vec<Stage> {
    let text = read("Dockerfile");
    let mut stages: Vec<Stage> = Vec::new();
    let mut logical = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && logical.is_empty()) {
            continue;
        }
        if let Some(part) = trimmed.strip_suffix('\\') {
            logical.push_str(part);
            logical.push(' ');
            continue;
        }
        logical.push_str(trimmed);
        let line = std::mem::take(&mut logical);
        let (instr, args) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let instr = instr.to_ascii_uppercase();
        let args = args.trim().to_owned();
        if instr == "FROM" {
            let words: Vec<&str> = args.split_whitespace().collect();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some(name.to_string()),
                _ => None,
            };
            stages.push(Stage {
                image: words[0].to_owned(),
                name,
                instructions: Vec::new(),
            });
        } else {
            stages
                .last_mut()
                .expect("an instruction before FROM")
                .instructions
                .push((instr, args));
        }
    }
    stages
}

impl Stage {
    pub fn all(&self, instr: &str) -> Vec<&str> {
        self.instructions
            .iter()
            .filter(|(i, _)| i == instr)
            .map(|(_, a)| a.as_str())
            .collect()
    }

    /// The last ENTRYPOINT or CMD, which must be in exec (JSON) form: no shell to run it.
    pub fn exec_form(&self, instr: &str) -> Vec<String> {
        let args = self
            .all(instr)
            .last()
            .copied()
            .unwrap_or_else(|| panic!("the final stage has no {instr}"));
        serde_json::from_str(args)
            .unwrap_or_else(|e| panic!("{instr} {args}: not exec (JSON) form: {e}"))
    }

    /// The (sources, destination) of each COPY from the build context.
    pub fn context_copies(&self) -> Vec<(Vec<String>, String)> {
        self.all("COPY")
            .into_iter()
            .filter(|a| !a.contains("--from="))
            .map(|a| {
                assert!(!a.starts_with('['), "COPY in JSON form: {a}");
                let mut words: Vec<String> = a
                    .split_whitespace()
                    .filter(|w| !w.starts_with("--"))
                    .map(str::to_owned)
                    .collect();
                let dest = words.pop().unwrap();
                (words, dest)
            })
            .collect()
    }
}
