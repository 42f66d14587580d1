//! The one error type of the Graph client.

use std::time::Duration;

use serde::Deserialize;

/// Everything that can go wrong talking to the identity platform or Microsoft Graph.
///
/// No variant ever carries a client secret, a private key or an access token.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// The token endpoint refused or failed. `description` is Entra's `error_description`
    /// (it starts with the `AADSTS…` code), with any echo of the client secret removed.
    #[error("token request failed (status {status:?}): {error}: {description}")]
    Token {
        /// HTTP status of the token response (`None` if there was no usable response).
        status: Option<u16>,
        /// OAuth `error` (`invalid_client`, `unauthorized_client`, …).
        error: String,
        description: String,
    },
    /// Graph answered `429 Too Many Requests` and the retries ran out, or the requested wait
    /// (`Retry-After`) was longer than the client's `max_backoff`: the caller should come back later.
    #[error("throttled by Microsoft Graph (retry after {retry_after:?})")]
    Throttled { retry_after: Option<Duration> },
    /// Graph answered 5xx (after the retries, if any, ran out).
    #[error("Microsoft Graph server error {status}: {code}: {message}")]
    Server {
        status: u16,
        code: String,
        message: String,
    },
    /// Graph answered 4xx (other than 429). `404` is `Client { status: 404, .. }`.
    #[error("Microsoft Graph rejected the request with {status}: {code}: {message}")]
    Client {
        status: u16,
        code: String,
        message: String,
    },
    /// The request (connect, send or read of the body) exceeded `request_timeout`.
    #[error("request to Microsoft Graph or the identity platform timed out")]
    Timeout,
    /// Connection-level failure (DNS, refused, reset, TLS…).
    #[error("network error talking to Microsoft Graph or the identity platform: {0}")]
    Network(#[source] reqwest::Error),
    /// A success response whose body could not be decoded.
    #[error("could not decode the response: {0}")]
    Decode(String),
    /// Bad configuration (unreadable certificate or key, invalid endpoint, foreign nextLink…).
    #[error("Graph client configuration error: {0}")]
    Config(String),
}

impl GraphError {
    /// Whether trying the same request later could succeed: throttling, 5xx, timeouts and
    /// network failures yes; 4xx (bad request, forbidden, not found…) and configuration no.
    pub fn is_retryable(&self) -> bool {
        match self {
            GraphError::Throttled { .. } | GraphError::Timeout | GraphError::Network(_) => true,
            GraphError::Server { status, .. } => is_retryable_server_status(*status),
            GraphError::Token { status, .. } => match status {
                Some(s) => *s == 429 || is_retryable_server_status(*s),
                None => false,
            },
            GraphError::Client { .. } | GraphError::Decode(_) | GraphError::Config(_) => false,
        }
    }

    /// The HTTP status Graph answered, for `Server` and `Client`.
    pub fn status(&self) -> Option<u16> {
        match self {
            GraphError::Server { status, .. } | GraphError::Client { status, .. } => Some(*status),
            GraphError::Throttled { .. } => Some(429),
            _ => None,
        }
    }

    /// Graph's `error.code` (`Request_ResourceNotFound`, `syncStateNotFound`, …), if any.
    pub fn code(&self) -> Option<&str> {
        match self {
            GraphError::Server { code, .. } | GraphError::Client { code, .. } => Some(code),
            _ => None,
        }
    }

    /// `404 Not Found`.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    pub(crate) fn from_reqwest(e: reqwest::Error) -> Self {
        if e.is_timeout() {
            GraphError::Timeout
        } else if e.is_decode() {
            GraphError::Decode(e.to_string())
        } else {
            GraphError::Network(e)
        }
    }

    /// Builds `Server` or `Client` (or `Throttled`) from a non-success Graph response.
    pub(crate) fn from_graph_response(
        status: u16,
        body: &[u8],
        retry_after: Option<Duration>,
    ) -> Self {
        if status == 429 {
            return GraphError::Throttled { retry_after };
        }
        let (code, message) = parse_graph_error(body);
        if status >= 500 {
            GraphError::Server {
                status,
                code,
                message,
            }
        } else {
            GraphError::Client {
                status,
                code,
                message,
            }
        }
    }
}

/// The 5xx statuses worth retrying.
pub(crate) fn is_retryable_server_status(status: u16) -> bool {
    matches!(status, 500 | 502 | 503 | 504)
}

/// Graph's error body: `{"error":{"code":"…","message":"…"}}`. Anything else gives an empty code
/// and a short excerpt of the body as the message.
fn parse_graph_error(body: &[u8]) -> (String, String) {
    #[derive(Deserialize)]
    struct Envelope {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_slice::<Envelope>(body) {
        Ok(Envelope { error }) => (error.code, error.message),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            (String::new(), text.chars().take(200).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_graph_error_body() {
        let e = GraphError::from_graph_response(
            404,
            br#"{"error":{"code":"Request_ResourceNotFound","message":"Resource 'x' does not exist","innerError":{}}}"#,
            None,
        );
        assert!(e.is_not_found());
        assert_eq!(e.code(), Some("Request_ResourceNotFound"));
        assert!(!e.is_retryable());
        assert!(e.to_string().contains("does not exist"));
    }

    #[test]
    fn classifies_statuses() {
        let e = GraphError::from_graph_response(503, b"<html>busy</html>", None);
        assert!(matches!(e, GraphError::Server { status: 503, .. }));
        assert!(e.is_retryable());
        assert!(!GraphError::from_graph_response(501, b"", None).is_retryable());
        assert!(!GraphError::from_graph_response(400, b"", None).is_retryable());
        assert!(!GraphError::from_graph_response(403, b"", None).is_retryable());
        let t = GraphError::from_graph_response(429, b"", Some(Duration::from_secs(3)));
        assert!(matches!(t, GraphError::Throttled { retry_after: Some(d) } if d.as_secs() == 3));
        assert!(t.is_retryable());
        assert!(GraphError::Timeout.is_retryable());
        assert!(!GraphError::Config("x".into()).is_retryable());
    }
}
