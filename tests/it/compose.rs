//! The deployment files, checked and run here without Docker: compose.yml with the override
//! files in config/, the example configs in config/, and the Dockerfile.
//!
//! No image can be pulled and no Docker engine runs here, so the tests read the files and
//! run the topology they describe with the same programs: Debian's `docker-registry` (the
//! distribution 2.8 code inside registry:2), configured only by the `REGISTRY_*` variables
//! the compose files give it on top of the registry:2 image's own config file; and the regate
//! binary, started with the Dockerfile's ENTRYPOINT and CMD (or the compose `command`) and the
//! config file mounted from config/. skopeo then pushes and pulls over HTTPS, trusting only
//! the CA `regate cert init` made.
//!
//! What is rewritten, because it belongs to the container rather than to the files:
//! - paths under a mount target (in regate's config and argv, in `REGISTRY_*` values) point
//!   into a temp dir standing in for the mounts: a copy of config/ with certificates from
//!   `regate cert init`, and a folder per named volume. That is how data_dir and
//!   REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY land in the volumes' stand-ins;
//! - REGISTRY_HTTP_ADDR becomes `127.0.0.1:0`: `:5000` is private to the registry's
//!   container, but here it would listen on every interface of the machine, and the port may
//!   be taken (Debian's own docker-registry service uses it);
//! - regate's server.addr and http_redirect_addr become free loopback ports instead of 443
//!   and 80, and upstream.url's `registry:5000` (a compose service name) the registry's
//!   address.
//!
//! Each rewritten value is first checked against the compose files: the listen ports are
//! published, the upstream is the registry service on its REGISTRY_HTTP_ADDR port, data_dir
//! is on a writable volume, and where the registry checks tokens, regate's issuer, service and
//! signing certificate are the registry's.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::common::{
    basic, ca_only_dir, cert_init, get, oci_image, oci_manifest_digest, skopeo, ReservedPort, Resp,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_yaml::{Mapping, Value};
use tempfile::TempDir;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const REGATE: &str = env!("CARGO_BIN_EXE_regate");

/// The registry:2 image's own `/etc/docker/registry/config.yml` (distribution-library-image,
/// 2.x): what the `REGISTRY_*` variables override in the container.
const REGISTRY_IMAGE_CONFIG: &str = "\
version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
";

/// The layouts the compose files document: `docker compose -f ...` for each.
const LAYOUT_PLAIN: &[&str] = &["compose.yml"];
const LAYOUT_TOKEN: &[&str] = &["compose.yml", "config/compose.token-registry.yml"];
const LAYOUT_SEED: &[&str] = &["compose.yml", "config/compose.docker_auth-seed.yml"];

/// The example accounts, with the passwords the config files' comments give.
const ADMIN: &str = "admin:admin-example";
const ALICE: &str = "alice:alice-example";
const HUSSEIN: &str = "hussein:hussein-example";

/// The names regate's certificate is made for here: the documented one, and the address
/// the test reaches regate by.
const CERT_HOSTS: &[&str] = &["registry.example.com", "127.0.0.1"];

// ---------------------------------------------------------------------------------------
// Reading the compose files

fn read(rel: &str) -> String {
    let path = Path::new(REPO).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn read_yaml(rel: &str) -> Value {
    serde_yaml::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The variables a user would have in the shell or `.env`: none, so defaults apply.
fn no_vars() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::new()
}

/// `docker compose -f FILE...`: each file interpolated, then merged into the first.
fn compose(files: &[&str], vars: &BTreeMap<&str, &str>) -> Value {
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
fn normalise_environment(compose: &mut Value) {
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
fn interpolate(value: &mut Value, vars: &BTreeMap<&str, &str>, file: &str) {
    match value {
        Value::String(s) => *s = interpolate_str(s, vars, file),
        Value::Sequence(items) => items.iter_mut().for_each(|v| interpolate(v, vars, file)),
        Value::Mapping(map) => map.iter_mut().for_each(|(_, v)| interpolate(v, vars, file)),
        Value::Tagged(t) => interpolate(&mut t.value, vars, file),
        _ => {}
    }
}

fn interpolate_str(s: &str, vars: &BTreeMap<&str, &str>, file: &str) -> String {
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
fn merge(base: &mut Value, over: Value, key: &str) {
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

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    compose["services"]
        .get(name)
        .unwrap_or_else(|| panic!("no service `{name}`"))
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null => String::new(),
        other => panic!("not a scalar: {other:?}"),
    }
}

fn env_of(svc: &Value) -> BTreeMap<String, String> {
    let Some(env) = svc.get("environment").and_then(Value::as_mapping) else {
        return BTreeMap::new();
    };
    env.iter().map(|(k, v)| (scalar(k), scalar(v))).collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("not a list: {v:?}"))
        .iter()
        .map(scalar)
        .collect()
}

/// One entry of a service's `volumes`.
#[derive(Debug, Clone, PartialEq)]
struct Mount {
    /// A host path (bind mount) or a volume name; `None`: an anonymous volume.
    source: Option<String>,
    target: String,
    read_only: bool,
}

impl Mount {
    fn parse(v: &Value) -> Mount {
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

    fn is_bind(&self) -> bool {
        self.source
            .as_deref()
            .is_some_and(|s| s.starts_with('.') || s.starts_with('/') || s.starts_with('~'))
    }

    fn volume_name(&self) -> Option<&str> {
        (!self.is_bind())
            .then_some(self.source.as_deref())
            .flatten()
    }
}

fn mounts_of(svc: &Value) -> Vec<Mount> {
    svc.get("volumes")
        .and_then(Value::as_sequence)
        .map(|v| v.iter().map(Mount::parse).collect())
        .unwrap_or_default()
}

/// One entry of a service's `ports`.
#[derive(Debug, PartialEq)]
struct Port {
    published: Option<u16>,
    target: u16,
}

fn ports_of(svc: &Value) -> Vec<Port> {
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
fn port_of(addr: &str) -> u16 {
    let addr = addr.trim_end_matches('/');
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in `{addr}`"))
}

fn is_internal(compose: &Value, network: &str) -> bool {
    compose["networks"]
        .get(network)
        .and_then(|n| n.get("internal"))
        .and_then(Value::as_bool)
        == Some(true)
}

fn networks_of(svc: &Value) -> Vec<String> {
    match svc.get("networks") {
        Some(Value::Sequence(_)) => strings(&svc["networks"]),
        Some(Value::Mapping(m)) => m.keys().map(scalar).collect(),
        _ => vec!["default".to_owned()],
    }
}

fn depends_on(svc: &Value) -> Vec<String> {
    match svc.get("depends_on") {
        Some(Value::Sequence(_)) => strings(&svc["depends_on"]),
        Some(Value::Mapping(m)) => m.keys().map(scalar).collect(),
        _ => Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------
// Reading the Dockerfile and .dockerignore

struct Stage {
    image: String,
    name: Option<String>,
    /// (INSTRUCTION, arguments), continuation lines joined.
    instructions: Vec<(String, String)>,
}

fn dockerfile() -> Vec<Stage> {
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
    fn all(&self, instr: &str) -> Vec<&str> {
        self.instructions
            .iter()
            .filter(|(i, _)| i == instr)
            .map(|(_, a)| a.as_str())
            .collect()
    }

    /// The last ENTRYPOINT or CMD, which must be in exec (JSON) form: no shell to run it.
    fn exec_form(&self, instr: &str) -> Vec<String> {
        let args = self
            .all(instr)
            .last()
            .copied()
            .unwrap_or_else(|| panic!("the final stage has no {instr}"));
        serde_json::from_str(args)
            .unwrap_or_else(|e| panic!("{instr} {args}: not exec (JSON) form: {e}"))
    }

    /// The (sources, destination) of each COPY from the build context.
    fn context_copies(&self) -> Vec<(Vec<String>, String)> {
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

/// .dockerignore's patterns: (re-include?, pattern).
fn dockerignore() -> Vec<(bool, String)> {
    read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| match l.strip_prefix('!') {
            Some(p) => (
                true,
                p.trim_start_matches("./").trim_matches('/').to_owned(),
            ),
            None => (
                false,
                l.trim_start_matches("./").trim_matches('/').to_owned(),
            ),
        })
        .collect()
}

/// Whether the build context leaves `path` out: the last pattern that matches the path or
/// one of its parent folders decides (moby/patternmatcher's rule).
fn ignored(patterns: &[(bool, String)], path: &str) -> bool {
    let mut prefixes: Vec<&str> = path.match_indices('/').map(|(i, _)| &path[..i]).collect();
    prefixes.push(path);
    let mut out = false;
    for (include, pattern) in patterns {
        if prefixes
            .iter()
            .any(|p| glob(pattern.as_bytes(), p.as_bytes()))
        {
            out = !include;
        }
    }
    out
}

/// Go's filepath.Match plus `**`: `*` and `?` stay within one path segment.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern {
        [] => text.is_empty(),
        [b'*', b'*', rest @ ..] => {
            let rest = rest.strip_prefix(b"/").unwrap_or(rest);
            (0..=text.len()).any(|i| glob(rest, &text[i..]))
        }
        [b'*', rest @ ..] => (0..=text.len())
            .take_while(|&i| i == 0 || text[i - 1] != b'/')
            .any(|i| glob(rest, &text[i..])),
        [b'?', rest @ ..] => matches!(text, [c, t @ ..] if *c != b'/' && glob(rest, t)),
        [p, rest @ ..] => matches!(text, [c, t @ ..] if c == p && glob(rest, t)),
    }
}

/// Every file under `dir`, relative to the repository.
fn files_under(dir: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![Path::new(REPO).join(dir)];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(REPO).unwrap();
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// The topology, run from the files

/// Where the mounts' sources live here: `project/` is compose.yml's folder (config/ copied
/// into it, certificates made in it), `volumes/NAME` a named volume.
struct Host {
    dir: TempDir,
}

impl Host {
    fn new() -> Host {
        let host = Host {
            dir: tempfile::tempdir().unwrap(),
        };
        let config = host.project().join("config");
        std::fs::create_dir_all(&config).unwrap();
        for entry in std::fs::read_dir(Path::new(REPO).join("config")).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::copy(&path, config.join(path.file_name().unwrap())).unwrap();
            }
        }
        // Step 1 of compose.yml's comment, and the seed's hand-made pair (./ssl) from it.
        let certs = config.join("certs");
        cert_init(&certs, CERT_HOSTS);
        let ssl = host.project().join("ssl");
        std::fs::create_dir_all(&ssl).unwrap();
        std::fs::copy(certs.join("server.crt"), ssl.join("server.pem")).unwrap();
        std::fs::copy(certs.join("server.key"), ssl.join("server.key")).unwrap();
        host
    }

    fn project(&self) -> PathBuf {
        self.dir.path().join("project")
    }

    fn ca(&self) -> PathBuf {
        self.project().join("config/certs/ca.crt")
    }

    /// Where a mount's source is here.
    fn source(&self, m: &Mount) -> PathBuf {
        let source = m.source.as_deref().unwrap_or_else(|| {
            panic!(
                "anonymous volume at {}: its data would not persist",
                m.target
            )
        });
        let path = if let Some(name) = m.volume_name() {
            self.dir.path().join("volumes").join(name)
        } else if let Some(rel) = source.strip_prefix("./") {
            self.project().join(rel)
        } else if source == "." {
            self.project()
        } else {
            self.dir
                .path()
                .join("root")
                .join(source.trim_start_matches('/'))
        };
        if m.volume_name().is_some() {
            std::fs::create_dir_all(&path).unwrap();
        }
        path
    }

    /// A service's mounts with their sources here.
    fn mounts(&self, svc: &Value) -> Vec<(Mount, PathBuf)> {
        mounts_of(svc)
            .into_iter()
            .map(|m| {
                let source = self.source(&m);
                (m, source)
            })
            .collect()
    }
}

/// The host path a container path is at, through the longest mount target above it.
fn host_path(mounts: &[(Mount, PathBuf)], container: &str) -> Option<PathBuf> {
    mounts
        .iter()
        .filter(|(m, _)| container == m.target || container.starts_with(&format!("{}/", m.target)))
        .max_by_key(|(m, _)| m.target.len())
        .map(|(m, host)| {
            let rest = container[m.target.len()..].trim_start_matches('/');
            if rest.is_empty() {
                host.clone()
            } else {
                host.join(rest)
            }
        })
}

/// Every string that is a path under a mount target now points at the mount's source.
fn rewrite_paths(value: &mut Value, mounts: &[(Mount, PathBuf)]) {
    match value {
        Value::String(s) if s.starts_with('/') => {
            if let Some(p) = host_path(mounts, s) {
                *s = p.display().to_string();
            }
        }
        Value::Sequence(items) => items.iter_mut().for_each(|v| rewrite_paths(v, mounts)),
        Value::Mapping(map) => map.iter_mut().for_each(|(_, v)| rewrite_paths(v, mounts)),
        _ => {}
    }
}

/// A child process, killed on drop, with its output in a file.
struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The compose topology, running here.
struct Topology {
    compose: Value,
    host: Host,
    registry: Process,
    registry_addr: SocketAddr,
    /// The registry's storage: the named volume's stand-in.
    storage: PathBuf,
    regate: Regate,
    https: SocketAddr,
    redirect: Option<SocketAddr>,
}

/// regate, running.
struct Regate {
    process: Process,
    https: SocketAddr,
    redirect: Option<SocketAddr>,
    /// The port its config listens on in the container.
    container_port: u16,
    /// What `regate check` says about the config, as `docker compose run regate check`
    /// would.
    check: String,
    /// Its listening ports, held while it runs.
    _ports: Vec<ReservedPort>,
}

impl Topology {
    fn start(files: &[&str]) -> Topology {
        let compose = compose(files, &no_vars());
        let host = Host::new();
        let (registry, registry_addr, storage) = start_registry(&compose, &host);
        let regate = start_regate(&compose, &host, registry_addr);
        Topology {
            compose,
            host,
            registry,
            registry_addr,
            storage,
            https: regate.https,
            redirect: regate.redirect,
            regate,
        }
    }

    /// `host:port` as clients write it in image names.
    fn client_host(&self) -> String {
        self.https.to_string()
    }

    fn logs(&self) -> String {
        format!(
            "--- regate:\n{}\n--- registry:\n{}",
            self.regate.process.log(),
            self.registry.log()
        )
    }

    fn registry_checks_tokens(&self) -> bool {
        env_of(service(&self.compose, "registry"))
            .get("REGISTRY_AUTH")
            .is_some_and(|a| a == "token")
    }
}

/// `docker-registry serve` on the registry:2 image's config file, with the service's
/// environment and nothing else.
fn start_registry(compose: &Value, host: &Host) -> (Process, SocketAddr, PathBuf) {
    let svc = service(compose, "registry");
    let mounts = host.mounts(svc);
    let mut env = env_of(svc);
    for value in env.values_mut() {
        if value.starts_with('/') {
            if let Some(p) = host_path(&mounts, value) {
                *value = p.display().to_string();
            }
        }
    }
    env.insert("REGISTRY_HTTP_ADDR".into(), "127.0.0.1:0".into());
    let storage = PathBuf::from(
        env.get("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY")
            .expect("compose sets REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY"),
    );
    assert!(
        storage.starts_with(host.dir.path().join("volumes")),
        "the registry's storage is not on a named volume: {}",
        storage.display()
    );
    let config = host.dir.path().join("registry-image-config.yml");
    std::fs::write(&config, REGISTRY_IMAGE_CONFIG).unwrap();
    let log = host.dir.path().join("registry.log");
    let mut child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .env_clear()
        .envs(&env)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker-registry is installed (apt-get install docker-registry)");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let log_path = log.clone();
    std::thread::spawn(move || {
        let mut file = std::fs::File::create(log_path).unwrap();
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = writeln!(file, "{line}");
            if let Some(rest) = line.split("listening on ").nth(1) {
                if let Some(tx) = tx.take() {
                    let addr = rest.split(['"', ' ']).next().unwrap_or("").to_owned();
                    let _ = tx.send(addr);
                }
            }
        }
    });
    let process = Process { child, log };
    let addr = rx
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| {
            panic!(
                "docker-registry did not start with {env:?}:\n{}",
                process.log()
            )
        });
    (process, addr.parse().unwrap(), storage)
}

/// regate with the image's argv and the mounted config, its container-only values
/// checked against the compose files and then rewritten.
fn start_regate(compose: &Value, host: &Host, registry_addr: SocketAddr) -> Regate {
    let svc = service(compose, "regate");
    let mounts = host.mounts(svc);
    let stages = dockerfile();
    let image = stages.last().unwrap();
    let entrypoint = image.exec_form("ENTRYPOINT");
    assert_eq!(entrypoint, ["/regate"]);
    let args = match svc.get("command") {
        Some(c) => strings(c),
        None => image.exec_form("CMD"),
    };
    let config_arg = args
        .iter()
        .position(|a| a == "--config")
        .map(|i| args[i + 1].clone())
        .unwrap_or_else(|| "/config/regate.yml".to_owned());
    let config_path = host_path(&mounts, &config_arg)
        .unwrap_or_else(|| panic!("{config_arg} is on no mount of the regate service"));
    let text = std::fs::read_to_string(&config_path)
        .unwrap_or_else(|e| panic!("{config_arg} ({}): {e}", config_path.display()));
    let mut config: Value = serde_yaml::from_str(&text).unwrap();

    let published: Vec<u16> = ports_of(svc)
        .into_iter()
        .filter(|p| p.published.is_some())
        .map(|p| p.target)
        .collect();
    let container_port = port_of(config["server"]["addr"].as_str().unwrap());
    assert!(
        published.contains(&container_port),
        "{config_arg}: server.addr's port {container_port} is not published ({published:?})"
    );
    let mut ports = vec![ReservedPort::new()];
    let https = SocketAddr::from(([127, 0, 0, 1], ports[0].port()));
    config["server"]["addr"] = https.to_string().into();
    let mut redirect = None;
    if let Some(addr) = config["server"].get("http_redirect_addr") {
        let port = port_of(addr.as_str().unwrap());
        assert!(
            published.contains(&port),
            "{config_arg}: server.http_redirect_addr's port {port} is not published ({published:?})"
        );
        ports.push(ReservedPort::new());
        let addr = SocketAddr::from(([127, 0, 0, 1], ports[1].port()));
        config["server"]["http_redirect_addr"] = addr.to_string().into();
        redirect = Some(addr);
    }

    let upstream = config["upstream"]["url"].as_str().unwrap().to_owned();
    let upstream_host = upstream
        .strip_prefix("http://")
        .and_then(|r| r.split(':').next())
        .unwrap();
    assert_eq!(
        upstream_host, "registry",
        "{config_arg}: upstream.url names the registry service"
    );
    assert!(
        depends_on(svc).iter().any(|d| d == upstream_host),
        "regate depends_on {upstream_host}"
    );
    let registry_env = env_of(service(compose, "registry"));
    assert_eq!(
        port_of(&upstream),
        port_of(&registry_env["REGISTRY_HTTP_ADDR"]),
        "{config_arg}: upstream.url's port is REGISTRY_HTTP_ADDR's"
    );
    config["upstream"]["url"] = format!("http://{registry_addr}").into();

    if let Some(dir) = config.get("data_dir").and_then(Value::as_str) {
        let writable = mounts.iter().any(|(m, _)| {
            !m.read_only && (dir == m.target || dir.starts_with(&format!("{}/", m.target)))
        });
        assert!(
            writable,
            "{config_arg}: data_dir {dir} is on no writable mount"
        );
    }
    if registry_env
        .get("REGISTRY_AUTH")
        .is_some_and(|a| a == "token")
    {
        check_token_trust(compose, host, &config, &config_arg);
    }

    rewrite_paths(&mut config, &mounts);
    std::fs::write(&config_path, serde_yaml::to_string(&config).unwrap()).unwrap();

    let mut value_args = Value::Sequence(args.iter().map(|a| a.as_str().into()).collect());
    rewrite_paths(&mut value_args, &mounts);
    let args = strings(&value_args);
    let check = Command::new(REGATE)
        .args(["check", "--config"])
        .arg(&config_path)
        .env_clear()
        .output()
        .unwrap();
    let check_text = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        check.status.success(),
        "regate check {config_arg}: {check_text}"
    );
    let log = host.dir.path().join("regate.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(REGATE)
        .args(&args)
        .env_clear()
        .envs(env_of(svc))
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let mut process = Process { child, log };
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(https).is_err() {
        if let Some(status) = process.child.try_wait().unwrap() {
            panic!("regate {args:?} exited ({status}):\n{}", process.log());
        }
        assert!(
            Instant::now() < deadline,
            "regate is not listening on {https} after 15 s:\n{}",
            process.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Regate {
        process,
        https,
        redirect,
        container_port,
        check: check_text,
        _ports: ports,
    }
}

/// Where the registry checks tokens: it trusts what regate signs, by the same issuer,
/// service and certificate.
fn check_token_trust(compose: &Value, host: &Host, config: &Value, config_arg: &str) {
    let registry = service(compose, "registry");
    let env = env_of(registry);
    let token = config.get("token").cloned().unwrap_or(Value::Null);
    let issuer = token
        .get("issuer")
        .and_then(Value::as_str)
        .unwrap_or("regate");
    let service_name = token
        .get("service")
        .and_then(Value::as_str)
        .unwrap_or("Docker registry");
    assert_eq!(
        issuer, env["REGISTRY_AUTH_TOKEN_ISSUER"],
        "{config_arg}: token.issuer"
    );
    assert_eq!(
        service_name, env["REGISTRY_AUTH_TOKEN_SERVICE"],
        "{config_arg}: token.service"
    );
    // docker_auth's rule, which regate keeps: no token pair means the server pair signs.
    let signing = token
        .get("certificate")
        .or_else(|| config["server"].get("certificate"))
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{config_arg}: no certificate signs the tokens"));
    let regate_side = host_path(&host.mounts(service(compose, "regate")), signing).unwrap();
    let bundle = &env["REGISTRY_AUTH_TOKEN_ROOTCERTBUNDLE"];
    let registry_side = host_path(&host.mounts(registry), bundle)
        .unwrap_or_else(|| panic!("REGISTRY_AUTH_TOKEN_ROOTCERTBUNDLE {bundle} is on no mount"));
    assert_eq!(
        regate_side.canonicalize().unwrap(),
        registry_side.canonicalize().unwrap(),
        "{config_arg}: the token certificate {signing} and the registry's bundle {bundle} are different files"
    );
}

// ---------------------------------------------------------------------------------------
// Clients

/// skopeo with its own auth file, trusting only regate's CA.
struct Skopeo {
    work: TempDir,
    certs: TempDir,
    host: String,
}

impl Skopeo {
    fn new(t: &Topology) -> Skopeo {
        Skopeo {
            work: tempfile::tempdir().unwrap(),
            certs: ca_only_dir(&t.host.ca()),
            host: t.client_host(),
        }
    }

    async fn run(&self, args: Vec<String>) -> (bool, String) {
        let authfile = self.work.path().join("auth.json");
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            skopeo(&authfile, &args)
        })
        .await
        .unwrap()
    }

    async fn push(&self, image: &Path, creds: Option<&str>, target: &str) -> (bool, String) {
        let mut args = vec![
            "copy".to_owned(),
            format!("--dest-cert-dir={}", self.certs.path().display()),
        ];
        if let Some(c) = creds {
            args.push(format!("--dest-creds={c}"));
        }
        args.push(format!("oci:{}:latest", image.display()));
        args.push(format!("docker://{}/{target}", self.host));
        self.run(args).await
    }

    /// Pulls into a fresh OCI layout; returns it with the outcome.
    async fn pull(&self, creds: Option<&str>, source: &str) -> (bool, String, PathBuf) {
        let out = self.work.path().join(format!(
            "pulled-{}-{}",
            creds
                .map(|c| c.split(':').next().unwrap())
                .unwrap_or("anonymous"),
            source.replace(['/', ':'], "_")
        ));
        let mut args = vec![
            "copy".to_owned(),
            format!("--src-cert-dir={}", self.certs.path().display()),
        ];
        if let Some(c) = creds {
            args.push(format!("--src-creds={c}"));
        }
        args.push(format!("docker://{}/{source}", self.host));
        args.push(format!("oci:{}:latest", out.display()));
        let (ok, text) = self.run(args).await;
        (ok, text, out)
    }
}

/// The image config a pulled OCI layout's manifest names (skopeo compresses layers on the
/// way up, so the manifest changes; the config does not).
fn pulled_config(layout: &Path) -> String {
    let manifest = oci_manifest_digest(layout);
    let blob = layout
        .join("blobs/sha256")
        .join(manifest.strip_prefix("sha256:").unwrap());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob).unwrap()).unwrap();
    manifest["config"]["digest"].as_str().unwrap().to_owned()
}

/// One HTTPS request to regate, trusting only its CA, checking the name 127.0.0.1.
async fn https_get(t: &Topology, path: &str, headers: &[(&str, &str)]) -> Resp {
    use hyper_util::rt::TokioIo;
    use rustls::pki_types::ServerName;

    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(t.host.ca()).unwrap();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(t.https).await.unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(ServerName::IpAddress(t.https.ip().into()), tcp)
        .await
        .expect("TLS with regate's certificate, trusting only ca.crt");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = hyper::Request::get(path).header("host", t.https.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = send
        .send_request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    Resp {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// What every layout serves besides the registry API: health, readiness, the redirect, and
/// the compose healthcheck once regate can run it.
async fn gateway_extras(t: &Topology) {
    let health = https_get(t, "/healthz", &[]).await;
    assert_eq!(health.status, 200, "{}", t.logs());
    let ready = https_get(t, "/readyz", &[]).await;
    assert_eq!(ready.status, 200, "the registry is up: {}", t.logs());

    if let Some(redirect) = t.redirect {
        let resp = get(&format!("http://{redirect}/v2/"), &[]).await;
        assert!(resp.status.is_redirection(), "{}", resp.status);
        assert_eq!(
            resp.header("location"),
            Some(format!("https://127.0.0.1:{}/v2/", t.https.port()).as_str())
        );
    }

    let test = strings(&service(&t.compose, "regate")["healthcheck"]["test"]);
    assert_eq!(test[0], "CMD", "exec form: the image has no shell");
    assert_eq!(
        test[1], "/regate",
        "the healthcheck runs the image's own binary"
    );
    let args: Vec<String> = test[2..]
        .iter()
        .map(|a| {
            a.replace(
                &format!("127.0.0.1:{}", t.regate.container_port),
                &t.https.to_string(),
            )
        })
        .collect();
    let out = Command::new(REGATE).args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "healthcheck {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn no_warnings(check: &str) -> bool {
    !check.lines().any(|l| l.starts_with("warning"))
}

/// skopeo failed because regate said no, not for some other reason.
fn refused(out: &str) -> bool {
    out.contains("denied")
        || out.contains("unauthorized")
        || out.contains("authentication required")
}

/// The example configs' accounts and rules (config/regate.yml and
/// config/regate-token-registry.yml), end to end.
async fn example_accounts(t: &Topology) {
    let c = Skopeo::new(t);
    let image = c.work.path().join("image");
    let built = oci_image(&image, 2, 23);

    let (ok, out) = c.push(&image, Some("admin:wrong"), "library/app:1.0").await;
    assert!(
        !ok && refused(&out),
        "a wrong password must not push: {out}"
    );
    let (ok, out) = c.push(&image, Some(ADMIN), "library/app:1.0").await;
    assert!(ok, "admin pushes: {out}\n{}", t.logs());
    assert!(
        t.storage
            .join("docker/registry/v2/repositories/library/app")
            .is_dir(),
        "the image is on the registry's volume"
    );

    let (ok, out, pulled) = c.pull(Some(ALICE), "library/app:1.0").await;
    assert!(ok, "alice pulls: {out}");
    assert_eq!(pulled_config(&pulled), built.config);
    let (ok, out) = c.push(&image, Some(ALICE), "alice/app:1.0").await;
    assert!(ok, "alice pushes to her namespace: {out}");
    let (ok, out) = c.push(&image, Some(ALICE), "library/app:2.0").await;
    assert!(
        !ok && refused(&out),
        "alice must not push to library/: {out}"
    );

    let (ok, out) = c.push(&image, Some(ADMIN), "public/app:1.0").await;
    assert!(ok, "{out}");
    let (ok, out, _) = c.pull(None, "public/app:1.0").await;
    assert!(ok, "anonymous pulls public/: {out}");
    let (ok, out, _) = c.pull(None, "library/app:1.0").await;
    assert!(
        !ok && refused(&out),
        "anonymous must not pull library/: {out}"
    );
}

/// The registry itself: open in layout 1 (reachable only through regate because compose
/// publishes nothing of it), checking regate's tokens in the others.
async fn registry_direct(t: &Topology) {
    let direct = format!("http://{}", t.registry_addr);
    let resp = get(&format!("{direct}/v2/"), &[]).await;
    if !t.registry_checks_tokens() {
        assert_eq!(resp.status, 200);
        return;
    }
    assert_eq!(resp.status, 401, "the registry checks tokens itself");
    let env = env_of(service(&t.compose, "registry"));
    let challenge = resp.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.contains(&env["REGISTRY_AUTH_TOKEN_REALM"]),
        "{challenge}"
    );
    // A token regate signs is one the registry accepts.
    let (user, password) = ADMIN.split_once(':').unwrap();
    let service_name = env["REGISTRY_AUTH_TOKEN_SERVICE"].replace(' ', "%20");
    let auth = basic(user, password);
    let resp = https_get(
        t,
        &format!("/auth?service={service_name}&scope=repository:library/app:pull"),
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(resp.status, 200);
    let token = resp.json()["token"].as_str().unwrap().to_owned();
    let resp = get(
        &format!("{direct}/v2/library/app/tags/list"),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(
        resp.status,
        200,
        "{}\n{}",
        String::from_utf8_lossy(&resp.body),
        t.registry.log()
    );
    assert!(String::from_utf8_lossy(&resp.body).contains("1.0"));
}

// ---------------------------------------------------------------------------------------
// The tests

#[test]
fn compose_yml_runs_registry_2_unpublished_and_regate_in_front() {
    let compose = compose(LAYOUT_PLAIN, &no_vars());
    let names: BTreeSet<String> = compose["services"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(scalar)
        .collect();
    assert_eq!(names, BTreeSet::from(["registry".into(), "regate".into()]));
    let declared: BTreeSet<String> = compose["volumes"]
        .as_mapping()
        .expect("top-level volumes")
        .keys()
        .map(scalar)
        .collect();

    let regate = service(&compose, "regate");
    let build = regate
        .get("build")
        .expect("regate is built from the repository");
    let context = build.get("context").unwrap_or(build);
    assert_eq!(scalar(context), ".");
    assert_eq!(regate["restart"], "unless-stopped");
    let ports = ports_of(regate);
    assert!(
        ports.contains(&Port {
            published: Some(443),
            target: 443
        }),
        "{ports:?}"
    );
    assert!(
        ports.iter().all(|p| [443, 80].contains(&p.target)),
        "{ports:?}"
    );
    let mounts = mounts_of(regate);
    assert!(
        mounts.contains(&Mount {
            source: Some("./config".into()),
            target: "/config".into(),
            read_only: true
        }),
        "{mounts:?}"
    );
    let data = mounts
        .iter()
        .find(|m| m.target == "/data")
        .expect("a volume for data_dir");
    assert!(declared.contains(data.volume_name().expect("a named volume")));
    assert!(!data.read_only);
    let test = strings(&regate["healthcheck"]["test"]);
    assert_eq!(&test[..2], ["CMD", "/regate"], "{test:?}");
    let regate_networks = networks_of(regate);
    assert!(
        regate_networks.iter().any(|n| !is_internal(&compose, n)),
        "regate is on a network its ports can be published from"
    );

    let registry = service(&compose, "registry");
    assert!(depends_on(regate).contains(&"registry".to_owned()));
    assert_eq!(registry["restart"], "unless-stopped");
    for n in &networks_of(registry) {
        assert!(is_internal(&compose, n), "registry network {n} is internal");
        assert!(
            regate_networks.contains(n),
            "regate reaches the registry on {n}"
        );
    }
    let storage = mounts_of(registry);
    assert_eq!(storage.len(), 1, "{storage:?}");
    assert_eq!(storage[0].target, "/var/lib/registry");
    assert!(declared.contains(storage[0].volume_name().expect("a named volume")));
    let env = env_of(registry);
    assert_eq!(
        env.get("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY")
            .map(String::as_str),
        Some("/var/lib/registry")
    );
    assert!(env
        .get("REGISTRY_HTTP_SECRET")
        .is_some_and(|s| s.len() >= 16));
}

#[test]
fn every_layout_keeps_registry_2_stock_and_unpublished() {
    for layout in [LAYOUT_PLAIN, LAYOUT_TOKEN, LAYOUT_SEED] {
        let compose = compose(layout, &no_vars());
        let registry = service(&compose, "registry");
        assert_eq!(registry["image"], "registry:2", "{layout:?}");
        for key in [
            "build",
            "ports",
            "expose",
            "command",
            "entrypoint",
            "configs",
            "network_mode",
        ] {
            assert!(
                registry.get(key).is_none(),
                "{layout:?}: registry has `{key}`"
            );
        }
        for key in env_of(registry).keys() {
            assert!(key.starts_with("REGISTRY_"), "{layout:?}: {key}");
        }
        // Configured only by environment: no config file, and no private key, mounted.
        for m in mounts_of(registry) {
            assert!(
                m.target == "/var/lib/registry"
                    || (m.read_only && (m.target.ends_with(".pem") || m.target.ends_with(".crt"))),
                "{layout:?}: registry mounts {m:?}"
            );
        }
        assert_eq!(service(&compose, "regate")["restart"], "unless-stopped");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn layout_registry_without_auth_push_and_pull() {
    let t = Topology::start(LAYOUT_PLAIN);
    assert!(!t.registry_checks_tokens());
    assert!(no_warnings(&t.regate.check), "{}", t.regate.check);
    example_accounts(&t).await;
    registry_direct(&t).await;
    gateway_extras(&t).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn layout_registry_checking_tokens_push_and_pull() {
    let t = Topology::start(LAYOUT_TOKEN);
    assert!(t.registry_checks_tokens());
    assert!(no_warnings(&t.regate.check), "{}", t.regate.check);
    example_accounts(&t).await;
    registry_direct(&t).await;
    gateway_extras(&t).await;
}

/// The migration: the seed's docker_auth config (plus `upstream`), its certificate pair
/// at /ssl and its registry settings, run as they are.
#[tokio::test(flavor = "multi_thread")]
async fn layout_migrated_from_the_seed_push_and_pull() {
    let t = Topology::start(LAYOUT_SEED);
    assert!(t.registry_checks_tokens());
    // regate runs the seed's file as it is, and points at its typo.
    assert!(t.regate.check.contains("hussien"), "{}", t.regate.check);
    let c = Skopeo::new(&t);
    let image = c.work.path().join("image");
    let built = oci_image(&image, 2, 29);

    for target in ["library/app:1.0", "hello-world:latest"] {
        let (ok, out) = c.push(&image, Some(ADMIN), target).await;
        assert!(ok, "admin pushes {target}: {out}\n{}", t.logs());
    }
    let (ok, out, pulled) = c.pull(None, "hello-world:latest").await;
    assert!(ok, "anonymous pulls hello-world (`\"\": {{}}`): {out}");
    assert_eq!(pulled_config(&pulled), built.config);
    let (ok, out, _) = c.pull(None, "library/app:1.0").await;
    assert!(!ok && refused(&out), "anonymous pulls nothing else: {out}");
    let (ok, out, _) = c.pull(Some(HUSSEIN), "library/app:1.0").await;
    assert!(ok, "a logged-in user pulls: {out}");
    let (ok, out) = c.push(&image, Some(HUSSEIN), "ubuntu:latest").await;
    assert!(
        !ok && refused(&out),
        "the seed's rule names `hussien`, so hussein may not push ubuntu: {out}"
    );

    let resp = get(&format!("http://{}/v2/", t.registry_addr), &[]).await;
    assert_eq!(resp.status, 401, "the registry still checks tokens");
    gateway_extras(&t).await;
}

#[test]
fn docker_auth_seed_config_is_the_seeds_plus_upstream() {
    let config = read_yaml("config/docker_auth-seed.yml");
    let seed: Value = serde_yaml::from_str(
        r#"
server:
  addr: ":5001"
  certificate: "/ssl/server.pem"
  key: "/ssl/server.key"
token:
  issuer: "Auth Service"
  expiration: 900
acl:
  - match: {account: "admin"}
    actions: ["*"]
  - match: {account: "hussien", name: "ubuntu"}
    actions: ["*"]
  - match: {account: "test"}
    actions: []
  - match: {account: "/.+/"}
    actions: ["pull"]
  - match: {account: "", name: "hello-world"}
    actions: ["pull"]
"#,
    )
    .unwrap();
    let keys: Vec<String> = config.as_mapping().unwrap().keys().map(scalar).collect();
    assert_eq!(keys, ["server", "token", "users", "acl", "upstream"]);
    for key in ["server", "token", "acl"] {
        assert_eq!(config[key], seed[key], "{key} is the seed's");
    }
    let users: Vec<String> = config["users"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(scalar)
        .collect();
    assert_eq!(users, ["admin", "hussein", ""]);
    assert_eq!(config["users"][""], Value::Mapping(Mapping::new()));
    assert_eq!(config["upstream"]["url"], "http://registry:5000");
}

#[test]
fn example_passwords_are_the_ones_the_comments_give() {
    for (file, accounts) in [
        ("config/regate.yml", &[ADMIN, ALICE][..]),
        ("config/regate-token-registry.yml", &[ADMIN, ALICE][..]),
        ("config/docker_auth-seed.yml", &[ADMIN, HUSSEIN][..]),
    ] {
        let text = read(file);
        let config = read_yaml(file);
        for account in accounts {
            let (user, password) = account.split_once(':').unwrap();
            let hash = config["users"][user]["password"].as_str().unwrap();
            assert!(
                hash.starts_with("$2y$"),
                "{file}: {user}: htpasswd -B's format"
            );
            assert!(
                bcrypt::verify(password, hash).unwrap(),
                "{file}: {user}'s hash is not for {password:?}"
            );
            assert!(
                text.contains(&format!("\"{password}\"")),
                "{file}: the comment names {user}'s password"
            );
        }
    }
}

#[test]
fn dockerfile_builds_from_the_context_and_runs_without_a_shell() {
    let stages = dockerfile();
    assert!(stages.len() >= 2, "multi-stage");
    let build = &stages[0];
    assert!(
        build.image.starts_with("rust:1-bookworm"),
        "{}",
        build.image
    );
    assert!(
        build
            .all("RUN")
            .iter()
            .any(|r| r.contains("cargo build --release --locked")),
        "the builder runs cargo build --release --locked"
    );
    let image = stages.last().unwrap();
    // Debian 12 like the builder (the same glibc), with libgcc: what regate links (below).
    assert!(
        image.image.starts_with("gcr.io/distroless/cc-debian12"),
        "{}",
        image.image
    );
    assert!(
        image.all("RUN").is_empty(),
        "the final stage has no shell to RUN"
    );
    let user = image.all("USER");
    let user = user.last().expect("USER in the final stage");
    assert!(
        !["root", "0", "0:0"].contains(user) && !user.starts_with("0:"),
        "runs as root: {user}"
    );
    assert_eq!(image.exec_form("ENTRYPOINT"), ["/regate"]);
    assert_eq!(
        image.exec_form("CMD"),
        ["serve", "--config", "/config/regate.yml"]
    );
    let build_name = build.name.as_deref().expect("the builder stage is named");
    assert!(
        image
            .all("COPY")
            .iter()
            .any(|c| c.contains(&format!("--from={build_name}")) && c.ends_with(" /regate")),
        "the binary is copied to /regate"
    );

    // Everything cargo reads is in the build context and copied into the builder.
    let patterns = dockerignore();
    let copies = build.context_copies();
    let mut inputs: Vec<String> = vec!["Cargo.toml".into(), "Cargo.lock".into()];
    if Path::new(REPO).join("build.rs").exists() {
        inputs.push("build.rs".into());
    }
    inputs.extend(files_under("src"));
    for input in &inputs {
        assert!(
            !ignored(&patterns, input),
            ".dockerignore leaves out {input}"
        );
        let copied = copies.iter().any(|(sources, _)| {
            sources
                .iter()
                .any(|s| input == s || input.starts_with(&format!("{}/", s.trim_end_matches('/'))))
        });
        assert!(copied, "the Dockerfile does not COPY {input}");
    }
    for (sources, _) in &copies {
        for s in sources {
            assert!(Path::new(REPO).join(s).exists(), "COPY {s}: no such file");
        }
    }
    // And nothing secret or bulky goes to the builder.
    for path in [
        "config/certs/server.key",
        "config/regate.yml",
        "target/release/regate",
        ".git/config",
        ".regate-local/admin.password",
    ] {
        assert!(ignored(&patterns, path), ".dockerignore lets {path} in");
    }
}

#[test]
fn regate_links_only_what_distroless_cc_provides() {
    // distroless/cc: glibc (libc, libm, libpthread, libdl, librt) and libgcc_s; no OpenSSL.
    let out = Command::new("ldd").arg(REGATE).output().expect("ldd");
    assert!(out.status.success());
    let allowed = [
        "linux-vdso.so",
        "libc.so",
        "libm.so",
        "libgcc_s.so",
        "libpthread.so",
        "libdl.so",
        "librt.so",
        "ld-linux",
        "/lib64/ld-linux",
        "/lib/ld-linux",
    ];
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let lib = line.split_whitespace().next().unwrap_or("");
        assert!(
            allowed.iter().any(|a| lib.starts_with(a)),
            "regate links {lib}, which distroless/cc does not have"
        );
    }
}

#[test]
fn the_test_reads_compose_like_compose() {
    // Interpolation as compose does it.
    let vars = BTreeMap::from([("SET", "x"), ("EMPTY", "")]);
    let cases = [
        ("${SET:-d}", "x"),
        ("${EMPTY:-d}", "d"),
        ("${EMPTY-d}", ""),
        ("${UNSET-d}/a", "d/a"),
        ("$SET$$", "x$"),
        ("a${UNSET}b", "ab"),
    ];
    for (input, want) in cases {
        assert_eq!(interpolate_str(input, &vars, "t"), want, "{input}");
    }
    // Merging: volumes by target, commands replaced, `!override`.
    let mut base: Value = serde_yaml::from_str(
        "s: {volumes: [a:/x, b:/y], command: [a], ports: ['1:1'], environment: {A: '1'}}",
    )
    .unwrap();
    let over: Value = serde_yaml::from_str(
        "s: {volumes: [c:/y, d:/z], command: [b], ports: !override ['2:2'], environment: {B: '2'}}",
    )
    .unwrap();
    merge(&mut base, over, "");
    let want: Value = serde_yaml::from_str(
        "s: {volumes: [a:/x, c:/y, d:/z], command: [b], ports: ['2:2'], environment: {A: '1', B: '2'}}",
    )
    .unwrap();
    assert_eq!(base, want);
    // .dockerignore: the last matching pattern decides, parents included.
    let patterns = vec![(false, "*".to_owned()), (true, "src".to_owned())];
    assert!(!ignored(&patterns, "src/auth/token.rs"));
    assert!(ignored(&patterns, "config/certs/ca.key"));
    assert!(glob(b"**/*.key", b"config/certs/ca.key"));
    assert!(!glob(b"*.key", b"config/ca.key"));
}
