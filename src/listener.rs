//! The agent's HTTP listener (`--listen`, default 127.0.0.1:9469): `POST /hook` for a
//! Git host's push webhook, `GET /metrics` (Prometheus), `GET /healthz` (the process
//! answers) and `GET /readyz` (the last reconcile succeeded). Deliberately tiny:
//! HTTP/1.1 requests with a `Content-Length` body of at most 1 MiB, one per connection.
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
            if let Err(e) = handle(stream, peer, &endpoints).await {
                tracing::warn!(%peer, error = %e, "listener");
            }
        });
    }
}

const TEXT: &str = "text/plain; charset=utf-8";

async fn handle(stream: TcpStream, peer: SocketAddr, endpoints: &Endpoints) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).await?;
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut length = 0usize;
    let mut signature = None;
    for _ in 0..MAX_HEADER_LINES {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 || line.trim().is_empty() {
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
