//! `regate cert init`: one step to trusted HTTPS. A private CA, a server certificate for
//! the names clients use, and the token signing pair, with what to do with each.

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

    for host in &opts.hosts {
        let ok = host.parse::<std::net::IpAddr>().is_ok()
            || rcgen::string::Ia5String::try_from(host.as_str()).is_ok() && !host.is_empty();
        if !ok {
            return Err(CertError::BadHost(host.clone()));
        }
    }
    let server_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut server = CertificateParams::new(opts.hosts.clone())
        .map_err(|_| CertError::BadHost(opts.hosts.join(" ")))?;
    server
        .distinguished_name
        .push(DnType::CommonName, opts.hosts[0].as_str());
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.not_before = now - Duration::hours(1);
    server.not_after = now + Duration::days(opts.days);
    let issuer = Issuer::new(ca, ca_key);
    let server_cert = server.signed_by(&server_key, &issuer)?;

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
        &format!("{}{}", server_cert.pem(), ca_cert.pem()),
        false,
    )?;
    write("server.key", &server_key.serialize_pem(), true)?;
    for f in ["token.crt", "token.key"] {
        let _ = fs::remove_file(path(f));
    }
    keys::SigningKey::load_or_generate(&opts.out)?;
    Ok(())
}

/// What to do with the files, for the hosts given.
pub fn instructions(opts: &Options) -> String {
    let dir = opts.out.canonicalize().unwrap_or_else(|_| opts.out.clone());
    let d = dir.display();
    let h = &opts.hosts[0];
    format!(
        r#"Wrote {d}/: ca.crt ca.key server.crt server.key token.crt token.key
Keep ca.key offline if you can; it signs certificates every client trusts.

1. regate's config:
     server:
       addr: ":443"
       certificate: "{d}/server.crt"
       key: "{d}/server.key"
     token:
       certificate: "{d}/token.crt"
       key: "{d}/token.key"
   (replace server.crt and server.key later and regate picks them up without a restart)

2. Trust the CA on every client machine. HOST:PORT is the registry as clients write it in
   image names: {h}:5000 for port 5000, plain {h} for 443.
     docker:           /etc/docker/certs.d/HOST:PORT/ca.crt   (no restart needed)
     podman, skopeo,
     buildah, CRI-O:   /etc/containers/certs.d/HOST:PORT/ca.crt
     containerd, k8s:  /etc/containerd/certs.d/HOST:PORT/ca.crt and beside it hosts.toml:
                         server = "https://HOST:PORT"
                         [host."https://HOST:PORT"]
                           ca = "/etc/containerd/certs.d/HOST:PORT/ca.crt"
                       with config_path = "/etc/containerd/certs.d" in containerd's
                       registry config (on every Kubernetes node)
     everything else:  cp ca.crt /usr/local/share/ca-certificates/regate.crt
                       && update-ca-certificates
   No --insecure-registry, no --tls-verify=false.

3. Only if registry:2 checks tokens too (the docker_auth layout), its environment:
     REGISTRY_AUTH=token
     REGISTRY_AUTH_TOKEN_REALM=https://{h}/auth
     REGISTRY_AUTH_TOKEN_SERVICE=<regate's token.service, default "Docker registry">
     REGISTRY_AUTH_TOKEN_ISSUER=<regate's token.issuer>
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
    fn hosts_are_required_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let opts = |hosts: Vec<String>| Options {
            hosts,
            out: dir.path().into(),
            force: true,
            days: 1,
        };
        assert!(matches!(init(&opts(vec![])), Err(CertError::NoHost)));
        assert!(init(&opts(vec!["bad host é".into()])).is_err());
    }
}
