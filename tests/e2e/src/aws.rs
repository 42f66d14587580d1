//! AWS around the Lambda handlers, for tests: moto server (SQS, DynamoDB, Secrets Manager) and
//! the two pieces of Lambda's plumbing that call our handlers: API Gateway's HTTP API (payload
//! 2.0 events) and the SQS event source (batches as Lambda sends them, deletion of what
//! succeeded). Everything else — the queues, the table, the secrets — is moto's real server.

use anyhow::{Context, Result};
use aws_sdk_sqs::types::MessageSystemAttributeName;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::OnceLock;
use tower::Service;

pub const REGION: &str = "us-east-1";
/// The account moto reports in ARNs.
pub const ACCOUNT: &str = "123456789012";

/// The moto endpoint (`tests/moto/moto.sh ensure`, or SHADOWSYNC_TEST_AWS_ENDPOINT).
pub fn moto() -> &'static str {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    ENDPOINT.get_or_init(|| {
        if let Ok(url) = std::env::var("SHADOWSYNC_TEST_AWS_ENDPOINT") {
            return url;
        }
        let script = crate::repo_root().join("tests/moto/moto.sh");
        let out = Command::new("bash")
            .arg(script)
            .arg("ensure")
            .output()
            .expect("run moto.sh");
        assert!(
            out.status.success(),
            "moto.sh ensure failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("SHADOWSYNC_TEST_AWS_ENDPOINT="))
            .expect("moto.sh ensure prints the endpoint")
            .to_string()
    })
}

/// The environment that points an AWS SDK (or a process using one) at moto.
pub fn moto_env() -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", moto().to_string()),
        ("AWS_REGION", REGION.to_string()),
        ("AWS_ACCESS_KEY_ID", "test".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
    ]
}

/// Stops a function process and returns what it wrote on standard output (piped): the text,
/// and the lines that are JSON (Lambda's log lines and embedded-metric lines).
pub async fn stop_and_read_stdout(
    child: &mut tokio::process::Child,
) -> Result<(String, Vec<Value>)> {
    use tokio::io::AsyncReadExt;
    child.start_kill()?;
    let _ = child.wait().await;
    let mut out = String::new();
    child
        .stdout
        .take()
        .context("standard output is not piped")?
        .read_to_string(&mut out)
        .await?;
    let lines = out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    Ok((out, lines))
}

/// An SDK configuration for moto.
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(moto())
        .region(aws_config::Region::new(REGION))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "test", "test", None, None, "static",
        ))
        .load()
        .await
}

/// A new secret holding `value` (a unique name); returns its ARN.
pub async fn secret(value: &str) -> String {
    aws_sdk_secretsmanager::Client::new(&sdk_config().await)
        .create_secret()
        .name(format!("shadowsync-test-{}", crate::unique()))
        .secret_string(value)
        .send()
        .await
        .expect("a secret in moto")
        .arn()
        .expect("its ARN")
        .to_string()
}

/// A fresh FIFO job queue and its DLQ (unique names): (queue URL, DLQ URL).
pub async fn fifo_queues(name: &str, max_receive_count: u32) -> Result<(String, String)> {
    let client = aws_sdk_sqs::Client::new(&sdk_config().await);
    let name = format!("{name}-{}", uuid::Uuid::new_v4().simple());
    Ok(shadowsync_queue_sqs::SqsQueue::create_queues(&client, &name, max_receive_count).await?)
}

/// A fresh state table (unique name).
pub async fn state_table(name: &str) -> Result<String> {
    let client = aws_sdk_dynamodb::Client::new(&sdk_config().await);
    let name = format!("{name}-{}", uuid::Uuid::new_v4().simple());
    shadowsync_state_dynamodb::DynamoStore::create_table(&client, &name).await?;
    Ok(name)
}

/// Lambda's SQS event source: receives up to 10 messages (as its pollers do, several of one
/// message group in order) and returns the event Lambda would invoke the function with.
pub async fn receive_event(queue_url: &str, visibility_secs: i32) -> Result<Value> {
    let client = aws_sdk_sqs::Client::new(&sdk_config().await);
    let out = client
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(10)
        .visibility_timeout(visibility_secs)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .send()
        .await?;
    let queue_name = queue_url.rsplit('/').next().unwrap_or_default();
    let records: Vec<Value> = out
        .messages()
        .iter()
        .map(|m| {
            let attributes: serde_json::Map<String, Value> = m
                .attributes()
                .map(|a| {
                    a.iter()
                        .map(|(k, v)| (k.as_str().to_string(), Value::from(v.as_str())))
                        .collect()
                })
                .unwrap_or_default();
            json!({
                "messageId": m.message_id(),
                "receiptHandle": m.receipt_handle(),
                "body": m.body(),
                "attributes": attributes,
                "messageAttributes": {},
                "md5OfBody": m.md5_of_body(),
                "eventSource": "aws:sqs",
                "eventSourceARN": format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{queue_name}"),
                "awsRegion": REGION,
            })
        })
        .collect();
    Ok(json!({ "Records": records }))
}

/// What Lambda does with the function's answer: deletes every message of the batch that the
/// `batchItemFailures` do not name.
pub async fn complete_batch(queue_url: &str, event: &Value, response: &Value) -> Result<()> {
    let client = aws_sdk_sqs::Client::new(&sdk_config().await);
    let failed: Vec<&str> = response["batchItemFailures"]
        .as_array()
        .context("batchItemFailures")?
        .iter()
        .filter_map(|f| f["itemIdentifier"].as_str())
        .collect();
    for record in event["Records"].as_array().context("Records")? {
        if failed.contains(&record["messageId"].as_str().unwrap_or_default()) {
            continue;
        }
        client
            .delete_message()
            .queue_url(queue_url)
            .receipt_handle(record["receiptHandle"].as_str().unwrap_or_default())
            .send()
            .await?;
    }
    Ok(())
}

/// The event an API Gateway HTTP API (payload format 2.0) sends for a request.
pub fn http_api_event(method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Value {
    let query = uri.query().unwrap_or_default();
    let parameters: serde_json::Map<String, Value> = url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), Value::from(v.into_owned())))
        .collect();
    let headers: serde_json::Map<String, Value> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                Value::from(v.to_str().unwrap_or_default()),
            )
        })
        .collect();
    let route = format!("{method} {}", uri.path());
    let (body, base64) = match std::str::from_utf8(body) {
        Ok(text) => (text.to_string(), false),
        Err(_) => (
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, body),
            true,
        ),
    };
    let mut event = json!({
        "version": "2.0",
        "routeKey": route,
        "rawPath": uri.path(),
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": ACCOUNT,
            "apiId": "e2eapi",
            "domainName": "e2eapi.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "e2eapi",
            "http": {
                "method": method.as_str(),
                "path": uri.path(),
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "e2e"
            },
            "requestId": uuid::Uuid::new_v4().to_string(),
            "routeKey": route,
            "stage": "$default",
            "time": chrono::Utc::now().format("%d/%b/%Y:%H:%M:%S +0000").to_string(),
            "timeEpoch": chrono::Utc::now().timestamp_millis()
        },
        "isBase64Encoded": base64,
    });
    if !parameters.is_empty() {
        event["queryStringParameters"] = Value::Object(parameters);
    }
    if !body.is_empty() {
        event["body"] = Value::from(body);
    }
    event
}

/// Invokes an HTTP function the way `lambda_http::run` does, with an API Gateway event;
/// returns the response event as JSON (`statusCode`, `headers`, `body`).
pub async fn invoke_http<S, R, E>(service: S, event: Value) -> Result<Value>
where
    S: Service<lambda_http::Request, Response = R, Error = E>,
    S::Future: Send + 'static,
    R: lambda_http::IntoResponse,
    E: std::fmt::Debug + Into<lambda_runtime::Diagnostic>,
{
    let request: lambda_http::request::LambdaRequest = serde_json::from_value(event)?;
    // The adapter is not Send (it names the response type in a PhantomData); only its future
    // crosses the await.
    let invocation = {
        let mut adapter = lambda_http::Adapter::from(service);
        adapter.call(lambda_runtime::LambdaEvent::new(
            request,
            lambda_runtime::Context::default(),
        ))
    };
    let response = invocation.await.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(serde_json::to_value(response)?)
}

/// API Gateway in front of an HTTP function: a listener on 127.0.0.1 that turns each request
/// into an HTTP API event, invokes `router` like Lambda, and answers with its response.
pub async fn api_gateway(router: axum::Router) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let front = axum::Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            forward(router.clone(), method, uri, headers, body)
        },
    );
    tokio::spawn(async move { axum::serve(listener, front).await });
    Ok(addr)
}

async fn forward(
    router: axum::Router,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let event = http_api_event(&method, &uri, &headers, &body);
    match invoke_http(router, event).await {
        Ok(response) => http_response(&response),
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

fn http_response(event: &Value) -> Response {
    let status = event["statusCode"]
        .as_u64()
        .and_then(|s| StatusCode::from_u16(s as u16).ok())
        .unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = event["body"]
        .as_str()
        .unwrap_or_default()
        .to_string()
        .into_response();
    *response.status_mut() = status;
    if let Some(headers) = event["headers"].as_object() {
        for (name, value) in headers {
            if let (Ok(name), Some(Ok(value))) = (
                axum::http::HeaderName::try_from(name.as_str()),
                value.as_str().map(axum::http::HeaderValue::from_str),
            ) {
                response.headers_mut().insert(name, value);
            }
        }
    }
    response
}

/// Lambda's Runtime API, for running a real `bootstrap` binary as Lambda does: the function
/// polls `GET /2018-06-01/runtime/invocation/next`, gets events pushed here, and posts each
/// response (or error) back.
pub struct RuntimeApi {
    pub addr: SocketAddr,
    state: Arc<RuntimeState>,
}

#[derive(Default)]
struct RuntimeState {
    inner: std::sync::Mutex<RuntimeInner>,
    changed: tokio::sync::Notify,
}

#[derive(Default)]
struct RuntimeInner {
    pending: std::collections::VecDeque<(String, Value)>,
    responses: std::collections::HashMap<String, Result<Value, Value>>,
    init_error: Option<Value>,
    first_poll: Option<std::time::Instant>,
}

use std::sync::Arc;

impl RuntimeApi {
    pub async fn start() -> Result<Self> {
        use axum::extract::{Path, State};
        use axum::routing::{get, post};
        let state = Arc::new(RuntimeState::default());
        let router = axum::Router::new()
            .route(
                "/2018-06-01/runtime/invocation/next",
                get(|State(s): State<Arc<RuntimeState>>| async move {
                    loop {
                        let waiting = s.changed.notified();
                        {
                            let mut inner = s.inner.lock().unwrap();
                            inner.first_poll.get_or_insert_with(std::time::Instant::now);
                            if let Some((id, event)) = inner.pending.pop_front() {
                                let deadline = chrono::Utc::now().timestamp_millis() + 60_000;
                                return (
                                    [
                                        ("lambda-runtime-aws-request-id", id),
                                        ("lambda-runtime-deadline-ms", deadline.to_string()),
                                        (
                                            "lambda-runtime-invoked-function-arn",
                                            format!("arn:aws:lambda:{REGION}:{ACCOUNT}:function:e2e"),
                                        ),
                                        ("lambda-runtime-trace-id", "Root=1-00000000-000000000000000000000000".to_string()),
                                    ],
                                    event.to_string(),
                                )
                                    .into_response();
                            }
                        }
                        waiting.await;
                    }
                }),
            )
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(
                    |State(s): State<Arc<RuntimeState>>, Path(id): Path<String>, body: Bytes| async move {
                        let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        s.inner.lock().unwrap().responses.insert(id, Ok(value));
                        s.changed.notify_waiters();
                        StatusCode::ACCEPTED
                    },
                ),
            )
            .route(
                "/2018-06-01/runtime/invocation/{id}/error",
                post(
                    |State(s): State<Arc<RuntimeState>>, Path(id): Path<String>, body: Bytes| async move {
                        let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        s.inner.lock().unwrap().responses.insert(id, Err(value));
                        s.changed.notify_waiters();
                        StatusCode::ACCEPTED
                    },
                ),
            )
            .route(
                "/2018-06-01/runtime/init/error",
                post(|State(s): State<Arc<RuntimeState>>, body: Bytes| async move {
                    let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    s.inner.lock().unwrap().init_error = Some(value);
                    s.changed.notify_waiters();
                    StatusCode::ACCEPTED
                }),
            )
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, router).await });
        Ok(Self { addr, state })
    }

    /// The variables Lambda sets for a function (`AWS_LAMBDA_RUNTIME_API` and the function's
    /// name, memory and version).
    pub fn env(&self, function_name: &str) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_LAMBDA_RUNTIME_API", self.addr.to_string()),
            ("AWS_LAMBDA_FUNCTION_NAME", function_name.to_string()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256".to_string()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_string()),
            ("AWS_LAMBDA_LOG_FORMAT", "JSON".to_string()),
        ]
    }

    /// Queues an invocation; returns its request id.
    pub fn invoke(&self, event: Value) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        self.state
            .inner
            .lock()
            .unwrap()
            .pending
            .push_back((id.clone(), event));
        self.state.changed.notify_waiters();
        id
    }

    /// When the function first asked for work (it is ready), if it has.
    pub fn ready_at(&self) -> Option<std::time::Instant> {
        self.state.inner.lock().unwrap().first_poll
    }

    /// The function's answer to invocation `id` (`Err`: the error it reported), or an error if
    /// its initialisation failed or `timeout` passed.
    pub async fn response(
        &self,
        id: &str,
        timeout: std::time::Duration,
    ) -> Result<Result<Value, Value>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let waiting = self.state.changed.notified();
            {
                let inner = self.state.inner.lock().unwrap();
                if let Some(r) = inner.responses.get(id) {
                    return Ok(r.clone());
                }
                if let Some(e) = &inner.init_error {
                    anyhow::bail!("the function failed to initialise: {e}");
                }
            }
            if tokio::time::timeout_at(deadline, waiting).await.is_err() {
                anyhow::bail!("no response to invocation {id} within {timeout:?}");
            }
        }
    }
}
