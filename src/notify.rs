//! Notifications (`[notify]` in fleet.toml): each node POSTs its own state changes to a
//! URL taken from the agent's environment (never from Git), as JSON or as a
//! Slack-compatible message. Delivery runs in the background with a timeout and a few
//! retries, so a slow or dead receiver never holds up a reconcile. The URL is a secret
//! (it usually embeds a token): logs name the variable it came from, never the URL.

use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::fleet::{Notify, NotifyEvent, NotifyFormat};
use crate::core::status::{NodeState, StatusRecord};
use crate::secret::Secret;

/// Attempts per notification, and the timeout of each.
const ATTEMPTS: u32 = 3;
const TIMEOUT: Duration = Duration::from_secs(10);

/// The event a state change is, if it is one notifications can be about.
pub fn event_of(state: NodeState) -> Option<NotifyEvent> {
    match state {
        NodeState::Healthy => Some(NotifyEvent::Healthy),
        NodeState::Failed => Some(NotifyEvent::Failed),
        NodeState::RolledBack => Some(NotifyEvent::RolledBack),
        NodeState::Halted => Some(NotifyEvent::Halted),
        NodeState::Rejected => Some(NotifyEvent::Rejected),
        _ => None,
    }
}

/// The message for `record`, in `format`.
pub fn payload(format: NotifyFormat, fleet: &str, record: &StatusRecord) -> String {
    let release = &record.release[..12.min(record.release.len())];
    match format {
        NotifyFormat::Json => serde_json::json!({
            "fleet": fleet,
            "node": record.node.as_str(),
            "batch": record.batch,
            "state": record.state.as_str(),
            "release": record.release,
            "images": record.images.0,
            "since": record.since,
            "message": record.message,
        })
        .to_string(),
        NotifyFormat::Slack => {
            let icon = match record.state {
                NodeState::Healthy => ":large_green_circle:",
                NodeState::Halted => ":octagonal_sign:",
                _ => ":red_circle:",
            };
            serde_json::json!({
                "text": format!(
                    "{icon} gitfleet *{fleet}*: node `{}` is *{}* at release `{release}` (batch {}): {}",
                    record.node, record.state, record.batch, record.message
                )
            })
            .to_string()
        }
    }
}

/// Sends `record` in the background when its state is one of `notify.events`; the
/// handle lets a one-shot run wait for delivery before it exits. A URL variable that is
/// unset or empty is logged and nothing is sent.
pub fn send(
    notify: &Notify,
    fleet: &str,
    record: &StatusRecord,
) -> Option<tokio::task::JoinHandle<()>> {
    let event = event_of(record.state)?;
    if !notify.events.contains(&event) {
        return None;
    }
    let variable = notify.url_env.clone();
    let url = match std::env::var(&variable) {
        Ok(url) if !url.is_empty() => Secret::new(url),
        _ => {
            tracing::warn!(%variable, "[notify] is set but the agent's environment has no {variable}; nothing sent");
            return None;
        }
    };
    let body = payload(notify.format, fleet, record);
    Some(tokio::spawn(async move {
        for attempt in 1..=ATTEMPTS {
            match tokio::time::timeout(TIMEOUT, post(&url, body.clone())).await {
                Ok(Ok(())) => return,
                Ok(Err(why)) => {
                    tracing::warn!(%variable, attempt, %why, "notification not delivered")
                }
                Err(_) => tracing::warn!(%variable, attempt, "notification timed out"),
            }
            tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
        }
    }))
}

/// One POST; the error never contains the URL.
async fn post(url: &Secret, body: String) -> Result<(), String> {
    let request = hyper::Request::post(url.expose())
        .header("content-type", "application/json")
        .header(
            "user-agent",
            concat!("gitfleet/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(Bytes::from(body)))
        .map_err(|_| "the URL is not a valid http(s) URL".to_string())?;
    let client = Client::builder(TokioExecutor::new()).build(hyper_tls::HttpsConnector::new());
    let response = client.request(request).await.map_err(|e| {
        // hyper's message names the failure (connect, TLS), not the URL.
        use std::error::Error as _;
        e.source().map_or(e.to_string(), |s| s.to_string())
    })?;
    match response.status() {
        s if s.is_success() => Ok(()),
        s => Err(format!("the receiver answered {s}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::fleet::{ImageSetId, NodeId};

    fn record(state: NodeState) -> StatusRecord {
        StatusRecord {
            node: NodeId::from("eu-fra-1"),
            batch: "canary".into(),
            release: "0123456789abcdef".into(),
            images: ImageSetId("a".repeat(64)),
            state,
            since: chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            message: "health gate failed: service `api`".into(),
            agent: "test".into(),
            updated: chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
        }
    }

    #[test]
    fn json_and_slack_payloads() {
        let json: serde_json::Value = serde_json::from_str(&payload(
            NotifyFormat::Json,
            "shop",
            &record(NodeState::Failed),
        ))
        .unwrap();
        assert_eq!(json["state"], "failed");
        assert_eq!(json["node"], "eu-fra-1");
        assert_eq!(json["fleet"], "shop");
        let slack: serde_json::Value = serde_json::from_str(&payload(
            NotifyFormat::Slack,
            "shop",
            &record(NodeState::Failed),
        ))
        .unwrap();
        assert_eq!(
            slack["text"],
            ":red_circle: gitfleet *shop*: node `eu-fra-1` is *failed* at release `0123456789ab` (batch canary): health gate failed: service `api`"
        );
    }

    #[test]
    fn only_final_states_are_events() {
        assert_eq!(event_of(NodeState::Converging), None);
        assert_eq!(event_of(NodeState::WaitingWindow), None);
        assert_eq!(
            event_of(NodeState::RolledBack),
            Some(NotifyEvent::RolledBack)
        );
    }
}
