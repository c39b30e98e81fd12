//! `storm idle`: the idle-connection rows of `benches/run.sh` (issue #20). Opens
//! `--connections` keep-alive connections (HTTP/1.1, over TLS with `--tls`), sends one
//! request on each and reads its whole answer, prints one JSON line (`opened`, `answered`,
//! `seconds`), then holds them all, idle, until its stdin closes; it then prints how many
//! the server still held open (`still_open`) and exits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The answer's status, read whole; `None` if the connection failed or closed first.
async fn ask(stream: &mut (dyn Io + '_), request: &[u8]) -> Option<u16> {
    stream.write_all(request).await.ok()?;
    let mut buf = Vec::with_capacity(1024);
    loop {
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut answer = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(head)) = answer.parse(&buf) {
            let length: usize = answer
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                .unwrap_or(0);
            if buf.len() >= head + length {
                return answer.code;
            }
        }
    }
}

/// Trusts any certificate: the benchmark's is self-signed (and a CA, which webpki refuses
/// as a server's), on loopback; the handshake's signatures are still checked.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

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
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_connector() -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    // No ALPN: HTTP/1.1, the keep-alive connection the rows are about.
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

pub async fn run(addr: SocketAddr, path: &str, headers: &[String], connections: usize, tls: bool) {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for h in headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    let request: Arc<[u8]> = request.into_bytes().into();
    // Each connection is a descriptor: as many as the hard limit allows (regate does the same).
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let _ = rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    );
    let tls = tls.then(tls_connector);
    let start = Instant::now();
    // A few hundred at a time: the listen queues are 511 (nginx) and 1,024 (regate) long.
    let gate = Arc::new(tokio::sync::Semaphore::new(128));
    let mut opening = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (gate, request, tls) = (gate.clone(), request.clone(), tls.clone());
        opening.spawn(async move {
            let _turn = gate.acquire_owned().await.expect("the gate");
            let tcp = TcpStream::connect(addr).await.ok()?;
            let _ = tcp.set_nodelay(true);
            let mut stream: Box<dyn Io> = match tls {
                None => Box::new(tcp),
                Some(tls) => {
                    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
                    Box::new(tls.connect(name, tcp).await.ok()?)
                }
            };
            let status = ask(stream.as_mut(), &request).await;
            Some((stream, status))
        });
    }
    let mut held = Vec::with_capacity(connections);
    let mut answered = 0;
    while let Some(done) = opening.join_next().await {
        if let Some((stream, status)) = done.expect("a client") {
            answered += usize::from(status.is_some_and(|s| s < 500));
            held.push(stream);
        }
    }
    let out = serde_json::json!({
        "opened": held.len(),
        "answered": answered,
        "seconds": start.elapsed().as_secs_f64(),
    });
    println!("{out}");
    let _ = tokio::task::spawn_blocking(|| {
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new())
    })
    .await;
    // A connection the server closed reads its end at once; an open one has nothing.
    let mut still_open = 0;
    for stream in &mut held {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_millis(1), stream.read(&mut byte));
        still_open += usize::from(read.await.is_err());
    }
    println!("{}", serde_json::json!({ "still_open": still_open }));
}
