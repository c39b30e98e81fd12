//! Entry points for the fuzz targets in `fuzz/` and for `tests/it/fuzz_corpora.rs`, which
//! replays every saved input on stable Rust in `cargo test`. Each takes arbitrary bytes and
//! must never panic; the properties checked here are the ones an attacker would break.
#![doc(hidden)]

use std::path::Path;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use hyper::header::HeaderValue;
use hyper::Method;

use crate::auth::challenge::{parse_authorization, Challenge, ChallengeError};
use crate::auth::keys::SigningKey;
use crate::auth::scope::Scope;
use crate::auth::token::Tokens;
use crate::config::Config;
use crate::route::{self, Route};

/// The route classifier: the bytes are `path[?query]`. The path regate forwards must
/// classify the same way again (what was checked is what is served), and every route
/// that forwards names a valid repository.
pub fn route(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (path, query) = match text.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (text, None),
    };
    let classified = route::classify(path, query);
    // Go refuses a `%` without two hex digits after it (400); so must regate, whatever
    // a lenient parser would make of the bytes (`%+1` is not byte 0x01).
    let bytes = path.as_bytes();
    let bad_escape = bytes.iter().enumerate().any(|(i, b)| {
        *b == b'%'
            && !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    });
    if bad_escape {
        assert_eq!(
            classified.route,
            Route::BadRequest,
            "a malformed escape in {path:?} was decoded"
        );
    }
    for method in [Method::GET, Method::PUT, Method::DELETE, Method::PATCH] {
        let from = route::query_param(query, "from").ok().flatten();
        let _ = classified.route.required_access(&method, from.as_deref());
    }
    if let Route::Repository { name, .. } = &classified.route {
        assert!(
            route::valid_name(name),
            "forwarded an invalid name {name:?}"
        );
        let again = route::classify(&classified.path, query);
        assert_eq!(
            again.route, classified.route,
            "the forwarded path routes elsewhere"
        );
        assert_eq!(again.path, classified.path);
    }
}

/// The scope grammar: whatever parses prints back to something that parses the same.
pub fn scope(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(scopes) = Scope::parse_list(text) {
        for s in scopes {
            let again = Scope::parse(&s.to_string()).expect("a printed scope parses");
            assert_eq!(again, s);
        }
    }
}

/// The `Authorization` header as registry:2 reads it, and the challenge regate writes:
/// any realm, service and scope make a header value clients can read.
pub fn authorization(data: &[u8]) {
    if let Ok(value) = HeaderValue::from_bytes(data) {
        let _ = parse_authorization(Some(&value));
    }
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let realm = parts.next().unwrap_or_default().to_owned();
    let service = parts.next().unwrap_or_default().to_owned();
    let scopes = Scope::parse_list(parts.next().unwrap_or_default()).unwrap_or_default();
    let challenge = Challenge {
        realm,
        service,
        scopes,
        error: Some(ChallengeError::InsufficientScope),
    };
    assert!(
        HeaderValue::from_str(&challenge.to_string()).is_ok(),
        "the challenge is not a valid header value"
    );
}

static TOKENS: LazyLock<Tokens> = LazyLock::new(|| {
    // One folder for every run (its lock makes concurrent runs share one key), not one per
    // process left behind in the temporary folder.
    let dir = std::env::temp_dir().join("regate-fuzz-key");
    let (key, _) = SigningKey::load_or_generate(&dir).expect("a key for the fuzzer");
    Tokens::new(
        Arc::new(key),
        "fuzz",
        "fuzz",
        Duration::from_secs(300),
        Duration::from_secs(3600),
        Arc::default(),
    )
});

/// The token decoder: arbitrary bytes never verify, never panic.
pub fn token(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    assert!(TOKENS.verify(text).is_err(), "a forged token verified");
    assert!(
        TOKENS.verify_refresh(text).is_err(),
        "a forged refresh token verified"
    );
}

/// The config loader: any text loads or fails with a located error, never panics.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Config::parse(Path::new("/fuzz/regate.yml"), text).map(|c| c.warnings.len());
}

/// One fuzz target: bytes in, a panic if a property breaks.
pub type Target = fn(&[u8]);

/// The targets by name, for the corpus replay.
pub const TARGETS: &[(&str, Target)] = &[
    ("route", route),
    ("scope", scope),
    ("authorization", authorization),
    ("token", token),
    ("config", config),
];
