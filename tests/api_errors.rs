//! The API answers bad requests with a 4xx and a message: never a 500, never a hang, and
//! nothing stored.

mod common;

use std::time::Duration;

use common::berth::*;
use serde_json::Value;

async fn send(b: &Berth, method: &str, path: &str, body: Vec<u8>) -> (u16, Value) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let req = client
        .request(method.parse().unwrap(), format!("{}{path}", b.endpoint()))
        .header("content-type", "application/json")
        .bearer_auth(b.token())
        .body(body);
    let resp = req.send().await.expect("the server answers");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_4xx_with_a_message() {
    let b = tokio::task::spawn_blocking(|| Berth::up(None))
        .await
        .unwrap();
    let (_, before) = send(&b, "GET", "/v1/services", vec![]).await;

    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("POST", "/v1/apply", b"{not json".to_vec()),
        ("POST", "/v1/apply", b"".to_vec()),
        ("POST", "/v1/apply", b"[1,2,3]".to_vec()),
        ("POST", "/v1/apply", br#"{"documents": [{"kind": "Nope"}]}"#.to_vec()),
        ("POST", "/v1/apply", br#"{"documents": [], "extra": 1}"#.to_vec()),
        (
            "POST",
            "/v1/apply",
            br#"{"documents": [{"source": {"file": "x.yaml", "document": 1}, "resource": {"apiVersion": "berth.dev/v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"taskDefinition": "missing", "desiredCount": 1}}}]}"#.to_vec(),
        ),
        ("POST", "/v1/tasks", br#"{"taskDefinition": "missing"}"#.to_vec()),
        ("POST", "/v1/tasks", br#"{"taskDefinition": "x", "count": -1}"#.to_vec()),
        ("POST", "/v1/tasks", br#"{"taskDefinition": "x", "count": 100000}"#.to_vec()),
        ("POST", "/v1/tasks/nope/stop", br#"{"reason": 5}"#.to_vec()),
        ("POST", "/v1/tasks/nope/stop", vec![]),
        ("GET", "/v1/widgets", vec![]),
        ("GET", "/v1/services/none-such", vec![]),
        ("GET", "/v1/taskdefinitions/bad:ref:x", vec![]),
        ("DELETE", "/v1/services/none-such", vec![]),
        ("GET", "/v2/anything", vec![]),
        // Over the body limit.
        ("POST", "/v1/apply", vec![b' '; 17 * 1024 * 1024]),
    ];
    for (method, path, body) in cases {
        let shown = String::from_utf8_lossy(&body[..body.len().min(60)]).into_owned();
        let (status, v) = send(&b, method, path, body).await;
        assert!(
            (400..500).contains(&status),
            "{method} {path} {shown:?} → {status} {v}"
        );
        let msg = v["error"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string());
        assert!(
            !msg.trim().is_empty(),
            "{method} {path}: empty error message"
        );
    }
    let (_, after) = send(&b, "GET", "/v1/services", vec![]).await;
    assert_eq!(before, after, "nothing was stored");
    tokio::task::spawn_blocking(move || drop(b)).await.unwrap();
}
