//! compose.ha.yml's services started here from its files, each checked and rewritten as
//! the parent module's doc says.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::compose::*;
use crate::common::stand_in::{
    host_path, registry_env, start_registry, Host, Process, RegateService,
};
use crate::common::ReservedPort;
use serde_yaml::Value;

const FILE: &str = "compose.ha.yml";

/// The `.env` stand-in: made-up values where compose.ha.yml's comment says
/// `openssl rand -hex 32`.
const STAND_IN_DOT_ENV: &str = "\
REDIS_PASSWORD=stand-in-redis-password-4f1c9a0e
REGISTRY_HTTP_SECRET=stand-in-registry-http-secret-8d2b7e61
";

/// The names regate's certificate is made for here: the documented one, and the address
/// the test reaches haproxy and the replicas by.
const CERT_HOSTS: &[&str] = &["registry.example.com", "127.0.0.1"];

/// Where the haproxy image reads its config (its CMD: `haproxy -f` this).
const HAPROXY_IMAGE_CONFIG: &str = "/usr/local/etc/haproxy/haproxy.cfg";
/// The redis image's working directory, where `--appendonly` writes.
const REDIS_IMAGE_WORKDIR: &str = "/data";
/// Redis's port when its command names none.
const REDIS_DEFAULT_PORT: u16 = 6379;

pub const REGATES: [&str; 3] = ["regate1", "regate2", "regate3"];
pub const REGISTRIES: [&str; 2] = ["registry1", "registry2"];

/// `.env` as compose reads it: `KEY=VALUE` lines, `#` comments.
fn dot_env(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("KEY=VALUE");
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect()
}

/// `host:port` of `redis:6379` or `http://registry1:5000`.
fn host_and_port(addr: &str) -> (String, u16) {
    let rest = addr.split_once("://").map_or(addr, |(_, r)| r);
    let rest = rest.trim_end_matches('/');
    let (host, port) = rest.rsplit_once(':').unwrap_or((rest, ""));
    let port = port
        .parse()
        .unwrap_or_else(|_| panic!("no port in `{addr}`"));
    (host.to_owned(), port)
}

/// `referrer`'s `addr` names a service it depends on, on the port that service listens on.
fn check_service_addr(
    compose: &Value,
    referrer: &str,
    what: &str,
    addr: &str,
    listens: &dyn Fn(&str) -> u16,
) {
    let (host, port) = host_and_port(addr);
    assert!(
        compose["services"].get(&host).is_some(),
        "{referrer}: {what} `{addr}` names no service"
    );
    assert!(
        depends_on(service(compose, referrer)).contains(&host),
        "{referrer} does not depend_on {host} ({what})"
    );
    assert_eq!(
        port,
        listens(&host),
        "{referrer}: {what} `{addr}`: {host} listens elsewhere"
    );
}

/// compose.ha.yml's topology, running here. Fields drop in order: the balancer, the
/// replicas, the registries, Redis, then the folder.
pub struct HaTopology {
    pub haproxy: Process,
    pub haproxy_addr: SocketAddr,
    pub regates: Vec<(Process, SocketAddr)>,
    pub registries: Vec<(Process, SocketAddr)>,
    pub redis: Process,
    pub redis_addr: SocketAddr,
    pub redis_password: String,
    pub compose: Value,
    /// The ports the daemons listen on, held while they run.
    _ports: Vec<ReservedPort>,
    host: Host,
}

impl HaTopology {
    pub fn start() -> HaTopology {
        let host = Host::new(CERT_HOSTS);
        let env_file = host.project().join(".env");
        std::fs::write(&env_file, STAND_IN_DOT_ENV).unwrap();
        let vars = dot_env(&env_file);
        let vars_ref: BTreeMap<&str, &str> =
            vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let compose = compose(&[FILE], &vars_ref);
        let mut names: Vec<String> = compose["services"]
            .as_mapping()
            .unwrap()
            .keys()
            .map(scalar)
            .collect();
        let mut want: Vec<&str> = [&["haproxy", "redis"][..], &REGATES, &REGISTRIES].concat();
        names.sort();
        want.sort();
        assert_eq!(names, want, "{FILE}'s services");
        let mut ports = Vec::new();

        let (redis, redis_addr, redis_port) = start_redis(&compose, &host, &mut ports);
        let redis_password = vars["REDIS_PASSWORD"].clone();

        // The registries: one storage volume, one http.secret, the cache in Redis.
        let registry_port =
            |name: &str| port_of(&env_of(service(&compose, name))["REGISTRY_HTTP_ADDR"]);
        let mut storages = Vec::new();
        let mut registries = Vec::new();
        for name in REGISTRIES {
            let svc = service(&compose, name);
            let mut env = registry_env(&host, svc);
            check_service_addr(
                &compose,
                name,
                "REGISTRY_REDIS_ADDR",
                &env["REGISTRY_REDIS_ADDR"],
                &|_| redis_port,
            );
            env.insert("REGISTRY_REDIS_ADDR".into(), redis_addr.to_string());
            assert_eq!(env["REGISTRY_REDIS_PASSWORD"], redis_password, "{name}");
            assert_eq!(
                env["REGISTRY_HTTP_SECRET"], vars["REGISTRY_HTTP_SECRET"],
                "{name}"
            );
            let storage = PathBuf::from(&env["REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY"]);
            assert!(
                storage.starts_with(host.dir.path().join("volumes")),
                "{name}'s storage is not on a named volume: {}",
                storage.display()
            );
            storages.push(storage);
            registries.push(start_registry(&host, name, &env));
        }
        assert!(
            storages.iter().all(|s| *s == storages[0]),
            "one storage: {storages:?}"
        );

        // haproxy's address, which the replicas trust for PROXY headers.
        let haproxy_svc = service(&compose, "haproxy");
        let haproxy_ip = scalar(&haproxy_svc["networks"]["frontend"]["ipv4_address"]);

        let mut regates = Vec::new();
        let mut listen_ports = BTreeMap::new();
        for name in REGATES {
            let svc = service(&compose, name);
            assert!(
                networks_of(svc).contains(&"frontend".to_owned()),
                "{name} is on haproxy's network"
            );
            let mut regate = RegateService::read(&host, svc);
            regate
                .mounts
                .extend(secret_mounts(&compose, &host, svc, &vars));
            let arg = regate.config_arg.clone();
            let config = &mut regate.config;

            listen_ports.insert(name, port_of(config["server"]["addr"].as_str().unwrap()));
            ports.push(ReservedPort::new());
            let https = SocketAddr::from(([127, 0, 0, 1], ports.last().unwrap().port()));
            config["server"]["addr"] = https.to_string().into();

            assert_eq!(
                strings(&config["server"]["trusted_proxies"]),
                std::slice::from_ref(&haproxy_ip),
                "{arg}: server.trusted_proxies is haproxy's address"
            );
            config["server"]["trusted_proxies"] = Value::Sequence(vec!["127.0.0.1".into()]);

            let urls = strings(&config["upstream"]["url"]);
            assert_eq!(urls.len(), REGISTRIES.len(), "{arg}: upstream.url");
            let mut rewritten = Vec::new();
            for url in &urls {
                check_service_addr(&compose, name, "upstream.url", url, &registry_port);
                let (registry, _) = host_and_port(url);
                let i = REGISTRIES.iter().position(|r| *r == registry).unwrap();
                rewritten.push(Value::from(format!("http://{}", registries[i].1)));
            }
            config["upstream"]["url"] = Value::Sequence(rewritten);

            let redis_cfg = &mut config["shared_state"]["redis"];
            check_service_addr(
                &compose,
                name,
                "shared_state.redis.addr",
                redis_cfg["addr"].as_str().unwrap(),
                &|_| redis_port,
            );
            redis_cfg["addr"] = redis_addr.to_string().into();

            regate.check_data_dir();
            let dir = host.dir.path().join(name);
            std::fs::create_dir_all(&dir).unwrap();
            let to = dir.join(regate.config_path.file_name().unwrap());
            let (process, check) = regate.start(&host, svc, name, &to, https);
            assert!(
                !check.lines().any(|l| l.starts_with("warning")),
                "{name}: regate check {arg}: {check}"
            );
            regates.push((process, https));
        }

        let replicas: BTreeMap<&str, SocketAddr> = REGATES
            .iter()
            .zip(&regates)
            .map(|(n, (_, a))| (*n, *a))
            .collect();
        let (haproxy, haproxy_addr) =
            start_haproxy(&compose, &host, &replicas, &listen_ports, &mut ports);
        HaTopology {
            haproxy,
            haproxy_addr,
            regates,
            registries,
            redis,
            redis_addr,
            redis_password,
            compose,
            _ports: ports,
            host,
        }
    }

    pub fn logs(&self) -> String {
        let mut out = format!("--- haproxy:\n{}", self.haproxy.log());
        for (name, (p, _)) in REGATES.iter().zip(&self.regates) {
            out.push_str(&format!("\n--- {name}:\n{}", p.log()));
        }
        for (name, (p, _)) in REGISTRIES.iter().zip(&self.registries) {
            out.push_str(&format!("\n--- {name}:\n{}", p.log()));
        }
        out.push_str(&format!("\n--- redis:\n{}", self.redis.log()));
        out
    }

    pub fn ca(&self) -> PathBuf {
        self.host.ca()
    }
}

/// The secrets a service lists, as compose mounts them: `/run/secrets/NAME`, a file holding
/// the value of the variable an `environment:` secret names.
fn secret_mounts(
    compose: &Value,
    host: &Host,
    svc: &Value,
    vars: &BTreeMap<String, String>,
) -> Vec<(Mount, PathBuf)> {
    let Some(names) = svc.get("secrets") else {
        return Vec::new();
    };
    strings(names)
        .into_iter()
        .map(|name| {
            let secret = &compose["secrets"][name.as_str()];
            let var = secret["environment"]
                .as_str()
                .unwrap_or_else(|| panic!("secret {name}: only `environment:` secrets here"));
            let file = host.dir.path().join("secrets").join(&name);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, &vars[var]).unwrap();
            let target = format!("/run/secrets/{name}");
            let mount = Mount {
                source: Some(file.display().to_string()),
                target,
                read_only: true,
            };
            (mount, file)
        })
        .collect()
}

/// The redis service's command, with a loopback port, `--bind 127.0.0.1` and its working
/// directory on the volume's stand-in; its address and the port it has in the container.
fn start_redis(
    compose: &Value,
    host: &Host,
    ports: &mut Vec<ReservedPort>,
) -> (Process, SocketAddr, u16) {
    let svc = service(compose, "redis");
    let command = strings(&svc["command"]);
    assert_eq!(command[0], "redis-server");
    let container_port = command
        .iter()
        .position(|a| a == "--port")
        .map_or(REDIS_DEFAULT_PORT, |i| command[i + 1].parse().unwrap());
    let data = host_path(&host.mounts(svc), REDIS_IMAGE_WORKDIR)
        .expect("redis's working directory is on a volume");
    ports.push(ReservedPort::new());
    let addr = SocketAddr::from(([127, 0, 0, 1], ports.last().unwrap().port()));
    let log = host.dir.path().join("redis.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(&command[0])
        .args(&command[1..])
        .args([
            "--port",
            &addr.port().to_string(),
            "--bind",
            "127.0.0.1",
            "--dir",
        ])
        .arg(&data)
        .env_clear()
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("redis-server is installed (apt-get install redis-server)");
    let mut process = Process { child, log };
    wait_listening("redis-server", &mut process, addr);
    (process, addr, container_port)
}

/// haproxy on its mounted config, rewritten: `bind` on a loopback port (the published one
/// checked), each `server` at its replica's loopback address (the name a regate service,
/// the port its server.addr's). Started as the image does, without `-W` (master-worker) so
/// that killing the child stops haproxy.
fn start_haproxy(
    compose: &Value,
    host: &Host,
    replicas: &BTreeMap<&str, SocketAddr>,
    listen_ports: &BTreeMap<&str, u16>,
    ports: &mut Vec<ReservedPort>,
) -> (Process, SocketAddr) {
    let svc = service(compose, "haproxy");
    let path = host_path(&host.mounts(svc), HAPROXY_IMAGE_CONFIG)
        .expect("haproxy's config is mounted where the image reads it");
    let published: Vec<u16> = ports_of(svc)
        .iter()
        .filter(|p| p.published.is_some())
        .map(|p| p.target)
        .collect();
    ports.push(ReservedPort::new());
    let addr = SocketAddr::from(([127, 0, 0, 1], ports.last().unwrap().port()));
    let mut servers = Vec::new();
    let mut maxconn = 0;
    let mut lines = Vec::new();
    for line in std::fs::read_to_string(&path).unwrap().lines() {
        let indent = &line[..line.len() - line.trim_start().len()];
        let mut words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        match words.first().map(String::as_str) {
            Some("bind") => {
                let port = port_of(&words[1]);
                assert!(
                    published.contains(&port),
                    "haproxy binds {port}, not published ({published:?})"
                );
                words[1] = addr.to_string();
            }
            Some("server") => {
                let (name, port) = host_and_port(&words[2]);
                let replica = replicas
                    .get(name.as_str())
                    .unwrap_or_else(|| panic!("haproxy's server {name} is no regate service"));
                assert!(
                    depends_on(svc).contains(&name),
                    "haproxy does not depend_on {name}"
                );
                assert_eq!(
                    port,
                    listen_ports[name.as_str()],
                    "{name}: haproxy's port is its server.addr's"
                );
                words[2] = replica.to_string();
                servers.push(name);
            }
            Some("maxconn") if maxconn == 0 => maxconn = words[1].parse().unwrap(),
            _ => {}
        }
        lines.push(if words.is_empty() {
            line.to_owned()
        } else {
            format!("{indent}{}", words.join(" "))
        });
    }
    servers.sort();
    assert_eq!(servers, REGATES, "haproxy balances over every replica");
    // Two descriptors a connection (client and server side): Docker's limit allows it, a
    // test machine's may not. haproxy then refuses to start (strict-limits is its default
    // since 2.3) unless told to run with what it gets.
    if fd_limit() < 2 * maxconn {
        let global = lines
            .iter()
            .position(|l| l.trim() == "global")
            .expect("a global section");
        lines.insert(global + 1, "  no strict-limits".to_owned());
    }
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();

    let log = host.dir.path().join("haproxy.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .env_clear()
        // Debian's haproxy is in /usr/sbin, off the default search path.
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("haproxy is installed (apt-get install haproxy)");
    let mut process = Process { child, log };
    wait_listening("haproxy", &mut process, addr);
    (process, addr)
}

/// This process's hard limit of open files (`/proc/self/limits`), which its children get.
fn fd_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4))
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX)
}

fn wait_listening(what: &str, process: &mut Process, addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        if let Some(status) = process.child.try_wait().unwrap() {
            panic!("{what} exited ({status}):\n{}", process.log());
        }
        assert!(
            Instant::now() < deadline,
            "{what} is not listening on {addr} after 30 s:\n{}",
            process.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
