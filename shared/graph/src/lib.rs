//! shadowsync's Microsoft Graph client.
//!
//! - [`GraphConfig`] / [`Credential`]: app-only (client credentials) tokens from the Microsoft
//!   identity platform, with a client secret or a certificate-signed JWT assertion; the client
//!   caches the token and refreshes it before expiry.
//! - [`GraphClient`]: user lookups ([`GraphClient::user`], [`GraphClient::is_member_of`]) and the
//!   generic [`GraphClient::get_json`] / [`GraphClient::send`] used for delta paging and
//!   subscriptions. Every request goes through one place that adds the token and retries
//!   (401 once with a new token; 429/503 after `Retry-After`; 5xx, timeouts and network errors
//!   with capped exponential backoff and full jitter).
//! - [`GraphError`]: typed failures, with [`GraphError::is_retryable`].

mod auth;
mod client;
mod config;
mod error;
mod server_clock;

pub use client::GraphClient;
pub use config::{Credential, GraphConfig, DEFAULT_GRAPH_ENDPOINT, DEFAULT_LOGIN_ENDPOINT};
pub use error::GraphError;
pub use reqwest::Method;
pub use secrecy::SecretString;
pub use server_clock::ServerClock;
pub use shadowsync_core::user::{GraphUser, UserLookup, USER_SELECT};
pub use url::Url;
