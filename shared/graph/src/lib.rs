//! shadowsync's Microsoft Graph client: the adapter of the application's [`Graph`] port.
//!
//! - [`GraphConfig`] / [`Credential`]: app-only (client credentials) tokens from the Microsoft
//!   identity platform, with a client secret or a certificate-signed JWT assertion; the client
//!   caches the token and refreshes it before expiry.
//! - [`GraphClient`]: the typed calls of the port (users, users delta, guests, group
//!   membership, subscriptions), on one transport ([`GraphClient::get_json`],
//!   [`GraphClient::send`], [`GraphClient::page`]) that adds the token and retries (401 once
//!   with a new token; 429/503 after `Retry-After`; 5xx, timeouts and network errors with the
//!   core's backoff).
//! - [`GraphError`]: the port's typed failures, with [`GraphError::is_retryable`].

mod auth;
mod client;
mod config;
mod error;
mod groups;
mod guests;
mod port;
mod server_clock;
mod subscriptions;
mod users;

pub use client::GraphClient;
pub use config::{
    endpoint_problem, Credential, GraphConfig, DEFAULT_GRAPH_ENDPOINT, DEFAULT_LOGIN_ENDPOINT,
};
pub use error::GraphError;
pub use reqwest::Method;
pub use secrecy::SecretString;
pub use server_clock::ServerClock;
pub use shadowsync_core::user::{GraphUser, UserLookup, USER_SELECT};
pub use shadowsync_ports::Graph;
pub use url::Url;
pub use users::GUESTS_QUERY;
