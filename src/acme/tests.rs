use std::sync::Arc;

use super::store::{describe, Issued};
use super::*;

const DAY: Duration = Duration::from_secs(24 * 3600);

fn settings(dir: &std::path::Path) -> Settings {
    Settings {
        host: "registry.example.com".to_owned(),
        email: None,
        cache_dir: dir.to_owned(),
        directory_url: LETS_ENCRYPT.to_owned(),
        ca_certificate: None,
        renewal: Renewal::default(),
    }
}

fn held(from: SystemTime, days: u32) -> Held {
    Held {
        serial: "01".to_owned(),
        names: vec!["registry.example.com".to_owned()],
        not_before: from,
        not_after: from + DAY * days,
        directory: None,
    }
}

#[test]
fn a_certificate_is_renewed_in_the_last_third_of_its_life() {
    let s = settings(std::path::Path::new("/nowhere"));
    let start = UNIX_EPOCH + DAY * 20_000;
    let cert = held(start, 90);
    assert_eq!(due(None, &s, start), Some(Due::NoCertificate));
    assert_eq!(due(Some(&cert), &s, start + DAY * 59), None);
    assert_eq!(
        due(Some(&cert), &s, start + DAY * 60),
        Some(Due::Renewal {
            expires: cert.not_after
        }),
        "30 days before a 90-day certificate expires"
    );
    assert!(due(Some(&cert), &s, start + DAY * 100).is_some(), "expired");
    // Shorter lifetimes keep the same share: a 6-day certificate at 2 days left.
    let short = held(start, 6);
    assert_eq!(due(Some(&short), &s, start + DAY * 3), None);
    assert!(due(Some(&short), &s, start + DAY * 4).is_some());
    // renew_in_last: 1 (the tests' forced renewal) renews at every check.
    let mut always = s.clone();
    always.renewal.renew_in_last = 1;
    assert!(due(Some(&cert), &always, start + Duration::from_secs(1)).is_some());
}

#[test]
fn another_host_or_ca_means_a_new_certificate() {
    let s = settings(std::path::Path::new("/nowhere"));
    let start = UNIX_EPOCH + DAY * 20_000;
    let mut other = held(start, 90);
    other.names = vec!["old.example.com".to_owned()];
    assert_eq!(due(Some(&other), &s, start), Some(Due::OtherHost));
    let mut staging = held(start, 90);
    staging.directory = Some("https://acme-staging-v02.api.letsencrypt.org/directory".into());
    assert!(matches!(
        due(Some(&staging), &s, start),
        Some(Due::OtherCa(_))
    ));
    // docker_auth's (autocert's) certificate says nothing of its CA: kept.
    let mut ours = held(start, 90);
    ours.names = vec!["REGISTRY.example.com".to_owned()];
    assert_eq!(due(Some(&ours), &s, start), None);
}

#[test]
fn failed_attempts_back_off_to_an_hour() {
    let r = Renewal::default();
    let waits: Vec<u64> = (1..=8).map(|n| r.retry_after(n).as_secs()).collect();
    assert_eq!(waits, [60, 120, 240, 480, 960, 1920, 3600, 3600]);
    assert_eq!(r.retry_after(1000).as_secs(), 3600);
    let quick = Renewal {
        check_every: Duration::from_secs(5),
        ..r
    };
    assert_eq!(
        quick.retry_after(3),
        Duration::from_secs(5),
        "never past a check"
    );
}

/// A chain for `host` from a throwaway CA, with its key, as the CA would issue it.
fn issued(host: &str) -> Issued {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![host.to_owned()]).unwrap();
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x8f, 0x01]));
    let leaf = params.signed_by(&key, &issuer).unwrap();
    Issued {
        key_pem: key.serialize_pem(),
        chain_pem: format!("{}{}", leaf.pem(), ca_cert.pem()),
        directory: LETS_ENCRYPT.to_owned(),
    }
}

#[cfg(unix)]
#[test]
fn the_cache_is_private_and_read_back() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("made/here");
    let s = settings(&dir);
    let store = Store::open(&dir).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert!(store.load(&s.host).unwrap().is_none());
    store.save(&s, &issued(&s.host)).unwrap();
    let file = dir.join("registry.example.com");
    assert_eq!(mode(&file), 0o600);
    // autocert's layout: the key first, then the chain.
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("-----BEGIN PRIVATE KEY-----"), "{text}");
    let (key, held) = store.load(&s.host).unwrap().unwrap();
    assert_eq!(key.cert.len(), 2);
    assert_eq!(held.serial, "8F01");
    assert_eq!(held.names, ["registry.example.com"]);
    assert_eq!(held.directory.as_deref(), Some(LETS_ENCRYPT));
    assert!(held.not_after > held.not_before);
    // Renewal due right away in a test that renews at every check; not with the defaults
    // (rcgen's certificates run to 4096).
    assert_eq!(due(Some(&held), &s, SystemTime::now()), None);
}

#[test]
fn docker_auths_cached_certificate_is_served() {
    // autocert writes the key as `EC PRIVATE KEY` (SEC1, with the curve and public key,
    // as openssl does), then the chain, in a file named after the host; it records no CA.
    let tmp = tempfile::tempdir().unwrap();
    let s = settings(tmp.path());
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(tmp.path())
            .output()
            .expect("openssl is installed");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        "sec1.pem",
    ]);
    openssl(&[
        "pkcs8",
        "-topk8",
        "-nocrypt",
        "-in",
        "sec1.pem",
        "-out",
        "pkcs8.pem",
    ]);
    let sec1 = std::fs::read_to_string(tmp.path().join("sec1.pem")).unwrap();
    assert!(sec1.starts_with("-----BEGIN EC PRIVATE KEY-----"), "{sec1}");
    let pkcs8 = std::fs::read_to_string(tmp.path().join("pkcs8.pem")).unwrap();
    let key = rcgen::KeyPair::from_pem(&pkcs8).unwrap();
    let cert = rcgen::CertificateParams::new(vec![s.host.clone()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(tmp.path().join(&s.host), format!("{sec1}{}", cert.pem())).unwrap();
    let (_, held) = Store::at(tmp.path()).load(&s.host).unwrap().unwrap();
    assert_eq!(held.directory, None);
    assert_eq!(due(Some(&held), &s, SystemTime::now()), None);
}

#[test]
fn the_listener_shows_the_challenge_only_to_the_validation() {
    let host = "registry.example.com";
    let made = issued(host);
    let tmp = tempfile::tempdir().unwrap();
    let s = settings(tmp.path());
    Store::open(tmp.path()).unwrap().save(&s, &made).unwrap();
    let (key, _) = Store::at(tmp.path()).load(host).unwrap().unwrap();
    let certs = Certificates::empty();
    let config = crate::tls::server_config(
        certs.clone(),
        &crate::tls::ServerTls {
            source: crate::tls::CertSource::Acme(Box::new(s)),
            tls13_only: false,
            curves: Vec::new(),
        },
    );
    // Nothing to show yet: every handshake fails.
    assert!(served(&config, host, &[b"h2"]).is_none());
    certs.replace(key);
    let normal = served(&config, host, &[b"h2", b"http/1.1"]).unwrap();
    assert_eq!(describe(&normal).unwrap().serial, "8F01");
    // The validation gets nothing while no order waits.
    assert!(served(&config, host, &[b"acme-tls/1"]).is_none());
    let digest = [7u8; 32];
    certs.set_challenge(host, order::challenge_certificate(host, &digest).unwrap());
    let shown = served(&config, host, &[b"acme-tls/1"]).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&shown).unwrap();
    let ext = cert
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
        .expect("the acmeIdentifier extension");
    assert!(ext.critical);
    assert!(ext.value.ends_with(&digest));
    // Not for another name, and never to a normal client.
    assert!(served(&config, "other.example.com", &[b"acme-tls/1"]).is_none());
    let normal = served(&config, host, &[b"http/1.1"]).unwrap();
    assert_eq!(describe(&normal).unwrap().serial, "8F01");
    let normal = served(&config, host, &[b"acme-tls/1", b"h2"]).unwrap();
    assert_eq!(describe(&normal).unwrap().serial, "8F01");
    certs.clear_challenge();
    assert!(served(&config, host, &[b"acme-tls/1"]).is_none());
}

/// The end-entity certificate the server shows a client offering `alpn` for `name`, or
/// `None` when the handshake fails. The client trusts anything: only what is shown counts.
fn served(config: &Arc<rustls::ServerConfig>, name: &str, alpn: &[&[u8]]) -> Option<Vec<u8>> {
    let mut server = rustls::ServerConnection::new(config.clone()).unwrap();
    let mut client_config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AnyCertificate))
    .with_no_client_auth();
    client_config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let mut client =
        rustls::ClientConnection::new(Arc::new(client_config), name.to_owned().try_into().unwrap())
            .unwrap();
    for _ in 0..10 {
        let mut buf = Vec::new();
        client.write_tls(&mut buf).unwrap();
        server.read_tls(&mut buf.as_slice()).unwrap();
        server.process_new_packets().ok()?;
        let mut buf = Vec::new();
        server.write_tls(&mut buf).unwrap();
        client.read_tls(&mut buf.as_slice()).unwrap();
        client.process_new_packets().ok()?;
        if !client.is_handshaking() {
            return client.peer_certificates().map(|c| c[0].to_vec());
        }
    }
    None
}

#[derive(Debug)]
struct AnyCertificate;

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[test]
fn check_says_what_serve_will_do_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let s = settings(&tmp.path().join("le"));
    let notes = inspect(&s).unwrap();
    assert!(
        notes[0].contains("does not exist; `serve` makes it (0700)"),
        "{notes:?}"
    );
    assert!(
        notes[1].contains("requests a certificate for registry.example.com"),
        "{notes:?}"
    );
    assert!(notes[1].contains("(no certificate yet)"), "{notes:?}");
    assert!(!s.cache_dir.exists());

    Store::open(&s.cache_dir)
        .unwrap()
        .save(&s, &issued(&s.host))
        .unwrap();
    let notes = inspect(&s).unwrap();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].contains("cached certificate for registry.example.com: serial 8F01"),
        "{notes:?}"
    );

    let mut missing_ca = s.clone();
    missing_ca.ca_certificate = Some(tmp.path().join("nope.pem"));
    assert!(inspect(&missing_ca)
        .unwrap_err()
        .to_string()
        .contains("nope.pem"));
}

#[test]
fn metrics_show_the_certificate_and_failures_only_with_acme() {
    use std::sync::atomic::Ordering::Relaxed;
    let m = Metrics::default();
    assert!(!m.render().contains("regate_acme"));
    m.acme_enabled.store(true, Relaxed);
    let text = m.render();
    assert!(
        text.contains("regate_acme_renewal_failures_total 0\n"),
        "{text}"
    );
    assert!(!text.contains("expiry"), "no certificate yet: {text}");
    m.acme_renewal_failures.fetch_add(1, Relaxed);
    m.acme_certificate_expiry.store(1_900_000_000, Relaxed);
    let text = m.render();
    assert!(
        text.contains("regate_acme_renewal_failures_total 1\n"),
        "{text}"
    );
    assert!(text.contains("# TYPE regate_acme_certificate_expiry_timestamp_seconds gauge\nregate_acme_certificate_expiry_timestamp_seconds 1900000000\n"), "{text}");
}
