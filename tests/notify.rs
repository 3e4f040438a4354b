//! Notifications reach a real HTTP receiver on loopback, in both formats.

use gitfleet::config::fleet::{ImageSetId, NodeId, Notify, NotifyEvent, NotifyFormat};
use gitfleet::core::status::{NodeState, StatusRecord};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Accepts one request; returns its path and body.
async fn receive(listener: &tokio::net::TcpListener) -> (String, String) {
    let (stream, _) = listener.accept().await.unwrap();
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).await.unwrap();
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        if line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await.unwrap();
    reader
        .get_mut()
        .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let path = request_line.split_whitespace().nth(1).unwrap().to_string();
    (path, String::from_utf8(body).unwrap())
}

#[tokio::test]
async fn json_and_slack_messages_reach_a_loopback_receiver() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/hooks/SECRET-TOKEN",
        listener.local_addr().unwrap()
    );
    // SAFETY: this test binary has one test; nothing else reads the environment now.
    unsafe { std::env::set_var("GFT_TEST_NOTIFY_URL", &url) };
    let record = StatusRecord {
        node: NodeId::from("ap-ktm-1"),
        batch: "apac".into(),
        release: "3f2a9c1d0b7e5a6f".into(),
        images: ImageSetId("b".repeat(64)),
        state: NodeState::RolledBack,
        since: chrono::Utc::now(),
        message: "rolled back to 1a2b3c4d5e6f".into(),
        agent: "test".into(),
        updated: chrono::Utc::now(),
    };
    for (format, check) in [
        (NotifyFormat::Json, "\"state\":\"rolled-back\""),
        (
            NotifyFormat::Slack,
            "node `ap-ktm-1` is *rolled-back* at release `3f2a9c1d0b7e` (batch apac)",
        ),
    ] {
        let notify = Notify {
            url_env: "GFT_TEST_NOTIFY_URL".into(),
            format,
            events: vec![NotifyEvent::RolledBack],
        };
        let sending = gitfleet::notify::send(&notify, "shop", &record).expect("an event");
        let (path, body) = receive(&listener).await;
        sending.await.unwrap();
        assert_eq!(path, "/hooks/SECRET-TOKEN");
        let doc: serde_json::Value = serde_json::from_str(&body).expect(&body);
        assert!(body.contains(check), "{format:?}: {body}");
        if format == NotifyFormat::Slack {
            assert!(doc["text"].is_string(), "{body}");
        }
    }

    // Not one of the events: nothing is sent.
    let quiet = Notify {
        url_env: "GFT_TEST_NOTIFY_URL".into(),
        format: NotifyFormat::Json,
        events: vec![NotifyEvent::Failed],
    };
    assert!(gitfleet::notify::send(&quiet, "shop", &record).is_none());
}
