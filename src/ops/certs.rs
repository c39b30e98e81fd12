//! `regate cert init`: one step to trusted HTTPS. A private CA, a server certificate for
//! the names clients use, and the token signing pair, with what to do with each.
//! `regate cert renew`: a new server certificate from the same CA, so clients that trust
//! the CA keep trusting regate.

use std::fs;
use std::io;
use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use time::{Duration, OffsetDateTime};

use crate::auth::keys::{self, KeyError};

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("these files exist already (give --force to replace them): {}", list(.0))]
    Exists(Vec<PathBuf>),
    #[error("`{0}` is not a DNS name or an IP address")]
    BadHost(String),
    #[error("no --host given: name every host and IP clients use to reach regate")]
    NoHost,
    #[error(transparent)]
    Rcgen(#[from] rcgen::Error),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("{path}: not a certificate this CA can renew from: {message}")]
    Unreadable { path: PathBuf, message: String },
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

pub struct Options {
    pub hosts: Vec<String>,
    pub out: PathBuf,
    pub force: bool,
    /// Validity of the server certificate; the CA lives ten years.
    pub days: i64,
    /// The port regate serves HTTPS on, for the printed steps (443: none in names).
    pub port: u16,
}

/// The files `init` writes, relative to the output folder.
pub const FILES: [&str; 6] = [
    "ca.crt",
    "ca.key",
    "server.crt",
    "server.key",
    "token.crt",
    "token.key",
];

pub fn init(opts: &Options) -> Result<(), CertError> {
    if opts.hosts.is_empty() {
        return Err(CertError::NoHost);
    }
    let path = |name: &str| opts.out.join(name);
    let existing: Vec<PathBuf> = FILES
        .iter()
        .map(|f| path(f))
        .filter(|p| p.exists())
        .collect();
    if !existing.is_empty() && !opts.force {
        return Err(CertError::Exists(existing));
    }
    fs::create_dir_all(&opts.out).map_err(|source| CertError::Io {
        path: opts.out.clone(),
        source,
    })?;
    let now = OffsetDateTime::now_utc();

    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "regate private CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = now - Duration::hours(1);
    ca.not_after = now + Duration::days(3650);
    let ca_cert = ca.self_signed(&ca_key)?;
    let ca_key_pem = ca_key.serialize_pem();

    let issuer = Issuer::new(ca, ca_key);
    let (server_pem, server_key_pem) = server_certificate(&opts.hosts, opts.days, &issuer)?;

    let write = |name: &str, contents: &str, private: bool| {
        let p = path(name);
        let result = if private {
            keys::write_private(&p, contents.as_bytes())
        } else {
            fs::write(&p, contents)
        };
        result.map_err(|source| CertError::Io { path: p, source })
    };
    write("ca.crt", &ca_cert.pem(), false)?;
    write("ca.key", &ca_key_pem, true)?;
    // The chain a client is sent: the server certificate, then the CA.
    write(
        "server.crt",
        &format!("{server_pem}{}", ca_cert.pem()),
        false,
    )?;
    write("server.key", &server_key_pem, true)?;
    for f in ["token.crt", "token.key"] {
        let _ = fs::remove_file(path(f));
    }
    keys::SigningKey::load_or_generate(&opts.out)?;
    Ok(())
}

/// A server certificate for `hosts`, valid `days`, signed by `issuer`: (certificate PEM,
/// key PEM).
fn server_certificate(
    hosts: &[String],
    days: i64,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<(String, String), CertError> {
    if hosts.is_empty() {
        return Err(CertError::NoHost);
    }
    for host in hosts {
        let ok = host.parse::<std::net::IpAddr>().is_ok()
            || rcgen::string::Ia5String::try_from(host.as_str()).is_ok() && !host.is_empty();
        if !ok {
            return Err(CertError::BadHost(host.clone()));
        }
    }
    let now = OffsetDateTime::now_utc();
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params =
        CertificateParams::new(hosts.to_vec()).map_err(|_| CertError::BadHost(hosts.join(" ")))?;
    params
        .distinguished_name
        .push(DnType::CommonName, hosts[0].as_str());
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days);
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// What `cert renew` needs: the folder `init` wrote (its `ca.crt` and `ca.key` sign), and
/// the names, or none to keep those of the current `server.crt`.
pub struct Renew {
    pub out: PathBuf,
    pub hosts: Vec<String>,
    pub days: i64,
}

/// A new `server.crt` and `server.key` from the CA in the folder; the CA and the token pair
/// stay. Each file is replaced whole (written beside it, then renamed), so a running regate
/// picks up the new pair on its next look.
pub fn renew(opts: &Renew) -> Result<Vec<String>, CertError> {
    let path = |name: &str| opts.out.join(name);
    let read = |name: &str| {
        fs::read_to_string(path(name)).map_err(|source| CertError::Io {
            path: path(name),
            source,
        })
    };
    let (ca_pem, ca_key_pem) = (read("ca.crt")?, read("ca.key")?);
    let unreadable = |name: &str, e: &dyn std::fmt::Display| CertError::Unreadable {
        path: path(name),
        message: e.to_string(),
    };
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|e| unreadable("ca.key", &e))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(|e| unreadable("ca.crt", &e))?;
    let hosts = match opts.hosts.is_empty() {
        false => opts.hosts.clone(),
        true => current_names(&read("server.crt")?).map_err(|e| unreadable("server.crt", &e))?,
    };
    let (server_pem, key_pem) = server_certificate(&hosts, opts.days, &issuer)?;
    let replace = |name: &str, contents: &str, private: bool| {
        let tmp = path(&format!(".{name}.new"));
        let written = if private {
            keys::write_private(&tmp, contents.as_bytes())
        } else {
            fs::write(&tmp, contents)
        };
        written
            .and_then(|()| fs::rename(&tmp, path(name)))
            .map_err(|source| CertError::Io {
                path: path(name),
                source,
            })
    };
    // The key first: regate refuses a certificate whose key it does not have yet, and
    // keeps serving the old pair until both are new.
    replace("server.key", &key_pem, true)?;
    replace("server.crt", &format!("{server_pem}{ca_pem}"), false)?;
    Ok(hosts)
}

/// The DNS names and addresses of the first certificate in `pem`.
fn current_names(pem: &str) -> Result<Vec<String>, String> {
    let der = rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .ok_or("no certificate")?
        .map_err(|e| e.to_string())?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| e.to_string())?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(d) => names.push(d.to_string()),
                x509_parser::extensions::GeneralName::IPAddress(ip) => match ip.len() {
                    4 => names.push(
                        std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*ip).unwrap_or_default())
                            .to_string(),
                    ),
                    16 => names.push(
                        std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*ip).unwrap_or_default())
                            .to_string(),
                    ),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    if names.is_empty() {
        return Err("it names no host; give --host".into());
    }
    Ok(names)
}

/// What to do with the files, for the hosts given.
pub fn instructions(opts: &Options) -> String {
    let dir = opts.out.canonicalize().unwrap_or_else(|_| opts.out.clone());
    let d = dir.display();
    let h = &opts.hosts[0];
    let port = opts.port;
    // As clients write the registry in image names and certs.d folders.
    let registry = match port {
        443 => h.clone(),
        p => format!("{h}:{p}"),
    };
    format!(
        r#"Wrote {d}/: ca.crt ca.key server.crt server.key token.crt token.key
Keep ca.key offline if you can; it signs certificates every client trusts.

1. regate's config:
     server:
       addr: ":{port}"
       certificate: "{d}/server.crt"
       key: "{d}/server.key"
     token:
       certificate: "{d}/token.crt"
       key: "{d}/token.key"
   (replace server.crt and server.key later and regate picks them up without a restart;
   `regate cert renew --out {d}` makes a new pair from the same CA)

2. Trust the CA on every client machine. {registry} is the registry as clients write it
   in image names ({registry}/team/app:1.0; the port only when it is not 443).
     docker:           /etc/docker/certs.d/{registry}/ca.crt   (no restart needed)
     podman, skopeo,
     buildah, CRI-O:   /etc/containers/certs.d/{registry}/ca.crt
     containerd, k8s:  /etc/containerd/certs.d/{registry}/ca.crt and beside it hosts.toml:
                         server = "https://{registry}"
                         [host."https://{registry}"]
                           ca = "/etc/containerd/certs.d/{registry}/ca.crt"
                       with config_path = "/etc/containerd/certs.d" in containerd's
                       registry config (on every Kubernetes node)
     everything else:  cp ca.crt /usr/local/share/ca-certificates/regate.crt
                       && update-ca-certificates
   No --insecure-registry, no --tls-verify=false.

3. Only if registry:2 checks tokens too (the docker_auth layout), its environment:
     REGISTRY_AUTH=token
     REGISTRY_AUTH_TOKEN_REALM=https://{registry}/auth
     REGISTRY_AUTH_TOKEN_SERVICE=<regate's token.service, default "Docker registry">
     REGISTRY_AUTH_TOKEN_ISSUER=<regate's token.issuer, default "regate">
     REGISTRY_AUTH_TOKEN_ROOTCERTBUNDLE=/path/to/token.crt
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_writes_a_chain_that_verifies_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options {
            hosts: vec!["registry.example.test".into(), "127.0.0.1".into()],
            out: dir.path().join("certs"),
            force: false,
            days: 30,
            port: 5000,
        };
        init(&opts).unwrap();
        for f in FILES {
            assert!(opts.out.join(f).exists(), "{f}");
        }
        // The server pair loads as regate's TLS pair, the token pair as its signing key.
        let files = crate::tls::TlsFiles {
            certificate: opts.out.join("server.crt"),
            key: opts.out.join("server.key"),
        };
        crate::tls::load_certified_key(&files).unwrap();
        keys::SigningKey::load(&opts.out.join("token.crt"), &opts.out.join("token.key")).unwrap();
        // And a TLS client that trusts only ca.crt accepts the chain for the names given.
        let verified = std::process::Command::new("openssl")
            .args([
                "verify",
                "-CAfile",
                "ca.crt",
                "-verify_hostname",
                "registry.example.test",
            ])
            .args([
                "-verify_ip",
                "127.0.0.1",
                "-purpose",
                "sslserver",
                "server.crt",
            ])
            .current_dir(&opts.out)
            .output()
            .unwrap();
        assert!(
            verified.status.success(),
            "{}",
            String::from_utf8_lossy(&verified.stdout)
        );

        let before = fs::read(opts.out.join("ca.crt")).unwrap();
        assert!(matches!(init(&opts), Err(CertError::Exists(_))));
        assert_eq!(fs::read(opts.out.join("ca.crt")).unwrap(), before);
        init(&Options {
            force: true,
            ..opts
        })
        .unwrap();
    }

    #[test]
    fn renew_keeps_the_ca_and_the_names() {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options {
            hosts: vec!["registry.example.test".into(), "10.0.0.5".into()],
            out: dir.path().to_owned(),
            force: false,
            days: 30,
            port: 5000,
        };
        init(&opts).unwrap();
        let text = instructions(&opts);
        for line in [
            "addr: \":5000\"",
            "/etc/docker/certs.d/registry.example.test:5000/ca.crt",
            "REGISTRY_AUTH_TOKEN_REALM=https://registry.example.test:5000/auth",
            "default \"regate\"",
        ] {
            assert!(text.contains(line), "{line:?} in\n{text}");
        }
        let read = |f: &str| fs::read(dir.path().join(f)).unwrap();
        let (ca, token, server) = (read("ca.crt"), read("token.key"), read("server.crt"));
        let names = renew(&Renew {
            out: dir.path().to_owned(),
            hosts: Vec::new(),
            days: 90,
        })
        .unwrap();
        assert_eq!(names, ["registry.example.test", "10.0.0.5"]);
        assert_eq!(read("ca.crt"), ca, "the CA stays");
        assert_eq!(read("token.key"), token, "the token key stays");
        assert_ne!(read("server.crt"), server, "a new certificate");
        let files = crate::tls::TlsFiles {
            certificate: dir.path().join("server.crt"),
            key: dir.path().join("server.key"),
        };
        crate::tls::load_certified_key(&files).unwrap();
        let verified = std::process::Command::new("openssl")
            .args([
                "verify",
                "-CAfile",
                "ca.crt",
                "-verify_ip",
                "10.0.0.5",
                "server.crt",
            ])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(verified.status.success(), "{verified:?}");
        // Without a CA there is nothing to renew from.
        let empty = tempfile::tempdir().unwrap();
        assert!(renew(&Renew {
            out: empty.path().to_owned(),
            hosts: vec!["x".into()],
            days: 1
        })
        .is_err());
    }

    #[test]
    fn hosts_are_required_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let opts = |hosts: Vec<String>| Options {
            hosts,
            out: dir.path().into(),
            force: true,
            days: 1,
            port: 443,
        };
        assert!(matches!(init(&opts(vec![])), Err(CertError::NoHost)));
        assert!(init(&opts(vec!["bad host é".into()])).is_err());
    }
}
