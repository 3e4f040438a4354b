//! The agent's HTTP listener (`--listen`, default 127.0.0.1:9469): `POST /hook` for a
//! Git host's push webhook, `GET /metrics` (Prometheus), `GET /healthz` (the process
//! answers) and `GET /readyz` (the last reconcile succeeded). Deliberately tiny:
//! HTTP/1.1 requests with a `Content-Length` body of at most 1 MiB, one per connection;
//! a request line or header over 8 KiB, or a request not complete within 10 s, drops the
//! connection (a client cannot make the agent hold memory or a task for long).
//!
//! A hook is accepted only with a valid GitHub-style `X-Hub-Signature-256`
//! (`sha256=<hex HMAC-SHA256 of the body>`), compared in constant time; without a
//! configured secret every hook is refused.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::Sha256;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::config::fleet::hex;
use crate::hmac::hmac;
use crate::metrics::metrics;

/// Largest webhook body accepted.
pub const MAX_BODY: usize = 1024 * 1024;
const MAX_HEADER_LINES: usize = 100;
/// Longest request line or header line.
const MAX_LINE_BYTES: u64 = 8 * 1024;
/// Time a client has to send its whole request.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// One line of the request head, refused past [`MAX_LINE_BYTES`].
async fn read_head_line(reader: &mut BufReader<TcpStream>) -> std::io::Result<String> {
    let mut line = String::new();
    (&mut *reader)
        .take(MAX_LINE_BYTES)
        .read_line(&mut line)
        .await?;
    if line.len() as u64 >= MAX_LINE_BYTES && !line.ends_with('\n') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "request line or header over 8 KiB",
        ));
    }
    Ok(line)
}

/// Whether `header` (`sha256=<hex>`) is the body's signature, compared in constant time.
pub fn signature_valid(secret: &[u8], body: &[u8], header: &str) -> bool {
    let expected = format!("sha256={}", hex(&hmac::<Sha256>(secret, body)));
    let (a, b) = (expected.as_bytes(), header.trim().as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What the listener answers with: the webhook secret, what a valid hook wakes, and
/// the agent's readiness.
#[derive(Clone)]
pub struct Endpoints {
    pub secret: Option<Arc<Vec<u8>>>,
    pub trigger: Arc<Notify>,
    pub ready: Arc<AtomicBool>,
}

/// Serves until the process ends.
pub async fn serve(listener: TcpListener, endpoints: Endpoints) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let endpoints = endpoints.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(REQUEST_TIMEOUT, handle(stream, peer, &endpoints)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(%peer, error = %e, "listener"),
                Err(_) => tracing::warn!(%peer, "listener: request not complete within 10 s"),
            }
        });
    }
}

const TEXT: &str = "text/plain; charset=utf-8";

async fn handle(stream: TcpStream, peer: SocketAddr, endpoints: &Endpoints) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let request_line = read_head_line(&mut reader).await?;
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut length = 0usize;
    let mut signature = None;
    for _ in 0..MAX_HEADER_LINES {
        let line = read_head_line(&mut reader).await?;
        if line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap_or(usize::MAX),
                "x-hub-signature-256" => signature = Some(value.trim().to_string()),
                _ => {}
            }
        }
    }
    let (status, content_type, body): (&str, &str, Cow<str>) = match (method, path) {
        ("GET", "/healthz") => ("200 OK", TEXT, "ok\n".into()),
        ("GET", "/readyz") if endpoints.ready.load(Ordering::Relaxed) => {
            ("200 OK", TEXT, "ready\n".into())
        }
        ("GET", "/readyz") => (
            "503 Service Unavailable",
            TEXT,
            "not ready: no reconcile has succeeded since the last failure (see the logs)\n".into(),
        ),
        ("GET", "/metrics") => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics().encode().into(),
        ),
        ("POST", "/hook") if length > MAX_BODY => {
            ("413 Payload Too Large", TEXT, "body too large\n".into())
        }
        ("POST", "/hook") => {
            let mut payload = vec![0u8; length];
            reader.read_exact(&mut payload).await?;
            let (status, body) = match (endpoints.secret.as_deref(), signature) {
                (None, _) => (
                    "403 Forbidden",
                    "no webhook secret is configured (--webhook-secret-file)\n",
                ),
                (Some(secret), Some(sig)) if signature_valid(secret, &payload, &sig) => {
                    endpoints.trigger.notify_one();
                    ("202 Accepted", "fetching\n")
                }
                _ => {
                    tracing::warn!(
                        %peer,
                        "webhook with a missing or wrong X-Hub-Signature-256"
                    );
                    ("401 Unauthorized", "bad signature\n")
                }
            };
            (status, TEXT, body.into())
        }
        _ => ("404 Not Found", TEXT, "not found\n".into()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    reader.get_mut().write_all(response.as_bytes()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_endless_header_line_drops_the_connection_and_the_listener_goes_on() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let endpoints = Endpoints {
            secret: None,
            trigger: Arc::new(Notify::new()),
            ready: Arc::new(AtomicBool::new(true)),
        };
        tokio::spawn(serve(listener, endpoints));
        let mut hostile = TcpStream::connect(addr).await.unwrap();
        let line = format!("GET /healthz HTTP/1.1\r\nX-Long: {}", "a".repeat(64 * 1024));
        let _ = hostile.write_all(line.as_bytes()).await;
        let mut answer = Vec::new();
        let _ = hostile.read_to_end(&mut answer).await;
        assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));

        let mut client = TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    }

    #[test]
    fn signatures_are_checked_exactly() {
        let sig = format!("sha256={}", hex(&hmac::<Sha256>(b"s3cret", b"{}")));
        assert!(signature_valid(b"s3cret", b"{}", &sig));
        assert!(!signature_valid(b"s3cret", b"{ }", &sig));
        assert!(!signature_valid(b"other", b"{}", &sig));
        assert!(!signature_valid(b"s3cret", b"{}", "sha256=00"));
        assert!(!signature_valid(b"s3cret", b"{}", ""));
    }
}
