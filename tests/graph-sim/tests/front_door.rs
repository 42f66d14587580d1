//! What Graph's front ends do before a request reaches a service: `411 Length Required` for a
//! `POST`/`PUT`/`PATCH` without `Content-Length` or `Transfer-Encoding`, and, with the
//! `permissionRemoved` switch, `403 Authorization_RequestDenied` on every Graph call.

mod common;

use std::time::Duration;

use common::*;
use reqwest::header::CONTENT_LENGTH;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends a hand-written HTTP/1.1 request (exactly these header lines, then `body`) and returns
/// the status, the lower-cased header lines and the body.
async fn raw_request_with_body(
    base: &str,
    request_line: &str,
    headers: &[String],
    body: &str,
) -> (u16, Vec<String>, String) {
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut text = format!("{request_line}\r\nhost: {addr}\r\nconnection: close\r\n");
    for h in headers {
        text.push_str(h);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    text.push_str(body);
    stream.write_all(text.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw))
        .await
        .expect("the simulator answers and closes")
        .unwrap();
    let raw = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a complete response");
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines.map(|l| l.to_ascii_lowercase()).collect();
    (status, headers, body.to_string())
}

async fn raw_request(
    base: &str,
    request_line: &str,
    headers: &[String],
) -> (u16, Vec<String>, String) {
    raw_request_with_body(base, request_line, headers, "").await
}

fn assert_length_required(status: u16, body: &str) {
    assert_eq!(status, 411, "{body}");
    let body: Value = serde_json::from_str(body).expect("a JSON body");
    assert_eq!(graph_error_code(&body), "LengthRequired");
}

#[tokio::test]
async fn bodiless_post_without_content_length_is_411_on_the_wire() {
    let (sim, client) = start_sim(fast_config()).await;
    allow_early_retries(&client).await;
    let rx = start_receiver().await;
    let (_, sub) = subscribe(&client, &rx, 60).await;
    let id = sub["id"].as_str().unwrap().to_string();
    client
        .trigger_lifecycle(&id, "reauthorizationRequired")
        .await
        .unwrap();
    let token = client.token().await.unwrap();
    let auth = format!("authorization: Bearer {token}");
    let line = format!("POST /v1.0/subscriptions/{id}/reauthorize HTTP/1.1");

    // A throttling rule on the route shows the order: the 411 comes first and leaves it unused.
    client
        .set_fault(graph_sim::FaultRule::throttle_next(
            "/v1.0/subscriptions/*/reauthorize",
            5,
            1,
        ))
        .await
        .unwrap();
    // What reqwest sends for `client.post(url).send()`: only authorization, accept and host.
    let (status, headers, body) = raw_request(
        &sim.base_url(),
        &line,
        &[auth.clone(), "accept: */*".into()],
    )
    .await;
    assert_length_required(status, &body);
    assert!(
        headers
            .iter()
            .any(|h| h.starts_with("content-type: application/json")),
        "{headers:?}"
    );
    // Before authentication too: no token, still 411 (not 401).
    let (status, _, body) = raw_request(&sim.base_url(), &line, &[]).await;
    assert_length_required(status, &body);
    // PATCH and PUT alike.
    let (status, _, body) = raw_request(
        &sim.base_url(),
        &format!("PATCH /v1.0/subscriptions/{id} HTTP/1.1"),
        std::slice::from_ref(&auth),
    )
    .await;
    assert_length_required(status, &body);
    let (status, _, body) = raw_request(
        &sim.base_url(),
        "PUT /v1.0/users/x HTTP/1.1",
        std::slice::from_ref(&auth),
    )
    .await;
    assert_length_required(status, &body);
    // The request had no effect.
    assert_eq!(
        sim_subscription(&client, &id).await["needsReauthorization"],
        true
    );

    // With `Content-Length: 0` it goes through: first the throttling rule, then the service.
    let (status, headers, _) = raw_request(
        &sim.base_url(),
        &line,
        &[auth.clone(), "content-length: 0".into()],
    )
    .await;
    assert_eq!(status, 429);
    assert!(
        headers.contains(&"retry-after: 5".to_string()),
        "{headers:?}"
    );
    let (status, _, body) = raw_request(
        &sim.base_url(),
        &line,
        &[auth.clone(), "content-length: 0".into()],
    )
    .await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(
        sim_subscription(&client, &id).await["needsReauthorization"],
        false
    );
    // Chunked transfer encoding is as good as a length.
    client
        .trigger_lifecycle(&id, "reauthorizationRequired")
        .await
        .unwrap();
    let (status, _, body) = raw_request_with_body(
        &sim.base_url(),
        &line,
        &[auth.clone(), "transfer-encoding: chunked".into()],
        "0\r\n\r\n",
    )
    .await;
    assert_eq!(status, 204, "{body}");
    // GET and DELETE need no length.
    let (status, _, _) = raw_request(
        &sim.base_url(),
        &format!("GET /v1.0/subscriptions/{id} HTTP/1.1"),
        std::slice::from_ref(&auth),
    )
    .await;
    assert_eq!(status, 200);
    // The control API is not Graph: no length needed there.
    let (status, _, _) = raw_request(&sim.base_url(), "POST /_sim/reset HTTP/1.1", &[]).await;
    assert_eq!(status, 204);
}

/// What reqwest writes on the wire for a request: a one-shot raw listener.
async fn capture(
    build: impl FnOnce(&reqwest::Client, String) -> reqwest::RequestBuilder,
) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1.0/x", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).await.unwrap();
        s.write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase()
    });
    build(&reqwest::Client::new(), url).send().await.unwrap();
    server.await.unwrap()
}

#[tokio::test]
async fn reqwest_bodiless_post_is_411_unless_content_length_zero_is_set() {
    let (sim, client) = start_sim(fast_config()).await;
    let rx = start_receiver().await;
    let (_, sub) = subscribe(&client, &rx, 60).await;
    let id = sub["id"].as_str().unwrap().to_string();
    let token = client.token().await.unwrap();
    let url = format!("{}/v1.0/subscriptions/{id}/reauthorize", sim.base_url());
    let http = reqwest::Client::new();

    let resp = http.post(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), 411);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(graph_error_code(&body), "LengthRequired");

    // An empty Vec body is no better: reqwest 0.12 writes no Content-Length for it either
    // (hyper treats an empty body as none), so Graph answers 411 to it too.
    let wire = capture(|h, u| h.post(u).body(Vec::<u8>::new())).await;
    assert!(
        !wire.contains("content-length") && !wire.contains("transfer-encoding"),
        "reqwest now sends a length for an empty body: {wire}"
    );
    let resp = http
        .post(&url)
        .bearer_auth(&token)
        .body(Vec::<u8>::new())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 411);

    // The fix: say `Content-Length: 0`.
    let wire = capture(|h, u| h.post(u).header(CONTENT_LENGTH, 0)).await;
    assert!(wire.contains("content-length: 0"), "{wire}");
    let resp = http
        .post(&url)
        .bearer_auth(&token)
        .header(CONTENT_LENGTH, 0)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let resp = http
        .post(&url)
        .bearer_auth(&token)
        .header(CONTENT_LENGTH, 0)
        .body(Vec::<u8>::new())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    // A JSON body carries its length.
    let resp = http
        .patch(format!("{}/v1.0/subscriptions/{id}", sim.base_url()))
        .bearer_auth(&token)
        .json(&json!({ "expirationDateTime": expiry_in(&client, 120).await }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // SimClient's raw `graph` adds `Content-Length: 0` to bodiless POSTs, as a correct client.
    let resp = client
        .graph(
            Method::POST,
            &format!("/v1.0/subscriptions/{id}/reauthorize"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
}

#[tokio::test]
async fn permission_removed_answers_403_everywhere_and_stops_notifications() {
    let (_sim, client) = start_sim(fast_config()).await;
    let rx = start_receiver().await;
    let (_, sub) = subscribe(&client, &rx, 60).await;
    let sub_id = sub["id"].as_str().unwrap().to_string();
    let id = client.invite("p@fabrikam.com", "P").await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    rx.wait_items("/notify", 1, Duration::from_secs(3)).await;
    let group = client.create_group("G").await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    client.set_permission_removed(true).await.unwrap();
    // The app still gets tokens: it exists, only its consent is gone.
    client.fetch_token().await.unwrap();
    let calls: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, "/v1.0/users".into(), None),
        (Method::GET, format!("/v1.0/users/{id}"), None),
        (
            Method::PATCH,
            format!("/v1.0/users/{id}"),
            Some(json!({"surname": "S"})),
        ),
        (Method::GET, "/v1.0/users/delta".into(), None),
        (
            Method::GET,
            "/v1.0/directory/deletedItems/microsoft.graph.user".into(),
            None,
        ),
        (
            Method::GET,
            format!("/v1.0/directory/deletedItems/{id}"),
            None,
        ),
        (
            Method::POST,
            format!("/v1.0/users/{id}/checkMemberGroups"),
            Some(json!({"groupIds": [group]})),
        ),
        (Method::GET, "/v1.0/groups".into(), None),
        (Method::GET, "/v1.0/subscriptions".into(), None),
        (Method::GET, format!("/v1.0/subscriptions/{sub_id}"), None),
        (
            Method::POST,
            format!("/v1.0/subscriptions/{sub_id}/reauthorize"),
            None,
        ),
        (
            Method::POST,
            "/v1.0/invitations".into(),
            Some(
                json!({"invitedUserEmailAddress": "q@fabrikam.com", "inviteRedirectUrl": "https://myapps.microsoft.com"}),
            ),
        ),
    ];
    for (method, path, body) in &calls {
        let resp = client
            .graph(method.clone(), path, body.as_ref())
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "{method} {path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(
            graph_error_code(&body),
            "Authorization_RequestDenied",
            "{method} {path}"
        );
        assert_eq!(
            body["error"]["message"],
            "Insufficient privileges to complete the operation."
        );
    }
    // Nothing was done, and changes made meanwhile (by others) are not notified.
    assert_eq!(client.sim_user(&id).await.unwrap()["surname"], Value::Null);
    client.accept_invitation(&id).await.unwrap();
    client
        .wait_for_log(Duration::from_secs(3), |l| {
            l.iter().any(|r| r["outcome"] == "denied")
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.items("/notify").len(), 1, "no notification while denied");

    client.set_permission_removed(false).await.unwrap();
    for (method, path, body) in &calls[..4] {
        let resp = client
            .graph(method.clone(), path, body.as_ref())
            .await
            .unwrap();
        assert!(
            resp.status().is_success(),
            "{method} {path}: {}",
            resp.status()
        );
    }
    // The PATCH above is a change again notified.
    assert_eq!(
        rx.wait_items("/notify", 2, Duration::from_secs(3))
            .await
            .len(),
        2
    );
}
