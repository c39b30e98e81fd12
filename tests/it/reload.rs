//! Live reload: users, passwords and rules change under a running push, a broken file is
//! refused and the old config keeps serving, and the transfer in flight never notices.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::common::*;
use bytes::Bytes;
use hyper::body::{Body, Frame};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// A request body fed by the test, chunk by chunk, while other things happen.
struct Fed(tokio::sync::mpsc::Receiver<Bytes>);

impl Body for Fed {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b))))
    }
}

async fn status_of_token(base: &str, user: &str, pw: &str) -> u16 {
    get(
        &format!("{base}/auth?service=Docker%20registry"),
        &[("authorization", &basic(user, pw))],
    )
    .await
    .status
    .as_u16()
}

/// Waits until the watcher has picked up the file (it polls every second).
async fn eventually(mut check: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..40 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn config_changes_apply_live_under_a_running_push() {
    let seed = Seed::start().await;
    let base = seed.gateway.url();
    let path = seed.gateway.dir.path().join("regate.yml");
    let original = std::fs::read_to_string(&path).unwrap();

    // A push in flight: an upload whose body is still being sent.
    let t = admin_token(&base, "live/app").await;
    let bearer = format!("Bearer {t}");
    let r = http(
        Method::POST,
        &format!("{base}/v2/live/app/blobs/uploads/"),
        &[("authorization", &bearer)],
        Vec::new(),
    )
    .await;
    let location = r.header("location").unwrap().to_owned();
    let (feed, rx) = tokio::sync::mpsc::channel(4);
    let client = Client::builder(TokioExecutor::new()).build_http::<Fed>();
    let req = Request::patch(&location)
        .header("authorization", &bearer)
        .header("content-type", "application/octet-stream")
        .body(Fed(rx))
        .unwrap();
    let upload = tokio::spawn(async move { client.request(req).await });
    let mut sent = Vec::new();
    let mut send = async |i: u64| {
        let chunk = Bytes::from(noise(i, 256 * 1024));
        sent.extend_from_slice(&chunk);
        feed.send(chunk).await.unwrap();
    };
    send(1).await;

    // Add a user.
    let bob = format!(
        "  \"bob\":\n    password: \"{}\"\n  \"\": {{}}\n",
        bcrypt("bob-pw")
    );
    let with_bob = original.replacen("  \"\": {}\n", &bob, 1);
    assert_ne!(with_bob, original);
    assert_eq!(status_of_token(&base, "bob", "bob-pw").await, 401);
    std::fs::write(&path, &with_bob).unwrap();
    assert!(
        eventually(async || status_of_token(&base, "bob", "bob-pw").await == 200).await,
        "bob was added"
    );
    send(2).await;

    // Change a password.
    let changed = with_bob.replacen(
        &bob,
        &format!(
            "  \"bob\":\n    password: \"{}\"\n  \"\": {{}}\n",
            bcrypt("new-pw")
        ),
        1,
    );
    std::fs::write(&path, &changed).unwrap();
    assert!(eventually(async || status_of_token(&base, "bob", "new-pw").await == 200).await);
    assert_eq!(
        status_of_token(&base, "bob", "bob-pw").await,
        401,
        "the old password stops working"
    );
    send(3).await;

    // Remove a rule: anonymous loses hello-world.
    let anon = |b: String| async move {
        let t = token(&b, None, &["repository:hello-world:pull"]).await;
        let payload = t.split('.').nth(1).unwrap().to_owned();
        use base64::Engine;
        let claims: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap();
        claims["access"][0]["actions"].as_array().unwrap().len()
    };
    assert_eq!(anon(base.clone()).await, 1);
    let rule = "  - match: {account: \"\", name: \"hello-world\"}\n    actions: [\"pull\"]\n";
    assert!(changed.contains(rule));
    let without_rule = changed.replacen(rule, "", 1);
    std::fs::write(&path, &without_rule).unwrap();
    assert!(
        eventually(async || anon(base.clone()).await == 0).await,
        "the rule was removed"
    );
    send(4).await;

    // A broken file is refused: the last good config keeps serving.
    std::fs::write(
        &path,
        without_rule.replacen("users:", "users:\n  broken: [", 1),
    )
    .unwrap();
    assert!(seed.gateway.server.reload().is_err());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(status_of_token(&base, "bob", "new-pw").await, 200);
    assert_eq!(status_of_token(&base, "admin", "admin-pw").await, 200);
    send(5).await;

    // The push in flight finishes, intact.
    drop(feed);
    let resp = upload.await.unwrap().unwrap();
    assert_eq!(resp.status(), 202);
    let next = resp.headers()["location"].to_str().unwrap().to_owned();
    let digest = format!("sha256:{}", sha256_hex(&sent));
    let r = http(
        Method::PUT,
        &format!("{next}&digest={digest}"),
        &[("authorization", &bearer)],
        Vec::new(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
}

#[tokio::test(flavor = "multi_thread")]
async fn htpasswd_users_are_reloaded_too() {
    let registry = Registry::start(None);
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(&htpasswd, format!("carol:{}\n", bcrypt("carol-pw"))).unwrap();
    let config = format!(
        "server: {{addr: \"127.0.0.1:0\"}}\nupstream: {{url: \"{}\"}}\nhtpasswd: htpasswd\nacl:\n  - match: {{account: \"/.+/\"}}\n    actions: [pull]\n",
        registry.url()
    );
    let gw = Gateway::start_in(dir, &config).await;
    let base = gw.url();
    assert_eq!(status_of_token(&base, "carol", "carol-pw").await, 200);
    assert_eq!(status_of_token(&base, "dave", "dave-pw").await, 401);
    let mut text = std::fs::read_to_string(&htpasswd).unwrap();
    text.push_str(&format!("dave:{}\n", bcrypt("dave-pw")));
    std::fs::write(&htpasswd, text).unwrap();
    assert!(eventually(async || status_of_token(&base, "dave", "dave-pw").await == 200).await);
}
