//! The Graph client: the one place that authenticates requests and retries them.

use crate::server_clock::ServerClock;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, ACCEPT, CONTENT_LENGTH, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use shadowsync_core::user::USER_SELECT;
use shadowsync_core::Backoff;
use shadowsync_ports::Page;
use tracing::warn;
use url::Url;

use crate::auth::{AccessToken, TokenProvider};
use crate::config::{base_str, check_endpoint, GraphConfig};
use crate::error::{from_reqwest, GraphError};

/// A Microsoft Graph client with app-only authentication. Cheap to clone (shared connection pool
/// and token cache).
#[derive(Clone)]
pub struct GraphClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    auth: TokenProvider,
    graph: Url,
    client_id: String,
    tenant: String,
    retry_budget: Duration,
    backoff: Backoff,
    server_clock: Arc<ServerClock>,
    /// Throttling answers (429, 503) since the last [`GraphClient::take_throttled`].
    throttled: std::sync::atomic::AtomicU64,
}

impl fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GraphClient")
            .field("graph_endpoint", &self.inner.graph.as_str())
            .field("client_id", &self.inner.client_id)
            .finish_non_exhaustive()
    }
}

/// Why one attempt failed.
enum Failure {
    /// `401`: the token was refused; worth one retry with a fresh token.
    Unauthorized {
        token: AccessToken,
        error: GraphError,
    },
    Other {
        error: GraphError,
        /// `Retry-After` of a 429 or 503.
        retry_after: Option<Duration>,
    },
}

impl From<GraphError> for Failure {
    fn from(error: GraphError) -> Self {
        Failure::Other {
            error,
            retry_after: None,
        }
    }
}

impl GraphClient {
    /// How many times Graph answered 429 or 503 since the last call (for metrics).
    pub fn take_throttled(&self) -> u64 {
        self.inner
            .throttled
            .swap(0, std::sync::atomic::Ordering::Relaxed)
    }

    /// Graph's clock as seen in its responses (see [`ServerClock`]).
    pub fn server_clock(&self) -> Arc<dyn shadowsync_core::Clock> {
        self.inner.server_clock.clone()
    }

    pub fn new(config: GraphConfig) -> Result<Self, GraphError> {
        check_endpoint(&config.login_endpoint, "login endpoint")?;
        check_endpoint(&config.graph_endpoint, "Graph endpoint")?;
        if config.request_timeout.is_zero() {
            return Err(GraphError::Config(
                "request timeout must not be zero".into(),
            ));
        }
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("shadowsync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| GraphError::Config(format!("cannot build the HTTP client: {e}")))?;
        let auth = TokenProvider::new(&config, http.clone())?;
        Ok(GraphClient {
            inner: Arc::new(Inner {
                http,
                auth,
                graph: config.graph_endpoint,
                client_id: config.client_id,
                tenant: config.tenant_id,
                retry_budget: config.retry_budget,
                backoff: Backoff::new(config.base_backoff, config.max_backoff),
                server_clock: Arc::default(),
                throttled: Default::default(),
            }),
        })
    }

    /// The tenant and application this client is configured for.
    pub fn identity(&self) -> shadowsync_ports::GraphIdentity {
        shadowsync_ports::GraphIdentity {
            tenant: self.inner.tenant.trim().to_lowercase(),
            client_id: self.inner.client_id.trim().to_lowercase(),
        }
    }

    pub fn graph_endpoint(&self) -> &Url {
        &self.inner.graph
    }

    /// `GET` a Graph path (`/v1.0/users/delta?$select=…`) or a full URL on the Graph endpoint (an
    /// `@odata.nextLink` or `@odata.deltaLink`, followed exactly as given), decoded as `T`
    /// (`serde_json::Value` for anything).
    pub async fn get_json<T: DeserializeOwned>(&self, url_or_path: &str) -> Result<T, GraphError> {
        let url = self.resolve(url_or_path)?;
        self.execute_json(Method::GET, &url, None).await
    }

    /// Any request with an optional JSON body (subscriptions: `POST`/`PATCH`/`DELETE`
    /// `/v1.0/subscriptions…`). Returns the response JSON, or `Value::Null` for an empty body
    /// (`204 No Content`).
    pub async fn send(
        &self,
        method: Method,
        url_or_path: &str,
        body: Option<&Value>,
    ) -> Result<Value, GraphError> {
        let url = self.resolve(url_or_path)?;
        let bytes = self.execute(method, &url, body).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        decode(&bytes)
    }

    /// A Graph path (`/v1.0/...`) appended to the Graph endpoint, or an absolute URL, which must
    /// point at the Graph endpoint: the bearer token is never sent anywhere else.
    pub fn resolve(&self, url_or_path: &str) -> Result<Url, GraphError> {
        let graph = &self.inner.graph;
        if url_or_path.starts_with("https://") || url_or_path.starts_with("http://") {
            let url = Url::parse(url_or_path)
                .map_err(|e| GraphError::Config(format!("invalid URL {url_or_path:?}: {e}")))?;
            if url.origin() != graph.origin() || !url.path().starts_with(graph.path()) {
                return Err(GraphError::ForeignLink {
                    origin: url.origin().ascii_serialization(),
                    endpoint: graph.to_string(),
                });
            }
            return Ok(url);
        }
        let path = url_or_path.trim_start_matches('/');
        Url::parse(&format!("{}/{path}", base_str(graph)))
            .map_err(|e| GraphError::Config(format!("invalid Graph path {url_or_path:?}: {e}")))
    }

    /// One page of a Graph collection (`{"value": [...], "@odata.nextLink", "@odata.deltaLink"}`)
    /// at `url_or_path`: the one pager every collection goes through. Items are read one by one,
    /// so an item that is not a `T` (say, one without a usable id) is counted in
    /// [`Page::skipped`] and logged instead of failing the whole page.
    pub async fn page<T: DeserializeOwned>(
        &self,
        url_or_path: &str,
    ) -> Result<Page<T>, GraphError> {
        #[derive(Deserialize)]
        struct RawPage {
            value: Vec<Value>,
            #[serde(rename = "@odata.nextLink")]
            next_link: Option<String>,
            #[serde(rename = "@odata.deltaLink")]
            delta_link: Option<String>,
        }
        let raw: RawPage = self.get_json(url_or_path).await?;
        let mut page = Page {
            items: Vec::with_capacity(raw.value.len()),
            next_link: raw.next_link,
            delta_link: raw.delta_link,
            skipped: 0,
        };
        for item in raw.value {
            match serde_json::from_value::<T>(item) {
                Ok(item) => page.items.push(item),
                Err(e) => {
                    page.skipped += 1;
                    // serde names the field and what was wrong, not the value.
                    warn!(error = %e, "an item of a Graph page could not be read; skipped");
                }
            }
        }
        Ok(page)
    }

    /// The Graph endpoint plus `segments`, each percent-encoded as one path segment.
    pub(crate) fn segments_url(&self, segments: &[&str]) -> Url {
        let mut url = self.inner.graph.clone();
        url.path_segments_mut()
            .expect("checked: the Graph endpoint is an http(s) base URL")
            .pop_if_empty()
            .extend(segments);
        url
    }

    pub(crate) fn select_user(&self, mut url: Url) -> Url {
        url.set_query(Some(&format!("$select={USER_SELECT}")));
        url
    }

    pub(crate) async fn execute_json<T: DeserializeOwned>(
        &self,
        method: Method,
        url: &Url,
        body: Option<&Value>,
    ) -> Result<T, GraphError> {
        let bytes = self.execute(method, url, body).await?;
        decode(&bytes)
    }

    /// Sends the request with a bearer token and retries: with a fresh token after a 401 (once
    /// in a row: a token can also expire while a retry waits out a throttle);
    /// after throttling, 5xx, timeouts and network errors as long as the retry budget lasts,
    /// sleeping `Retry-After` (429/503, to the millisecond) or the core's backoff. A wait that
    /// would end past the budget is not slept: the error goes to the caller (for a 429,
    /// [`GraphError::Throttled`] with Graph's `Retry-After`). Returns the body of a 2xx response.
    async fn execute(
        &self,
        method: Method,
        url: &Url,
        body: Option<&Value>,
    ) -> Result<Vec<u8>, GraphError> {
        self.execute_with(method, url, body, &[]).await
    }

    /// [`Self::execute`] with extra request headers (`ConsistencyLevel: eventual` for Graph's
    /// advanced queries).
    pub(crate) async fn execute_with(
        &self,
        method: Method,
        url: &Url,
        body: Option<&Value>,
        headers: &[(&'static str, &'static str)],
    ) -> Result<Vec<u8>, GraphError> {
        let inner = &*self.inner;
        let started = tokio::time::Instant::now();
        let mut retries = 0u32;
        // A fresh token refused at once means the credential is refused: no second one.
        let mut reauthenticated = false;
        loop {
            let (error, retry_after) = match self.attempt(&method, url, body, headers).await {
                Ok(bytes) => return Ok(bytes),
                Err(Failure::Unauthorized { token, error }) => {
                    if reauthenticated {
                        return Err(error);
                    }
                    reauthenticated = true;
                    warn!(%method, path = url.path(), "Graph answered 401; retrying with a new token");
                    inner.auth.invalidate(&token).await;
                    continue;
                }
                Err(Failure::Other { error, retry_after }) => {
                    // Graph took the token this time.
                    reauthenticated = false;
                    (error, retry_after)
                }
            };
            if !error.is_retryable() {
                return Err(error);
            }
            let delay = retry_after.unwrap_or_else(|| inner.backoff.delay(retries + 1));
            let spent = started.elapsed();
            if spent + delay > inner.retry_budget {
                warn!(%method, path = url.path(), retries, spent_ms = spent.as_millis() as u64,
                    delay_ms = delay.as_millis() as u64, %error,
                    "the next try would end past the retry budget; leaving the retry to the caller");
                return Err(error);
            }
            retries += 1;
            warn!(%method, path = url.path(), retry = retries, delay_ms = delay.as_millis() as u64,
                %error, "retrying Graph request");
            tokio::time::sleep(delay).await;
        }
    }

    async fn attempt(
        &self,
        method: &Method,
        url: &Url,
        body: Option<&Value>,
        headers: &[(&'static str, &'static str)],
    ) -> Result<Vec<u8>, Failure> {
        let inner = &*self.inner;
        let token = inner.auth.token().await?;
        let mut request = inner
            .http
            .request(method.clone(), url.clone())
            .bearer_auth(token.as_str())
            .header(ACCEPT, "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        match body {
            Some(body) => request = request.json(body),
            // A bodiless POST or PATCH must still say it has no body: over HTTP/1.1 reqwest
            // sends neither Content-Length nor chunked encoding, and Graph's front ends answer
            // 411 Length Required (every reauthorization would fail).
            None if *method != Method::GET && *method != Method::DELETE => {
                request = request.header(CONTENT_LENGTH, 0);
            }
            None => {}
        }
        let response = request.send().await.map_err(from_reqwest)?;
        inner.server_clock.observe(response.headers());
        let status = response.status();
        let retry_after = match status {
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                inner
                    .throttled
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                parse_retry_after(response.headers())
            }
            _ => None,
        };
        let bytes = response.bytes().await.map_err(from_reqwest)?;
        if status.is_success() {
            return Ok(Vec::from(bytes));
        }
        let error = GraphError::from_response(status.as_u16(), &bytes, retry_after);
        if status == StatusCode::UNAUTHORIZED {
            return Err(Failure::Unauthorized { token, error });
        }
        Err(Failure::Other { error, retry_after })
    }
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, GraphError> {
    serde_json::from_slice(bytes).map_err(|e| GraphError::Decode(Box::new(e)))
}

/// `Retry-After` as delay-seconds (Graph sends fractions too: `2.128`) or an HTTP date; `None`
/// when absent or unreadable (the backoff decides then).
fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<f64>() {
        // Negative, NaN or absurd values are not a wait anyone meant.
        return Duration::try_from_secs_f64(secs).ok();
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.signed_duration_since(chrono::Utc::now());
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Credential;
    use reqwest::header::HeaderValue;

    fn client(graph: &str) -> GraphClient {
        let mut c = GraphConfig::new("tenant", "app", Credential::secret("hunter2-secret"));
        c.graph_endpoint = Url::parse(graph).unwrap();
        GraphClient::new(c).unwrap()
    }

    #[test]
    fn retry_after_seconds_and_date() {
        let mut h = HeaderMap::new();
        assert_eq!(parse_retry_after(&h), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(parse_retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(parse_retry_after(&h), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(parse_retry_after(&h), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("2.128"));
        assert_eq!(parse_retry_after(&h), Some(Duration::from_millis(2128)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("-1"));
        assert_eq!(parse_retry_after(&h), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("1e30"));
        assert_eq!(parse_retry_after(&h), None);
    }

    #[test]
    fn resolves_paths_and_next_links() {
        let c = client("https://graph.microsoft.com");
        assert_eq!(
            c.resolve("/v1.0/users/delta?$select=id").unwrap().as_str(),
            "https://graph.microsoft.com/v1.0/users/delta?$select=id"
        );
        let next = "https://graph.microsoft.com/v1.0/users/delta?$skiptoken=pqr%2Fx";
        assert_eq!(c.resolve(next).unwrap().as_str(), next);
        assert!(matches!(
            c.resolve("https://evil.example/v1.0/users"),
            Err(GraphError::ForeignLink { .. })
        ));
        let sub = client("http://127.0.0.1:9/sim/");
        assert_eq!(
            sub.resolve("v1.0/subscriptions").unwrap().as_str(),
            "http://127.0.0.1:9/sim/v1.0/subscriptions"
        );
        assert!(sub.resolve("http://127.0.0.1:9/other").is_err());
    }

    #[test]
    fn user_ids_are_one_encoded_path_segment() {
        let c = client("https://graph.microsoft.com");
        let url = c.select_user(c.segments_url(&["v1.0", "users", "al_x.com#EXT#@t.com/../x?y"]));
        assert_eq!(
            url.as_str(),
            format!(
                "https://graph.microsoft.com/v1.0/users/al_x.com%23EXT%23@t.com%2F..%2Fx%3Fy?$select={USER_SELECT}"
            )
        );
    }

    #[test]
    fn debug_shows_no_secret() {
        let c = client("https://graph.microsoft.com");
        let s = format!("{c:?}");
        assert!(s.contains("graph.microsoft.com") && !s.contains("hunter2"));
    }
}
