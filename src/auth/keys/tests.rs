use std::process::Command;

use base64::Engine;

use super::*;

#[test]
fn libtrust_key_id_matches_the_jwt_md_example() {
    // distribution docs/spec/auth/jwt.md: the example JWK and its kid.
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let x = b64
        .decode("m7zUpx3b-zmVE5cymSs64POG9QcyEpJaYCD82-549_Q")
        .unwrap();
    let y = b64
        .decode("dU3biz8sZ_8GPB-odm8Wxz3lNDr1xcAQQPQaOcr1fmc")
        .unwrap();
    let mut spki = hex("3059301306072a8648ce3d020106082a8648ce3d030107034200");
    spki.push(0x04);
    spki.extend(x);
    spki.extend(y);
    assert_eq!(
        libtrust_key_id(&spki),
        "PYYO:TEWU:V7JH:26JV:AQTZ:LJC3:SXVJ:XGHA:34F2:2LAQ:ZRMK:Z7Q6"
    );
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn base32_rfc4648_vectors() {
    // The encoding libtrust_key_id uses: RFC 4648 without padding.
    let base32 = |b: &[u8]| data_encoding::BASE32_NOPAD.encode(b);
    assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
    assert_eq!(base32(b"fooba"), "MZXW6YTB");
    assert_eq!(base32(b""), "");
}

#[test]
fn generated_key_is_es256_and_reloads_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let (first, made) = SigningKey::load_or_generate(dir.path()).unwrap();
    assert!(made);
    assert_eq!(first.algorithm, Algorithm::ES256);
    assert_eq!(first.x5c.len(), 1);
    let (second, made) = SigningKey::load_or_generate(dir.path()).unwrap();
    assert!(!made);
    assert_eq!(first.kid, second.kid);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.path().join("token.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the private key is not readable by others");
    }
}

#[cfg(unix)]
#[test]
fn the_generated_key_is_0600_in_a_0700_folder() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let root = tempfile::tempdir().unwrap();
    // A data_dir regate makes itself, parents included.
    let made = root.path().join("state/data");
    SigningKey::load_or_generate(&made).unwrap();
    assert_eq!(mode(&made), 0o700, "a data_dir regate makes");
    assert_eq!(mode(&made.join("token.key")), 0o600);
    // One the operator made open to everyone is closed before the key goes in.
    let open = root.path().join("open");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o755)).unwrap();
    // A stale key file left readable by others (the certificate is missing, so the pair
    // is made again over it).
    fs::write(open.join("token.key"), "stale").unwrap();
    fs::set_permissions(open.join("token.key"), fs::Permissions::from_mode(0o644)).unwrap();
    SigningKey::load_or_generate(&open).unwrap();
    assert_eq!(mode(&open), 0o700, "an existing data_dir open to others");
    assert_eq!(
        mode(&open.join("token.key")),
        0o600,
        "a key written over a 0644 file"
    );
}

/// Keys as openssl writes them for docker_auth users: SEC1 EC, PKCS#1 RSA, PKCS#8 both.
#[test]
fn openssl_key_formats_load() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sh = |script: &str| {
        let ok = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(d)
            .output()
            .expect("openssl is installed")
            .status
            .success();
        assert!(ok, "{script}");
    };
    sh("openssl ecparam -name prime256v1 -genkey -noout -out ec.key");
    sh("openssl req -x509 -new -key ec.key -subj /CN=t -days 2 -out ec.crt");
    sh("openssl pkcs8 -topk8 -nocrypt -in ec.key -out ec8.key");
    sh("openssl genrsa -traditional -out rsa.key 2048 2>/dev/null || openssl genrsa -out rsa.key 2048");
    sh("openssl req -x509 -new -key rsa.key -subj /CN=t -days 2 -out rsa.crt");
    sh("openssl pkcs8 -topk8 -nocrypt -in rsa.key -out rsa8.key");
    sh("openssl ecparam -name secp384r1 -genkey -noout -out p384.key");
    sh("openssl req -x509 -new -key p384.key -subj /CN=t -days 2 -out p384.crt");

    for (cert, key, alg) in [
        ("ec.crt", "ec.key", Algorithm::ES256),
        ("ec.crt", "ec8.key", Algorithm::ES256),
        ("rsa.crt", "rsa.key", Algorithm::RS256),
        ("rsa.crt", "rsa8.key", Algorithm::RS256),
        ("p384.crt", "p384.key", Algorithm::ES384),
    ] {
        let k = SigningKey::load(&d.join(cert), &d.join(key))
            .unwrap_or_else(|e| panic!("{cert} + {key}: {e}"));
        assert_eq!(k.algorithm, alg, "{key}");
        assert_eq!(k.kid.len(), 59);
    }
    let err = SigningKey::load(&d.join("rsa.crt"), &d.join("ec.key")).unwrap_err();
    assert!(
        matches!(err, KeyError::NoKey { .. } | KeyError::Mismatch { .. }),
        "{err}"
    );
    sh("openssl ecparam -name prime256v1 -genkey -noout -out other.key");
    let err = SigningKey::load(&d.join("ec.crt"), &d.join("other.key")).unwrap_err();
    assert!(matches!(err, KeyError::Mismatch { .. }), "{err}");
}

#[test]
fn rfc7638_thumbprint_vector() {
    // RFC 7638 section 3.1.
    let jwk = serde_json::json!({
        "kty": "RSA",
        "e": "AQAB",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    });
    assert_eq!(
        jwk_thumbprint(&jwk),
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    );
}

#[test]
fn jwks_verifies_tokens_signed_with_the_thumbprint_kid() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = SigningKey::load_or_generate(dir.path()).unwrap();
    let key = key.with_kid_format(KidFormat::Rfc7638);
    assert_eq!(key.kid, key.thumbprint);
    assert_ne!(key.thumbprint, key.libtrust_kid);
    // EC thumbprints come from the key's own point: two keys never share one.
    let other = tempfile::tempdir().unwrap();
    let (other, _) = SigningKey::load_or_generate(other.path()).unwrap();
    assert_ne!(other.thumbprint, key.thumbprint);

    let mut header = jsonwebtoken::Header::new(key.algorithm);
    header.kid = Some(key.kid.clone());
    let token = jsonwebtoken::encode(
        &header,
        &serde_json::json!({"sub": "x", "exp": u32::MAX}),
        &key.encoding,
    )
    .unwrap();
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(key.jwks()).unwrap();
    let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
    let jwk = jwks.find(&kid).expect("the token's kid is in the JWKS");
    let decoding = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = jsonwebtoken::Validation::new(key.algorithm);
    validation.validate_aud = false;
    jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &validation).unwrap();
}

/// Replicas starting at once on one shared `data_dir` (threads here: flock conflicts
/// between open files of one process too) all end up with the same key, whole.
#[test]
fn replicas_sharing_a_data_dir_generate_one_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let made: Vec<(String, bool)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    let (key, made) = SigningKey::load_or_generate(&data).unwrap();
                    (key.kid, made)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(made.iter().filter(|(_, m)| *m).count(), 1, "{made:?}");
    assert!(made.iter().all(|(kid, _)| *kid == made[0].0), "{made:?}");
    // Nothing half-written is left beside the pair.
    let mut names: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["token.crt", "token.key", "token.lock"]);
}
