//! The Graph client against a small local token endpoint + Graph imitation (tests/support).

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shadowsync_core::ObjectId;
use shadowsync_graph::{
    Credential, GraphClient, GraphError, Method, SecretString, UserLookup, USER_SELECT,
};
use support::{make_cert, other_key, Canned, Expect, Sim, CLIENT_ID, SECRET, TENANT};

fn oid(id: &str) -> ObjectId {
    ObjectId::parse(id).unwrap()
}

fn secret_client(sim: &Sim) -> GraphClient {
    GraphClient::new(sim.config(Credential::secret(SECRET))).unwrap()
}

fn guest(id: &str) -> Value {
    json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users/$entity",
        "id": id,
        "userPrincipalName": "alice_fabrikam.com#EXT#@contoso.onmicrosoft.com",
        "displayName": "Alice Example",
        "givenName": "Alice",
        "surname": "Example",
        "mail": "alice@fabrikam.com",
        "otherMails": ["alice@fabrikam.com"],
        "userType": "Guest",
        "externalUserState": "Accepted",
        "accountEnabled": true,
        "creationType": "Invitation",
        "deletedDateTime": null
    })
}

// ---------------------------------------------------------------- tokens

#[tokio::test]
async fn secret_token_flow_sends_the_expected_form() {
    let sim = Sim::with_secret().await;
    let client = secret_client(&sim);
    let v: Value = client.get_json("/v1.0/script").await.unwrap();
    assert_eq!(v, json!({"ok": true}));
    assert_eq!(sim.token_requests(), 1);
    assert!(sim.refusals().is_empty(), "{:?}", sim.refusals());
    let form = sim.state.token_forms.lock().unwrap()[0].clone();
    assert_eq!(form["grant_type"], "client_credentials");
    assert_eq!(form["client_id"], CLIENT_ID);
    assert_eq!(form["scope"], format!("{}/.default", sim.base));
    assert_eq!(form["client_secret"], SECRET);
    assert!(!form.contains_key("client_assertion"));
}

#[tokio::test]
async fn wrong_secret_is_a_token_error_without_the_secret_and_not_retried() {
    let sim = Sim::with_secret().await;
    let wrong = "wr0ng~secret-value-42";
    let client = GraphClient::new(sim.config(Credential::secret(wrong))).unwrap();
    let err = client.get_json::<Value>("/v1.0/script").await.unwrap_err();
    match &err {
        GraphError::Token {
            status,
            error,
            description,
        } => {
            assert_eq!(*status, Some(401));
            assert_eq!(error, "invalid_client");
            assert!(description.contains("AADSTS7000215"), "{description}");
        }
        other => panic!("expected Token, got {other:?}"),
    }
    assert!(!err.is_retryable());
    // The test server echoed the presented secret in its description; the client redacted it.
    assert!(sim.refusals()[0].contains(wrong));
    assert!(!err.to_string().contains(wrong), "{err}");
    assert!(!format!("{err:?}").contains(wrong), "{err:?}");
    assert_eq!(sim.token_requests(), 1);
    assert_eq!(sim.graph_requests(), 0);
}

#[tokio::test]
async fn certificate_assertion_is_verified_by_the_server() {
    let cert = make_cert();
    let sim = Sim::start(Expect::Certificate {
        public_key_pem: cert.public_key_pem.clone(),
        x5t: cert.x5t.clone(),
    })
    .await;
    let credential = Credential::certificate_from_files(&cert.cert_path, &cert.key_path).unwrap();
    let client = GraphClient::new(sim.config(credential)).unwrap();
    let v: Value = client.get_json("/v1.0/script").await.unwrap();
    assert_eq!(v, json!({"ok": true}));
    assert!(sim.refusals().is_empty(), "{:?}", sim.refusals());
    assert_eq!(sim.token_requests(), 1);
    let form = sim.state.token_forms.lock().unwrap()[0].clone();
    assert_eq!(
        form["client_assertion_type"],
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    );
    assert!(!form.contains_key("client_secret"));
    assert_eq!(form["scope"], format!("{}/.default", sim.base));

    // A fresh assertion (new jti) for every token request.
    sim.revoke_all_tokens();
    let _: Value = client.get_json("/v1.0/script").await.unwrap();
    assert_eq!(sim.token_requests(), 2);
    assert!(sim.refusals().is_empty(), "{:?}", sim.refusals());
    assert_eq!(sim.state.seen_jti.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn certificate_and_key_may_share_one_file() {
    let cert = make_cert();
    let sim = Sim::start(Expect::Certificate {
        public_key_pem: cert.public_key_pem.clone(),
        x5t: cert.x5t.clone(),
    })
    .await;
    let both = cert.dir.path().join("both.pem");
    let text = std::fs::read_to_string(&cert.key_path).unwrap()
        + &std::fs::read_to_string(&cert.cert_path).unwrap();
    std::fs::write(&both, text).unwrap();
    let credential = Credential::certificate_from_files(&both, &both).unwrap();
    let client = GraphClient::new(sim.config(credential)).unwrap();
    let _: Value = client.get_json("/v1.0/script").await.unwrap();
    assert!(sim.refusals().is_empty(), "{:?}", sim.refusals());
}

#[tokio::test]
async fn assertion_signed_with_another_key_is_refused() {
    let cert = make_cert();
    let sim = Sim::start(Expect::Certificate {
        public_key_pem: cert.public_key_pem.clone(),
        x5t: cert.x5t.clone(),
    })
    .await;
    let wrong_key = other_key(cert.dir.path());
    let credential = Credential::certificate_from_files(&cert.cert_path, &wrong_key).unwrap();
    let client = GraphClient::new(sim.config(credential)).unwrap();
    let err = client.get_json::<Value>("/v1.0/script").await.unwrap_err();
    assert!(
        matches!(&err, GraphError::Token { description, .. } if description.contains("AADSTS700027")),
        "{err:?}"
    );
    assert!(
        sim.refusals()[0].contains("InvalidSignature"),
        "{:?}",
        sim.refusals()
    );
}

#[tokio::test]
async fn bad_certificate_inputs_are_config_errors() {
    let missing = Credential::certificate_from_files("/nonexistent/c.pem", "/nonexistent/k.pem");
    assert!(matches!(missing, Err(GraphError::Config(_))));
    let sim = Sim::with_secret().await;
    let garbage = Credential::Certificate {
        certificate_pem: "not a certificate".into(),
        private_key_pem: SecretString::from("not a key".to_owned()),
    };
    assert!(matches!(
        GraphClient::new(sim.config(garbage)),
        Err(GraphError::Config(_))
    ));
}

#[tokio::test]
async fn token_is_cached_across_calls() {
    let sim = Sim::with_secret().await;
    let client = secret_client(&sim);
    for _ in 0..5 {
        let _: Value = client.get_json("/v1.0/script").await.unwrap();
    }
    assert_eq!(sim.graph_requests(), 5);
    assert_eq!(sim.token_requests(), 1);
}

#[tokio::test]
async fn concurrent_callers_share_one_token_request() {
    let sim = Sim::with_secret().await;
    *sim.state.token_delay.lock().unwrap() = Duration::from_millis(300);
    let client = secret_client(&sim);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..5 {
        let client = client.clone();
        tasks.spawn(async move { client.get_json::<Value>("/v1.0/script").await });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap().unwrap();
    }
    assert_eq!(sim.graph_requests(), 5);
    assert_eq!(sim.token_requests(), 1);
}

#[tokio::test]
async fn token_is_refreshed_before_it_expires() {
    let sim = Sim::with_secret().await;
    // A 1 s token: the client refreshes when less than 10% (100 ms) remains.
    sim.state.expires_in.store(1, Ordering::SeqCst);
    let client = secret_client(&sim);
    let _: Value = client.get_json("/v1.0/script").await.unwrap();
    let _: Value = client.get_json("/v1.0/script").await.unwrap();
    assert_eq!(sim.token_requests(), 1, "still fresh: no refresh");
    tokio::time::sleep(Duration::from_millis(920)).await;
    // The old token is still valid on the server for ~80 ms, but the client refreshes now.
    let _: Value = client.get_json("/v1.0/script").await.unwrap();
    assert_eq!(sim.token_requests(), 2);
    assert_eq!(sim.graph_requests(), 3, "no 401 round trip was needed");
}

#[tokio::test]
async fn unauthorized_drops_the_token_and_retries_once() {
    let sim = Sim::with_secret().await;
    let client = secret_client(&sim);
    let _: Value = client.get_json("/v1.0/script").await.unwrap();
    sim.revoke_all_tokens();
    let _: Value = client.get_json("/v1.0/script").await.unwrap();
    assert_eq!(sim.token_requests(), 2);
    assert_eq!(sim.graph_requests(), 3); // ok, 401, ok

    // A 401 that persists with a new token is an error after exactly one retry.
    sim.state.reject_all_tokens.store(true, Ordering::SeqCst);
    let err = client.get_json::<Value>("/v1.0/script").await.unwrap_err();
    assert!(
        matches!(&err, GraphError::Client { status: 401, code, .. } if code == "InvalidAuthenticationToken"),
        "{err:?}"
    );
    assert_eq!(sim.token_requests(), 3);
    assert_eq!(sim.graph_requests(), 5);
}

#[tokio::test]
async fn a_token_that_expires_while_a_throttle_is_waited_out_is_replaced_again() {
    let sim = Sim::with_secret().await;
    let client = secret_client(&sim);
    let _: Value = client.get_json("/v1.0/script").await.unwrap();
    // 401 (refreshed), then 429; while its Retry-After is waited out the new token expires
    // too: Graph took it in between, so another refresh is right.
    sim.revoke_all_tokens();
    sim.script([Canned::error(429, "TooManyRequests").header("Retry-After", "0.3")]);
    let revoker = {
        let state = sim.state.clone();
        tokio::spawn(async move {
            while state.graph_requests.load(Ordering::SeqCst) < 3 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            state.issued.lock().unwrap().clear();
        })
    };
    let _: Value = client.get_json("/v1.0/script").await.unwrap();
    revoker.await.unwrap();
    assert_eq!(sim.token_requests(), 3);
    assert_eq!(sim.graph_requests(), 5); // ok | 401, 429, 401, ok
}

// ---------------------------------------------------------------- users and groups

#[tokio::test]
async fn user_found_is_active_with_its_fields_and_select() {
    let sim = Sim::with_secret().await;
    let id = "9f8e7d6c-0000-4000-8000-000000000001";
    sim.add_user(guest(id));
    let client = secret_client(&sim);
    let UserLookup::Active(user) = client.user(&oid(id)).await.unwrap() else {
        panic!("expected Active");
    };
    assert_eq!(user.id, id);
    assert_eq!(
        user.user_principal_name.as_deref(),
        Some("alice_fabrikam.com#EXT#@contoso.onmicrosoft.com")
    );
    assert_eq!(user.display_name.as_deref(), Some("Alice Example"));
    assert_eq!(user.surname.as_deref(), Some("Example"));
    assert_eq!(user.other_mails, vec!["alice@fabrikam.com".to_owned()]);
    assert!(user.is_guest() && user.has_accepted_invitation() && user.is_enabled());
    assert_eq!(user.creation_type.as_deref(), Some("Invitation"));
    assert_eq!(sim.graph_requests(), 1);
    let uri = sim.state.graph_uris.lock().unwrap()[0].clone();
    assert_eq!(uri, format!("/v1.0/users/{id}?$select={USER_SELECT}"));
}

#[tokio::test]
async fn user_principal_names_are_percent_encoded() {
    // Only the administrator's lookup by name puts a UPN in a URL; an object id is a GUID.
    let sim = Sim::with_secret().await;
    let upn = "alice_fabrikam.com#EXT#@contoso.onmicrosoft.com";
    let id = "9f8e7d6c-0000-4000-8000-000000000009";
    sim.state
        .users
        .lock()
        .unwrap()
        .insert(upn.into(), guest(id));
    let client = secret_client(&sim);
    assert!(matches!(
        client.user_by_principal_name(upn).await.unwrap(),
        Some(u) if u.id == id
    ));
    let uri = sim.state.graph_uris.lock().unwrap()[0].clone();
    assert!(
        uri.starts_with("/v1.0/users/alice_fabrikam.com%23EXT%23@contoso.onmicrosoft.com?$select="),
        "{uri}"
    );
    // A '/' in a name stays inside its segment instead of changing the route.
    assert_eq!(client.user_by_principal_name("a/../b").await.unwrap(), None);
    assert!(sim.state.graph_uris.lock().unwrap()[1].starts_with("/v1.0/users/a%2F..%2Fb?"));
}

#[tokio::test]
async fn user_in_deleted_items_is_soft_deleted() {
    let sim = Sim::with_secret().await;
    let id = "9f8e7d6c-0000-4000-8000-000000000002";
    let mut user = guest(id);
    user["deletedDateTime"] = json!("2026-01-02T03:04:05Z");
    sim.add_deleted_user(user);
    let client = secret_client(&sim);
    let UserLookup::SoftDeleted(user) = client.user(&oid(id)).await.unwrap() else {
        panic!("expected SoftDeleted");
    };
    assert_eq!(user.id, id);
    assert!(user.deleted_date_time.is_some());
    let uris = sim.state.graph_uris.lock().unwrap().clone();
    assert_eq!(
        uris,
        [
            format!("/v1.0/users/{id}?$select={USER_SELECT}"),
            format!("/v1.0/directory/deletedItems/microsoft.graph.user/{id}?$select={USER_SELECT}"),
        ]
    );
}

#[tokio::test]
async fn user_in_neither_place_is_gone() {
    let sim = Sim::with_secret().await;
    let client = secret_client(&sim);
    let nobody = oid("9f8e7d6c-0000-4000-8000-00000000dead");
    assert_eq!(client.user(&nobody).await.unwrap(), UserLookup::Gone);
    assert_eq!(sim.graph_requests(), 2);
}

#[tokio::test]
async fn check_member_groups() {
    let sim = Sim::with_secret().await;
    let id = "9f8e7d6c-0000-4000-8000-000000000003";
    let (group_a, nested, group_b) = (
        "0a0a0a0a-0000-4000-8000-00000000000a",
        "0a0a0a0a-0000-4000-8000-00000000000e",
        "0a0a0a0a-0000-4000-8000-00000000000b",
    );
    sim.add_user(guest(id));
    sim.state
        .member_of
        .lock()
        .unwrap()
        .insert(id.into(), vec![group_a.into(), nested.into()]);
    let client = secret_client(&sim);
    assert!(client.is_member_of(&oid(id), &oid(nested)).await.unwrap());
    assert!(!client.is_member_of(&oid(id), &oid(group_b)).await.unwrap());
    let nobody = oid("9f8e7d6c-0000-4000-8000-00000000dead");
    assert!(client
        .is_member_of(&nobody, &oid(group_a))
        .await
        .unwrap_err()
        .is_not_found());
    assert_eq!(
        sim.state.graph_uris.lock().unwrap()[0],
        format!("/v1.0/users/{id}/checkMemberGroups")
    );
}

// ---------------------------------------------------------------- generic requests

#[tokio::test]
async fn send_posts_json_and_maps_no_content_to_null() {
    let sim = Sim::with_secret().await;
    let client = secret_client(&sim);
    sim.script([
        Canned::new(201, json!({"id": "sub-1"})),
        Canned {
            body: String::new(),
            ..Canned::new(204, Value::Null)
        },
    ]);
    let body = json!({"changeType": "updated,deleted", "resource": "/users"});
    let created = client
        .send(Method::POST, "/v1.0/script", Some(&body))
        .await
        .unwrap();
    assert_eq!(created["id"], "sub-1");
    let deleted = client
        .send(Method::DELETE, "/v1.0/script", None)
        .await
        .unwrap();
    assert_eq!(deleted, Value::Null);
    let calls = sim.state.script_calls.lock().unwrap().clone();
    assert_eq!(calls[0].1, "POST");
    assert_eq!(serde_json::from_str::<Value>(&calls[0].2).unwrap(), body);
    assert_eq!(calls[1].1, "DELETE");
}

#[tokio::test]
async fn full_urls_on_the_graph_endpoint_are_followed_as_given() {
    let sim = Sim::with_secret().await;
    let client = secret_client(&sim);
    let next = format!("{}/v1.0/script?$skiptoken=abc%2Fdef", sim.base);
    let _: Value = client.get_json(&next).await.unwrap();
    assert_eq!(
        sim.state.graph_uris.lock().unwrap()[0],
        "/v1.0/script?$skiptoken=abc%2Fdef"
    );
    let foreign = client
        .get_json::<Value>("https://attacker.example/v1.0/script")
        .await;
    assert!(matches!(foreign, Err(GraphError::ForeignLink { .. })));
    assert_eq!(sim.graph_requests(), 1);
}

// ---------------------------------------------------------------- retries

#[tokio::test]
async fn throttled_request_waits_retry_after_then_succeeds() {
    let sim = Sim::with_secret().await;
    sim.script([Canned::error(429, "TooManyRequests").header("retry-after", "1")]);
    let client = secret_client(&sim);
    let started = Instant::now();
    let v: Value = client.get_json("/v1.0/script").await.unwrap();
    assert_eq!(v, json!({"ok": true}));
    assert!(started.elapsed() >= Duration::from_millis(950));
    let calls = sim.state.script_calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2);
    let gap = calls[1].0 - calls[0].0;
    assert!(gap >= Duration::from_millis(950), "waited only {gap:?}");
}

#[tokio::test]
async fn a_fractional_retry_after_is_honoured_to_the_millisecond() {
    let sim = Sim::with_secret().await;
    sim.script([Canned::error(429, "TooManyRequests").header("retry-after", "1.5")]);
    let client = secret_client(&sim);
    let _: Value = client.get_json("/v1.0/script").await.unwrap();
    let calls = sim.state.script_calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2);
    let gap = calls[1].0 - calls[0].0;
    assert!(
        gap >= Duration::from_millis(1450) && gap < Duration::from_millis(1950),
        "waited {gap:?} for Retry-After: 1.5"
    );
}

#[tokio::test]
async fn a_429_without_retry_after_waits_the_backoff() {
    let sim = Sim::with_secret().await;
    sim.script([Canned::error(429, "TooManyRequests")]);
    let client = secret_client(&sim);
    let _: Value = client.get_json("/v1.0/script").await.unwrap();
    let calls = sim.state.script_calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2);
    // The first backoff step: between half and all of the 10 ms base.
    let gap = calls[1].0 - calls[0].0;
    assert!(gap >= Duration::from_millis(5), "{gap:?}");
}

#[tokio::test]
async fn a_bodiless_post_says_its_body_is_empty() {
    let sim = Sim::with_secret().await;
    let client = secret_client(&sim);
    client
        .send(Method::POST, "/v1.0/script", None)
        .await
        .unwrap();
    client
        .send(Method::POST, "/v1.0/script", Some(&json!({"a": 1})))
        .await
        .unwrap();
    let headers = sim.state.script_headers.lock().unwrap().clone();
    assert_eq!(
        headers[0]
            .get("content-length")
            .map(|v| v.to_str().unwrap()),
        Some("0"),
        "Graph's front ends answer 411 Length Required otherwise: {:?}",
        headers[0]
    );
    assert_eq!(
        headers[1]
            .get("content-length")
            .map(|v| v.to_str().unwrap()),
        Some("7")
    );
}

#[tokio::test]
async fn retry_after_longer_than_the_retry_budget_is_left_to_the_caller() {
    let sim = Sim::with_secret().await;
    sim.script([Canned::error(429, "TooManyRequests").header("retry-after", "120")]);
    let client = secret_client(&sim);
    let started = Instant::now();
    let err = client.get_json::<Value>("/v1.0/script").await.unwrap_err();
    assert!(
        matches!(err, GraphError::Throttled { retry_after: Some(d) } if d == Duration::from_secs(120)),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(sim.graph_requests(), 1);
}

#[tokio::test]
async fn service_unavailable_twice_then_success() {
    let sim = Sim::with_secret().await;
    sim.script([
        Canned::error(503, "serviceNotAvailable"),
        Canned::error(503, "serviceNotAvailable"),
    ]);
    let client = secret_client(&sim);
    let v: Value = client.get_json("/v1.0/script").await.unwrap();
    assert_eq!(v, json!({"ok": true}));
    assert_eq!(sim.graph_requests(), 3);
}

#[tokio::test]
async fn server_error_forever_gives_up_when_the_retry_budget_is_spent() {
    let sim = Sim::with_secret().await;
    sim.set_fallback(Canned::error(500, "generalException"));
    let mut config = sim.config(Credential::secret(SECRET));
    config.retry_budget = Duration::from_millis(300);
    let client = GraphClient::new(config).unwrap();
    let started = Instant::now();
    let err = client.get_json::<Value>("/v1.0/script").await.unwrap_err();
    let spent = started.elapsed();
    match &err {
        GraphError::Server {
            status,
            code,
            message,
        } => {
            assert_eq!(*status, 500);
            assert_eq!(code, "generalException");
            assert!(message.contains("test server"));
        }
        other => panic!("expected Server, got {other:?}"),
    }
    assert!(err.is_retryable());
    assert!(spent < Duration::from_millis(600), "spent {spent:?}");
    // 300 ms at 5 to 50 ms between tries: several tries, and not endless.
    let tries = sim.graph_requests();
    assert!((4..=70).contains(&tries), "{tries} tries");
}

#[tokio::test]
async fn bad_request_is_not_retried() {
    let sim = Sim::with_secret().await;
    sim.set_fallback(Canned::error(400, "Request_BadRequest"));
    let client = secret_client(&sim);
    let err = client.get_json::<Value>("/v1.0/script").await.unwrap_err();
    assert!(
        matches!(&err, GraphError::Client { status: 400, code, .. } if code == "Request_BadRequest"),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    assert_eq!(sim.graph_requests(), 1);
}

#[tokio::test]
async fn forbidden_is_not_retried() {
    let sim = Sim::with_secret().await;
    sim.set_fallback(Canned::error(403, "Authorization_RequestDenied"));
    let client = secret_client(&sim);
    let err = client.get_json::<Value>("/v1.0/script").await.unwrap_err();
    assert_eq!(err.status(), Some(403));
    assert!(!err.is_retryable());
    assert_eq!(sim.graph_requests(), 1);
}

#[tokio::test]
async fn timeout_is_retried() {
    let sim = Sim::with_secret().await;
    sim.script([Canned::new(200, json!({"late": true})).delayed(Duration::from_millis(1500))]);
    let mut config = sim.config(Credential::secret(SECRET));
    config.request_timeout = Duration::from_millis(500);
    let client = GraphClient::new(config).unwrap();
    let v: Value = client.get_json("/v1.0/script").await.unwrap();
    assert_eq!(v, json!({"ok": true}));
    assert_eq!(sim.graph_requests(), 2);

    sim.set_fallback(Canned::new(200, json!({})).delayed(Duration::from_millis(1500)));
    let err = client.get_json::<Value>("/v1.0/script").await.unwrap_err();
    assert!(matches!(err, GraphError::Timeout), "{err:?}");
    assert_eq!(sim.graph_requests(), 2 + 4);
}

#[tokio::test]
async fn connection_errors_are_retried_then_reported() {
    let sim = Sim::with_secret().await;
    // A port with nothing listening: bind, note the port, close.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut config = sim.config(Credential::secret(SECRET));
    config.graph_endpoint = shadowsync_graph::Url::parse(&dead).unwrap();
    *sim.state.scope.lock().unwrap() = format!("{dead}/.default");
    let client = GraphClient::new(config).unwrap();
    let err = client.get_json::<Value>("/v1.0/users").await.unwrap_err();
    assert!(matches!(err, GraphError::Network(_)), "{err:?}");
    assert!(err.is_retryable());
    // The token was fetched once and reused across the 4 attempts.
    assert_eq!(sim.token_requests(), 1);
}

// ---------------------------------------------------------------- secrets

#[tokio::test]
async fn debug_output_never_shows_secrets() {
    let sim = Sim::with_secret().await;
    let config = sim.config(Credential::secret(SECRET));
    let shown = format!("{config:?} {:?}", GraphClient::new(config.clone()).unwrap());
    assert!(!shown.contains(SECRET), "{shown}");
    assert!(shown.contains(TENANT));

    let cert = make_cert();
    let credential = Credential::certificate_from_files(&cert.cert_path, &cert.key_path).unwrap();
    let key = std::fs::read_to_string(&cert.key_path).unwrap();
    let key_line = key.lines().nth(1).unwrap();
    let config = sim.config(credential);
    let shown = format!("{config:?} {config:#?}");
    assert!(!shown.contains(key_line), "{shown}");
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");
}
