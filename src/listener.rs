//! The agent's HTTP listener (`--listen`, default 127.0.0.1:9469): `POST /hook` for a
//! Git host's push webhook, `GET /healthz`. Deliberately tiny: HTTP/1.1 requests with
//! a `Content-Length` body of at most 1 MiB, one per connection.
//!
//! A hook is accepted only with a valid GitHub-style `X-Hub-Signature-256`
//! (`sha256=<hex HMAC-SHA256 of the body>`), compared in constant time; without a
//! configured secret every hook is refused.

use std::net::SocketAddr;
use std::sync::Arc;

use sha2::Sha256;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::config::fleet::hex;
use crate::hmac::hmac;

/// Largest webhook body accepted.
pub const MAX_BODY: usize = 1024 * 1024;
const MAX_HEADER_LINES: usize = 100;

/// Whether `header` (`sha256=<hex>`) is the body's signature, compared in constant time.
pub fn signature_valid(secret: &[u8], body: &[u8], header: &str) -> bool {
    let expected = format!("sha256={}", hex(&hmac::<Sha256>(secret, body)));
    let (a, b) = (expected.as_bytes(), header.trim().as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Serves until the process ends; a valid hook wakes `trigger`.
pub async fn serve(listener: TcpListener, secret: Option<Arc<Vec<u8>>>, trigger: Arc<Notify>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let (secret, trigger) = (secret.clone(), trigger.clone());
        tokio::spawn(async move {
            if let Err(e) =
                handle(stream, peer, secret.as_deref().map(Vec::as_slice), &trigger).await
            {
                tracing::warn!(%peer, error = %e, "listener");
            }
        });
    }
}

async fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    secret: Option<&[u8]>,
    trigger: &Notify,
) -> std::io::Result<()> {
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
    let (status, body) = match (method, path) {
        ("GET", "/healthz") => ("200 OK", "ok\n"),
        ("POST", "/hook") if length > MAX_BODY => ("413 Payload Too Large", "body too large\n"),
        ("POST", "/hook") => {
            let mut payload = vec![0u8; length];
            reader.read_exact(&mut payload).await?;
            match (secret, signature) {
                (None, _) => (
                    "403 Forbidden",
                    "no webhook secret is configured (--webhook-secret-file)\n",
                ),
                (Some(secret), Some(sig)) if signature_valid(secret, &payload, &sig) => {
                    trigger.notify_one();
                    ("202 Accepted", "fetching\n")
                }
                _ => {
                    tracing::warn!(
                        %peer,
                        "webhook with a missing or wrong X-Hub-Signature-256"
                    );
                    ("401 Unauthorized", "bad signature\n")
                }
            }
        }
        _ => ("404 Not Found", "not found\n"),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
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
