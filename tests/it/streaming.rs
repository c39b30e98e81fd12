//! A 1 GiB blob goes up and comes back down through the `regate` binary in constant
//! memory: the gateway streams, it never buffers a body.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::common::*;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const GIB: u64 = 1 << 30;
const CHUNK: usize = 1 << 20;

/// A body of `remaining` bytes made of one repeated chunk, hashed as it is sent.
struct Generated {
    remaining: u64,
    chunk: Bytes,
    hash: Arc<Mutex<ring::digest::Context>>,
}

impl Body for Generated {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(self.chunk.len() as u64) as usize;
        let data = self.chunk.slice(..n);
        self.remaining -= n as u64;
        self.hash.lock().unwrap().update(&data);
        Poll::Ready(Some(Ok(Frame::data(data))))
    }
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gib_blob_streams_both_ways_in_constant_memory() {
    let SeedProcess {
        regate,
        registry: _registry,
        dir: _dir,
    } = SeedProcess::start();
    let base = regate.url();
    let t = admin_token(&base, "big/blob").await;
    let bearer = format!("Bearer {t}");

    let r = http(
        Method::POST,
        &format!("{base}/v2/big/blob/blobs/uploads/"),
        &[("authorization", &bearer)],
        Vec::new(),
    )
    .await;
    assert_eq!(r.status, 202);
    let location = r.header("location").unwrap().to_owned();

    // Up: one chunked PATCH of 1 GiB, as docker and containers/image stream a layer.
    let hash = Arc::new(Mutex::new(ring::digest::Context::new(
        &ring::digest::SHA256,
    )));
    let body = Generated {
        remaining: GIB,
        chunk: Bytes::from(noise(42, CHUNK)),
        hash: hash.clone(),
    };
    let client = Client::builder(TokioExecutor::new()).build_http::<Generated>();
    let req = Request::patch(&location)
        .header("authorization", &bearer)
        .header("content-type", "application/octet-stream")
        .body(body)
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(600), client.request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(resp.headers()["range"], format!("0-{}", GIB - 1).as_str());
    let next = resp.headers()["location"].to_str().unwrap().to_owned();
    let digest = {
        let ctx = hash.lock().unwrap().clone();
        let d = ctx.finish();
        format!(
            "sha256:{}",
            d.as_ref()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        )
    };
    let r = http(
        Method::PUT,
        &format!("{next}&digest={digest}"),
        &[("authorization", &bearer)],
        Vec::new(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));

    // Down: read it back frame by frame, hashing, never holding it whole.
    let client = Client::builder(TokioExecutor::new()).build_http::<http_body_util::Empty<Bytes>>();
    let req = Request::get(format!("{base}/v2/big/blob/blobs/{digest}"))
        .header("authorization", &bearer)
        .body(http_body_util::Empty::new())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = ring::digest::Context::new(&ring::digest::SHA256);
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            len += data.len() as u64;
            got.update(&data);
        }
    }
    assert_eq!(len, GIB);
    let got = format!(
        "sha256:{}",
        got.finish()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    assert_eq!(got, digest);

    // 2 GiB went through; the gateway's peak resident memory stayed a small constant.
    let peak = peak_rss_kib(regate.child.id());
    eprintln!("regate peak RSS after 2 GiB through it: {peak} KiB");
    assert!(peak < 96 * 1024, "peak RSS {peak} KiB");
}
