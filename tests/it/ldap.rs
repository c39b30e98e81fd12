//! `ldap_auth` against a real OpenLDAP: Debian's `slapd`, configured by the test in a
//! temporary folder (slapd.conf, an mdb database, the memberof overlay) on a free loopback
//! port, loaded with `ldapadd`. Logins, groups as labels, group changes, injection
//! attempts, the directory paused and stopped, StartTLS and LDAPS with the test's own CA.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

const SUFFIX: &str = "dc=example,dc=org";
const ROOT_DN: &str = "cn=admin,dc=example,dc=org";
const ROOT_PW: &str = "root-secret";
const SERVICE_DN: &str = "cn=regate,ou=services,dc=example,dc=org";
const SERVICE_PW: &str = "service-pw";

/// The directory: the service account regate binds as, people, and two groups. A person
/// named `admin` too, whose directory password must not log in: `users` has an admin.
fn directory_ldif() -> String {
    format!(
        "dn: {SUFFIX}
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: ou=people,{SUFFIX}
objectClass: organizationalUnit
ou: people

dn: ou=groups,{SUFFIX}
objectClass: organizationalUnit
ou: groups

dn: ou=services,{SUFFIX}
objectClass: organizationalUnit
ou: services

dn: {SERVICE_DN}
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: regate
userPassword: {SERVICE_PW}

dn: uid=dora,ou=people,{SUFFIX}
objectClass: inetOrgPerson
uid: dora
cn: Dora
sn: Explorer
mail: dora@example.org
userPassword: dora-pw

dn: uid=eve,ou=people,{SUFFIX}
objectClass: inetOrgPerson
uid: eve
cn: Eve
sn: Ops
userPassword: eve-pw

dn: uid=admin,ou=people,{SUFFIX}
objectClass: inetOrgPerson
uid: admin
cn: Admin
sn: Directory
userPassword: directory-admin-pw

dn: cn=Devs,ou=groups,{SUFFIX}
objectClass: groupOfNames
cn: Devs
member: uid=dora,ou=people,{SUFFIX}
member: uid=admin,ou=people,{SUFFIX}

dn: cn=Ops,ou=groups,{SUFFIX}
objectClass: groupOfNames
cn: Ops
member: uid=eve,ou=people,{SUFFIX}
"
    )
}

/// A `slapd` of the test's own; killed on drop.
struct Slapd {
    dir: tempfile::TempDir,
    port: u16,
    /// The LDAPS port, when started with TLS.
    ldaps_port: Option<u16>,
    binary: &'static str,
    child: Option<Child>,
    /// Its ports, held for each (re)start.
    _reserved: Vec<ReservedPort>,
}

impl Slapd {
    /// `tls`: the folder `regate cert init` wrote (`ca.crt`, `server.crt`, `server.key`).
    fn start(tls: Option<&Path>) -> Slapd {
        let binary = ["/usr/sbin/slapd", "/usr/local/sbin/slapd"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("slapd is not installed: apt-get install slapd ldap-utils");
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("db")).unwrap();
        let d = dir.path().display();
        let tls_lines = match tls {
            Some(certs) => format!(
                "TLSCACertificateFile {ca}\nTLSCertificateFile {crt}\nTLSCertificateKeyFile {key}\n",
                ca = certs.join("ca.crt").display(),
                crt = certs.join("server.crt").display(),
                key = certs.join("server.key").display(),
            ),
            None => String::new(),
        };
        let conf = format!(
            "include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
pidfile {d}/slapd.pid
argsfile {d}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
{tls_lines}
database mdb
maxsize 10485760
suffix \"{SUFFIX}\"
rootdn \"{ROOT_DN}\"
rootpw {ROOT_PW}
directory {d}/db
overlay memberof
# Passwords are only ever compared; entries are readable once bound, never anonymously,
# so every search regate makes shows its service account works.
access to attrs=userPassword by self write by anonymous auth by * none
access to * by users read by * none
"
        );
        std::fs::write(dir.path().join("slapd.conf"), conf).unwrap();
        let ldap = ReservedPort::new();
        let ldaps = tls.map(|_| ReservedPort::new());
        let mut slapd = Slapd {
            dir,
            port: ldap.port(),
            ldaps_port: ldaps.as_ref().map(ReservedPort::port),
            binary,
            child: None,
            _reserved: [Some(ldap), ldaps].into_iter().flatten().collect(),
        };
        slapd.launch();
        slapd.ldap("ldapadd", &directory_ldif());
        slapd
    }

    fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}/", self.port)
    }

    /// Runs slapd in the foreground (`-d 0`) and waits until it answers a bind. If it
    /// cannot start, the test fails with what it printed.
    fn launch(&mut self) {
        let binary = self.binary;
        let mut urls = self.url();
        if let Some(p) = self.ldaps_port {
            urls.push_str(&format!(" ldaps://127.0.0.1:{p}/"));
        }
        let log = self.dir.path().join("slapd.log");
        let child = Command::new(binary)
            .args(["-h", &urls, "-f"])
            .arg(self.dir.path().join("slapd.conf"))
            .args(["-d", "0"])
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::from(
                std::fs::File::create(log.with_extension("err")).unwrap(),
            ))
            .spawn()
            .unwrap_or_else(|e| panic!("{binary}: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let whoami = Command::new("ldapwhoami")
                .args(["-x", "-H", &self.url(), "-D", ROOT_DN, "-w", ROOT_PW])
                .output()
                .expect("ldapwhoami is installed (apt-get install ldap-utils)");
            if whoami.status.success() {
                return;
            }
            let exited = self.child.as_mut().unwrap().try_wait().unwrap();
            if exited.is_some() || Instant::now() > deadline {
                self.stop();
                panic!(
                    "slapd did not start ({exited:?}):\n{}{}\nldapwhoami: {}",
                    std::fs::read_to_string(&log).unwrap_or_default(),
                    std::fs::read_to_string(log.with_extension("err")).unwrap_or_default(),
                    String::from_utf8_lossy(&whoami.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the port stays open, and nothing answers. `kill` returns before every
    /// thread has stopped (the kernel wakes one, which then stops the others), and on a
    /// busy machine another slapd thread can still answer a request in between: wait
    /// until /proc shows every thread stopped.
    fn pause(&self, paused: bool) {
        let pid = self.child.as_ref().unwrap().id();
        let signal = if paused { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        if !paused {
            return;
        }
        let all_stopped = || {
            let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
            tasks.flatten().all(|task| {
                let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
                // The state follows the command name's closing parenthesis.
                let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
                matches!(state, Some(Some('T' | 't')))
            })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !all_stopped() {
            assert!(Instant::now() < deadline, "slapd did not stop");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// `ldapadd` or `ldapmodify` as the root DN, the LDIF on stdin.
    fn ldap(&self, tool: &str, ldif: &str) {
        let mut child = Command::new(tool)
            .args(["-x", "-H", &self.url(), "-D", ROOT_DN, "-w", ROOT_PW])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{tool} (apt-get install ldap-utils): {e}"));
        child
            .stdin
            .take()
            .unwrap()
            .write_all(ldif.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{tool}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too.
        self.stop();
    }
}

/// A config with `users` (a static admin) and an `ldap_auth` section reaching the
/// directory as `ldap` says (as the service account unless it names a `bind_dn`), and the
/// rules the tests check.
fn config(upstream: &str, dir: &Path, ldap: &str) -> String {
    std::fs::write(dir.join("bind-password"), format!("{SERVICE_PW}\n")).unwrap();
    let service = if ldap.contains("bind_dn") {
        String::new()
    } else {
        format!("  bind_dn: \"{SERVICE_DN}\"\n  bind_password_file: bind-password\n")
    };
    format!(
        r#"server:
  addr: "127.0.0.1:0"
token:
  issuer: "{ISSUER}"
  expiration: 900
data_dir: "{data}"
audit_log: stderr
upstream:
  url: "{upstream}"
users:
  "admin":
    password: "{admin}"
ldap_auth:
{ldap}{service}  base: "ou=people,{SUFFIX}"
  filter: "(&(objectClass=inetOrgPerson)(uid=${{account}}))"
  labels:
    memberof: {{attribute: memberOf, parse_cn: true, lower_case: true}}
    mail: {{attribute: mail}}
  group_search:
    base: "ou=groups,{SUFFIX}"
    filter: "(&(objectClass=groupOfNames)(member=${{dn}}))"
    attribute: cn
    label: group
    lower_case: true
  connect_timeout: 1
  timeout: 1
  pool_size: 2
  cache_ttl: 2
acl:
  - match: {{account: "admin"}}
    actions: ["*"]
  - match: {{labels: {{group: "devs"}}, name: "devs/*"}}
    actions: ["*"]
    comment: "the devs group's namespace"
  - match: {{account: "/.+/", name: "${{labels:group}}/*"}}
    actions: ["*"]
    comment: "each group's namespace"
  - match: {{account: "/.+/", name: "${{account}}/*"}}
    actions: ["*"]
  - match: {{account: "/.+/"}}
    actions: ["pull"]
"#,
        data = dir.join("data").display(),
        admin = bcrypt("admin-pw"),
    )
}

/// `GET /auth` with Basic credentials for one scope.
async fn ask_token(base: &str, user: &str, password: &str, scope: &str) -> Resp {
    let url = format!("{base}/auth?service=Docker%20registry&scope={scope}");
    get(&url, &[("authorization", &basic(user, password))]).await
}

/// The actions a token grants for its one scope.
fn granted(resp: &Resp) -> Vec<String> {
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    let token = resp.json()["token"].as_str().unwrap().to_owned();
    let claims = crate::common::claims(&token);
    claims["access"][0]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

async fn actions(base: &str, user: &str, password: &str, scope: &str) -> Vec<String> {
    granted(&ask_token(base, user, password, scope).await)
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} in\n{text}"))
}

async fn skopeo_run(authfile: PathBuf, args: Vec<String>) -> (bool, String) {
    blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        skopeo(&authfile, &args)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_logins_groups_injection_and_outage() {
    let mut slapd = Slapd::start(None);
    let registry = Registry::start(None);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("regate.yml");
    let ldap = format!("  addr: \"127.0.0.1:{}\"\n", slapd.port);
    std::fs::write(&path, config(&registry.url(), dir.path(), &ldap)).unwrap();
    let regate = RegateProcess::start(&path, dir.path().join("regate.log"));
    let base = regate.url();

    // A directory password logs in; the group's label opens the group's namespace.
    assert_eq!(
        actions(&base, "dora", "dora-pw", "repository:devs/app:pull,push").await,
        ["pull", "push"]
    );
    // The other group, through `${labels:group}/*`; and not the devs' namespace.
    assert_eq!(
        actions(&base, "eve", "eve-pw", "repository:ops/tool:pull,push").await,
        ["pull", "push"]
    );
    assert_eq!(
        actions(&base, "eve", "eve-pw", "repository:devs/app:pull,push").await,
        ["pull"]
    );

    // A push and a pull through regate into the real registry, as the directory user.
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("image");
    oci_image(&image, 2, 7);
    let authfile = work.path().join("auth.json");
    let (ok, out) = skopeo_run(
        authfile.clone(),
        vec![
            "copy".into(),
            "--dest-tls-verify=false".into(),
            "--dest-creds=dora:dora-pw".into(),
            format!("oci:{}:latest", image.display()),
            format!("docker://{}/devs/app:1", regate.addr),
        ],
    )
    .await;
    assert!(ok, "push as dora: {out}");
    assert!(registry.has_repository("devs/app"));
    let (ok, out) = skopeo_run(
        authfile.clone(),
        vec![
            "copy".into(),
            "--src-tls-verify=false".into(),
            "--src-creds=eve:eve-pw".into(),
            format!("docker://{}/devs/app:1", regate.addr),
            format!("oci:{}:latest", work.path().join("pulled").display()),
        ],
    )
    .await;
    assert!(ok, "pull as eve: {out}");

    // Wrong passwords; the static user decides for its own name (docker_auth's order),
    // so the directory's `admin` password is no way in; an empty password never binds.
    for (user, password) in [
        ("dora", "wrong"),
        ("admin", "directory-admin-pw"),
        ("dora", ""),
        ("nobody", "dora-pw"),
    ] {
        let resp = ask_token(&base, user, password, "repository:devs/app:pull").await;
        assert_eq!(resp.status, 401, "{user}:{password}");
    }
    assert_eq!(
        actions(&base, "admin", "admin-pw", "repository:devs/app:push").await,
        ["push"]
    );

    // An account the directory does not have costs it what a wrong password for one it
    // has costs: the same binds (service account, then one as "the user"), so the round
    // trips do not tell which accounts exist. Counted, not timed. Fresh passwords each
    // time: a login the cache knows asks nothing.
    let binds = || async {
        let resp = get(&format!("{base}/metrics"), &[]).await;
        let text = String::from_utf8_lossy(&resp.body).into_owned();
        metric(&text, "regate_ldap_binds_total")
    };
    let mut cost = Vec::new();
    for (user, password) in [("dora", "wrong-1"), ("nobody-here", "wrong-2")] {
        let before = binds().await;
        let resp = ask_token(&base, user, password, "repository:devs/app:pull").await;
        assert_eq!(resp.status, 401, "{user}");
        cost.push(binds().await - before);
    }
    assert_eq!(
        cost[0], cost[1],
        "binds for a wrong password vs an unknown account"
    );
    assert!(cost[0] >= 2, "{cost:?}");

    // Injection: each of these would find dora (or everyone) if the account reached the
    // filter unescaped; `d\6fra` is "dora" in the filter's own escape syntax.
    for account in [
        "*",
        "dora*",
        "*)(uid=*))(|(uid=*",
        "dora)(|(uid=*",
        "d\\6fra",
        "dora\0",
    ] {
        let resp = ask_token(&base, account, "dora-pw", "repository:devs/app:pull").await;
        assert_eq!(resp.status, 401, "{account:?} logged in");
    }

    // `regate explain` asks the directory too: which backend, which entry, which labels.
    let explain = Command::new(env!("CARGO_BIN_EXE_regate"))
        .args(["explain", "--config"])
        .arg(&path)
        .args([
            "--account",
            "dora",
            "--password-stdin",
            "repository:devs/app:push",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (ok, text) = {
        let mut child = explain;
        child.stdin.take().unwrap().write_all(b"dora-pw\n").unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    assert!(ok, "{text}");
    for line in [
        "account: \"dora\": not in `users`; an entry in the LDAP directory (ldap_auth): uid=dora,ou=people,dc=example,dc=org",
        "labels: group=devs mail=dora@example.org memberof=devs (from ldap_auth)",
        "password: correct: the LDAP directory (ldap_auth) accepted it",
        "  acl[1] \"the devs group's namespace\": decides: actions [\"*\"]",
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
    }

    // Logins are cached: the same login again is not a second trip to the directory.
    let hits = |text: &str| metric(text, "regate_credential_cache_hits_total");
    let metrics = || async {
        String::from_utf8_lossy(&get(&format!("{base}/metrics"), &[]).await.body).into_owned()
    };
    let before = hits(&metrics().await);
    actions(&base, "dora", "dora-pw", "repository:devs/app:pull").await;
    actions(&base, "dora", "dora-pw", "repository:devs/app:pull").await;
    let after = hits(&metrics().await);
    assert!(after > before, "cache hits {before} -> {after}");

    // Out of the group: the next token after the cache's 2 s has no devs namespace.
    slapd.ldap(
        "ldapmodify",
        &format!(
            "dn: cn=Devs,ou=groups,{SUFFIX}\nchangetype: modify\ndelete: member\nmember: uid=dora,ou=people,{SUFFIX}\n"
        ),
    );
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert_eq!(
        actions(&base, "dora", "dora-pw", "repository:devs/app:pull,push").await,
        ["pull"]
    );

    // The directory hangs (SIGSTOP: connections open, no answers): 503 by the timeout
    // (1 s), an audit line, and the static users still work.
    slapd.pause(true);
    let started = Instant::now();
    let resp = ask_token(&base, "eve", "eve-pw", "repository:ops/tool:pull").await;
    let took = started.elapsed();
    assert_eq!(resp.status, 503, "{}", String::from_utf8_lossy(&resp.body));
    assert_eq!(resp.json()["errors"][0]["code"], "UNAVAILABLE");
    assert!(took < Duration::from_secs(3), "503 after {took:?}");
    assert_eq!(
        actions(&base, "admin", "admin-pw", "repository:devs/app:pull").await,
        ["pull"]
    );

    // Stopped: refused connections, 503 at once.
    slapd.pause(false);
    slapd.stop();
    let started = Instant::now();
    let resp = ask_token(&base, "eve", "eve-pw", "repository:ops/tool:pull").await;
    assert_eq!(resp.status, 503);
    assert!(started.elapsed() < Duration::from_secs(2));
    let resp = get(
        &format!("{base}/v2/"),
        &[("authorization", &basic("admin", "admin-pw"))],
    )
    .await;
    assert_ne!(resp.status, 503, "regate itself must stay up");

    // Back: the pool reconnects on its own.
    slapd.restart();
    assert_eq!(
        actions(&base, "eve", "eve-pw", "repository:ops/tool:pull").await,
        ["pull"]
    );

    let log = regate.log_text();
    let audit: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let outage = audit
        .iter()
        .find(|a| a["outcome"] == "directory_unavailable")
        .unwrap_or_else(|| panic!("no audit line for the outage:\n{log}"));
    assert_eq!(outage["account"], "eve");
    assert!(
        audit
            .iter()
            .any(|a| a["account"] == "dora" && a["backend"] == "ldap_auth"),
        "token decisions name the backend:\n{log}"
    );
    assert!(audit.iter().all(|a| a["outcome"] != "throttled"), "{log}");
    assert!(
        log.contains("the LDAP directory could not check a login"),
        "the cause is logged:\n{log}"
    );
}

/// regate in-process with only `ldap_auth` and a rule, for the TLS variants.
async fn tls_gateway(ldap: &str) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let config = config("http://127.0.0.1:1", dir.path(), ldap);
    Gateway::start_in(dir, &config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_and_ldaps_with_the_tests_own_ca() {
    let certs = tempfile::tempdir().unwrap();
    cert_init(certs.path(), &["127.0.0.1"]);
    let slapd = Slapd::start(Some(certs.path()));
    let ca = certs.path().join("ca.crt");
    let ldaps = slapd.ldaps_port.unwrap();

    let cases = [
        (
            "StartTLS, checked against the CA",
            format!(
                "  addr: \"127.0.0.1:{}\"\n  tls: starttls\n  ca_certificate: \"{}\"\n",
                slapd.port,
                ca.display()
            ),
            200,
        ),
        (
            "LDAPS, checked against the CA",
            format!(
                "  addr: \"ldaps://127.0.0.1:{ldaps}\"\n  ca_certificate: \"{}\"\n",
                ca.display()
            ),
            200,
        ),
        (
            "StartTLS against the system's roots: the test CA is not among them",
            format!("  addr: \"127.0.0.1:{}\"\n  tls: starttls\n", slapd.port),
            503,
        ),
        (
            "StartTLS, binding as the user first (no service account)",
            format!(
                "  addr: \"127.0.0.1:{}\"\n  tls: starttls\n  ca_certificate: \"{}\"\n  initial_bind_as_user: true\n  bind_dn: \"uid=${{account}},ou=people,{SUFFIX}\"\n",
                slapd.port,
                ca.display()
            ),
            200,
        ),
        (
            "StartTLS, certificate not checked",
            format!(
                "  addr: \"127.0.0.1:{}\"\n  tls: starttls\n  insecure_tls_skip_verify: true\n",
                slapd.port
            ),
            200,
        ),
    ];
    for (what, ldap, status) in cases {
        let gateway = tls_gateway(&ldap).await;
        let resp = ask_token(
            &gateway.url(),
            "dora",
            "dora-pw",
            "repository:devs/app:pull,push",
        )
        .await;
        assert_eq!(
            resp.status,
            status,
            "{what}: {}",
            String::from_utf8_lossy(&resp.body)
        );
        if status == 200 {
            assert_eq!(granted(&resp), ["pull", "push"], "{what}");
            let wrong =
                ask_token(&gateway.url(), "dora", "wrong", "repository:devs/app:pull").await;
            assert_eq!(wrong.status, 401, "{what}: a wrong password");
        }
        gateway.server.shutdown().await;
    }
}
