//! The `[health.<service>]` probes: HTTP (2xx), TCP connect, and a command run inside
//! the container (exit 0). HTTP and TCP probes run from the agent's host, so they reach
//! published ports; `https` is not supported (use a `command` probe).

use std::time::Duration;

use bollard::exec::{CreateExecOptions, StartExecResults};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::docker::DockerEngine;
use crate::config::fleet::Probe;

/// How long one probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Runs one probe against the service's container `id`.
pub async fn run(engine: &DockerEngine, id: &str, probe: &Probe) -> Result<(), String> {
    match timeout(PROBE_TIMEOUT, run_inner(engine, id, probe)).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "{} timed out after {}s",
            describe(probe),
            PROBE_TIMEOUT.as_secs()
        )),
    }
}

fn describe(probe: &Probe) -> String {
    match probe {
        Probe::Http(url) => format!("GET {url}"),
        Probe::Tcp(addr) => format!("TCP connect to {addr}"),
        Probe::Command(cmd) => format!("`{}`", cmd.join(" ")),
    }
}

async fn run_inner(engine: &DockerEngine, id: &str, probe: &Probe) -> Result<(), String> {
    match probe {
        Probe::Http(url) => http_get(url).await,
        Probe::Tcp(addr) => TcpStream::connect(addr)
            .await
            .map(drop)
            .map_err(|e| format!("TCP connect to {addr}: {e}")),
        Probe::Command(cmd) => exec(engine, id, cmd).await,
    }
}

/// A plain HTTP/1.0 GET: enough for a health endpoint, and no HTTP client dependency.
async fn http_get(url: &str) -> Result<(), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        format!("{url}: only http:// probes are supported; use a command probe for https")
    })?;
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
    let address = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let mut stream = TcpStream::connect(&address)
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: gitfleet\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let mut head = [0u8; 64];
    let n = stream
        .read(&mut head)
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status_line = String::from_utf8_lossy(&head[..n]);
    let code: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("GET {url}: not an HTTP answer"))?;
    if (200..300).contains(&code) {
        Ok(())
    } else {
        Err(format!("GET {url}: HTTP {code}"))
    }
}

async fn exec(engine: &DockerEngine, id: &str, cmd: &[String]) -> Result<(), String> {
    let client = engine.client();
    let created = client
        .create_exec(
            id,
            CreateExecOptions {
                cmd: Some(cmd.to_vec()),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| format!("`{}`: {e}", cmd.join(" ")))?;
    let mut last_line = String::new();
    if let Ok(StartExecResults::Attached { mut output, .. }) =
        client.start_exec(&created.id, None).await
    {
        while let Some(Ok(chunk)) = output.next().await {
            if let Some(line) = chunk
                .to_string()
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
            {
                last_line = line.trim().to_string();
            }
        }
    }
    let inspect = client
        .inspect_exec(&created.id)
        .await
        .map_err(|e| e.to_string())?;
    match inspect.exit_code {
        Some(0) => Ok(()),
        code => Err(format!(
            "`{}` exited {}: {last_line}",
            cmd.join(" "),
            code.unwrap_or(-1)
        )),
    }
}
