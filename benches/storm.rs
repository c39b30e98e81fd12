//! Load for the edge-cache rows of `benches/run.sh` (issue #19), where hey and wrk fall
//! short: wrk 4.1 cannot read HEAD answers, hey fetches one URL, and both cost more CPU per
//! request than the fronts they measure on a 2-core machine. One binary, three commands:
//!
//! ```text
//! storm pull  --base URL --repo NAME --tag TAG [--header H]... [--clients 64] [--seconds 10] [--watch PID]...
//! storm url   --url URL [--method HEAD] [--header H]... [--clients 32] [--seconds 10] [--watch PID]...
//! storm delay --listen ADDR --upstream ADDR [--delay-ms 5]
//! storm idle  --addr ADDR [--path /v2/] [--header H]... [--connections 4000] [--tls]
//! ```
//!
//! `pull` is a pull storm: each client, on a keep-alive connection of its own, fetches the
//! tag's manifest (HEAD, then GET), its platform manifest, its config and its layers, and
//! again, until the time is up; `url` fetches one URL the same way. Both print one JSON
//! line: objects (answers, HEADs included) per second, p50 and p99 latency, errors, the
//! CPU the load generator itself used, and for each `--watch`ed process (a front, the
//! registry) its CPU time per answer in µs. `delay` is a TCP relay that holds every chunk
//! a client sends for `--delay-ms` before passing it on (answers pass at once): a
//! registry whose storage takes that long per request, as S3 does. `idle` holds idle
//! keep-alive connections for the rows of issue #20 (storm/idle.rs).
//!
//! Built by `benches/run.sh` (`cargo build --release --bench storm`); not run by
//! `cargo bench` on its own.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[path = "storm/idle.rs"]
mod idle;

/// What manifest GETs accept: what docker and containerd send.
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A pull storm on one image.
    Pull {
        #[arg(long)]
        base: String,
        #[arg(long)]
        repo: String,
        #[arg(long)]
        tag: String,
        #[arg(long = "header")]
        headers: Vec<String>,
        #[arg(long, default_value_t = 64)]
        clients: usize,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        #[arg(long = "watch")]
        watch: Vec<u32>,
    },
    /// One URL, over and over.
    Url {
        #[arg(long)]
        url: String,
        #[arg(long, default_value = "GET")]
        method: String,
        #[arg(long = "header")]
        headers: Vec<String>,
        #[arg(long, default_value_t = 32)]
        clients: usize,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        #[arg(long = "watch")]
        watch: Vec<u32>,
    },
    /// A relay that delays what clients send.
    Delay {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        upstream: SocketAddr,
        #[arg(long, default_value_t = 5)]
        delay_ms: u64,
    },
    /// Idle keep-alive connections, one request each, held until stdin closes.
    Idle {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value = "/v2/")]
        path: String,
        #[arg(long = "header")]
        headers: Vec<String>,
        #[arg(long, default_value_t = 4000)]
        connections: usize,
        /// Over TLS (any certificate is trusted: a loopback benchmark's own).
        #[arg(long)]
        tls: bool,
    },
}

/// One request of a plan.
#[derive(Clone)]
struct Step {
    method: Method,
    path: String,
}

struct Target {
    addr: SocketAddr,
    host: String,
    headers: Vec<(String, String)>,
}

fn main() {
    let args = Args::parse();
    // One thread: the load generator shares the machine's cores with what it measures.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match args.command {
        Command::Pull {
            base,
            repo,
            tag,
            headers,
            clients,
            seconds,
            watch,
        } => {
            let target = target(&base, &headers);
            rt.block_on(async {
                let plan = resolve(&target, &repo, &tag).await;
                run(target, plan, clients, seconds, &watch).await
            });
        }
        Command::Url {
            url,
            method,
            headers,
            clients,
            seconds,
            watch,
        } => {
            let (base, path) = split_url(&url);
            let target = target(&base, &headers);
            let method = Method::from_bytes(method.as_bytes()).expect("a method");
            let plan = vec![Step { method, path }];
            rt.block_on(run(target, plan, clients, seconds, &watch));
        }
        Command::Delay {
            listen,
            upstream,
            delay_ms,
        } => rt.block_on(delay(listen, upstream, Duration::from_millis(delay_ms))),
        Command::Idle {
            addr,
            path,
            headers,
            connections,
            tls,
        } => rt.block_on(idle::run(addr, &path, &headers, connections, tls)),
    }
}

fn split_url(url: &str) -> (String, String) {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let i = rest.find('/').unwrap_or(rest.len());
    (format!("http://{}", &rest[..i]), rest[i..].to_owned())
}

fn target(base: &str, headers: &[String]) -> Target {
    let host = base
        .strip_prefix("http://")
        .expect("an http:// base URL")
        .trim_end_matches('/')
        .to_owned();
    let addr = host.parse().expect("HOST:PORT with an IP address");
    let headers = headers
        .iter()
        .map(|h| {
            let (k, v) = h.split_once(':').expect("a header as `Name: value`");
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    Target {
        addr,
        host,
        headers,
    }
}

async fn connect(target: &Target) -> SendRequest<Empty<Bytes>> {
    let stream = TcpStream::connect(target.addr).await.expect("connect");
    stream.set_nodelay(true).expect("TCP_NODELAY");
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("an HTTP/1.1 connection");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

/// One request; the answer's status, body and length read whole.
async fn fetch(
    send: &mut SendRequest<Empty<Bytes>>,
    target: &Target,
    step: &Step,
) -> Result<(StatusCode, Bytes), hyper::Error> {
    let mut req = Request::builder()
        .method(step.method.clone())
        .uri(&step.path)
        .header("host", &target.host)
        .header("accept", ACCEPT);
    for (k, v) in &target.headers {
        req = req.header(k, v);
    }
    let req = req.body(Empty::new()).expect("a request");
    send.ready().await?;
    let resp = send.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// The image's plan: HEAD and GET of the tag, then (an index's first manifest,) the
/// manifest by digest, its config and layers.
async fn resolve(target: &Target, repo: &str, tag: &str) -> Vec<Step> {
    let mut send = connect(target).await;
    let step = |method: Method, path: String| Step { method, path };
    let by_tag = format!("/v2/{repo}/manifests/{tag}");
    let mut plan = vec![
        step(Method::HEAD, by_tag.clone()),
        step(Method::GET, by_tag.clone()),
    ];
    let (status, body) = fetch(&mut send, target, &plan[1]).await.expect("the tag");
    assert_eq!(
        status,
        200,
        "GET {by_tag}: {}",
        String::from_utf8_lossy(&body)
    );
    let mut manifest: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    if let Some(first) = manifest["manifests"].get(0) {
        let digest = first["digest"].as_str().expect("a digest").to_owned();
        let path = format!("/v2/{repo}/manifests/{digest}");
        plan.push(step(Method::GET, path));
        let (status, body) = fetch(&mut send, target, plan.last().unwrap())
            .await
            .expect("the platform manifest");
        assert_eq!(status, 200, "GET the platform manifest");
        manifest = serde_json::from_slice(&body).expect("JSON");
    }
    let blob = |d: &serde_json::Value| {
        step(
            Method::GET,
            format!(
                "/v2/{repo}/blobs/{}",
                d["digest"].as_str().expect("a digest")
            ),
        )
    };
    plan.push(blob(&manifest["config"]));
    for layer in manifest["layers"].as_array().expect("layers") {
        plan.push(blob(layer));
    }
    plan
}

/// `clients` connections walking `plan` over and over for `seconds`; prints the result.
async fn run(target: Target, plan: Vec<Step>, clients: usize, seconds: f64, watch: &[u32]) {
    let target = std::sync::Arc::new(target);
    let plan = std::sync::Arc::new(plan);
    let cpu0 = cpu_seconds("self");
    let watched0: Vec<f64> = watch.iter().map(|p| cpu_seconds(&p.to_string())).collect();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let (target, plan) = (target.clone(), plan.clone());
            tokio::spawn(async move {
                let mut send = connect(&target).await;
                let mut micros = Vec::with_capacity(1 << 16);
                let (mut errors, mut bytes) = (0u64, 0u64);
                // Clients start at different steps, as a storm's nodes do.
                let mut n = i;
                while Instant::now() < deadline {
                    let step = &plan[n % plan.len()];
                    n += 1;
                    let t0 = Instant::now();
                    match fetch(&mut send, &target, step).await {
                        Ok((status, body)) if status.is_success() => {
                            micros.push(t0.elapsed().as_micros() as u32);
                            bytes += body.len() as u64;
                        }
                        Ok(_) => errors += 1,
                        Err(_) => {
                            errors += 1;
                            send = connect(&target).await;
                        }
                    }
                }
                (micros, errors, bytes)
            })
        })
        .collect();
    let mut micros = Vec::new();
    let (mut errors, mut bytes) = (0, 0);
    for t in tasks {
        let (m, e, b) = t.await.expect("a client");
        micros.extend(m);
        errors += e;
        bytes += b;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let watched: serde_json::Map<String, serde_json::Value> = watch
        .iter()
        .zip(watched0)
        .map(|(pid, c0)| {
            let per = (cpu_seconds(&pid.to_string()) - c0) * 1e6 / micros.len().max(1) as f64;
            (pid.to_string(), serde_json::json!(per))
        })
        .collect();
    micros.sort_unstable();
    let pct = |q: f64| {
        micros
            .get(((micros.len() as f64 * q) as usize).min(micros.len().saturating_sub(1)))
            .map_or(0.0, |m| f64::from(*m) / 1000.0)
    };
    let out = serde_json::json!({
        "objects": micros.len(),
        "errors": errors,
        "seconds": elapsed,
        "rps": micros.len() as f64 / elapsed,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "bytes": bytes,
        "plan": plan.len(),
        "client_cpu_s": cpu_seconds("self") - cpu0,
        "cpu_us_per_object": watched,
    });
    println!("{out}");
}

/// A process's user and system CPU time (`/proc/PID/stat`; `self` for this one).
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime (fields 14 and 15), in clock ticks of 1/100 s on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

/// The delay relay: every chunk a client sends waits `delay` before it goes on, in
/// order; the answers come back at once.
async fn delay(listen: SocketAddr, upstream: SocketAddr, delay: Duration) {
    let listener = TcpListener::bind(listen).await.expect("listen");
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            let up = async move {
                let mut buf = vec![0u8; 64 << 10];
                loop {
                    let n = match client_read.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    tokio::time::sleep(delay).await;
                    if server_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                let _ = server_write.shutdown().await;
            };
            let down = async move {
                let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                let _ = client_write.shutdown().await;
            };
            tokio::join!(up, down);
        });
    }
}
