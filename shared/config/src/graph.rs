//! `[graph]`: the tenant, the app registration and its credential.

use crate::values::{self, error};
use crate::{env_name, ConfigError};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::path::PathBuf;
use url::Url;
use uuid::Uuid;

/// The public-cloud identity platform and Microsoft Graph: the client's defaults.
pub use shadowsync_graph::{DEFAULT_GRAPH_ENDPOINT, DEFAULT_LOGIN_ENDPOINT};

/// The validated `[graph]` section. `Debug` never shows the secret or the private key.
#[derive(Debug, Clone)]
pub struct GraphSection {
    /// `tenant_id`, required: the directory (tenant) ID, a GUID. The webhook checks every
    /// notification's `tenantId` against it.
    pub tenant_id: Uuid,
    /// `client_id`, required: the app registration's application (client) ID.
    pub client_id: String,
    /// Exactly one of: `client_secret` (environment only, `SHADOWSYNC_GRAPH_CLIENT_SECRET`);
    /// `certificate_file` + `private_key_file` (PEM files, readable at start); or a certificate
    /// the host gives in memory (the AWS functions read it from Secrets Manager).
    pub credential: GraphCredential,
    /// `login_endpoint`, default `https://login.microsoftonline.com`: an https URL with a host
    /// and no query or fragment (national clouds use another); `http://` only on loopback
    /// (127.0.0.0/8, ::1, `localhost`), for the test simulator.
    pub login_endpoint: Url,
    /// `graph_endpoint`, default `https://graph.microsoft.com`, same rules. It also decides the
    /// token's scope.
    pub graph_endpoint: Url,
}

/// How the app proves its identity to Entra ID.
#[derive(Debug, Clone)]
pub enum GraphCredential {
    /// A client secret (`SHADOWSYNC_GRAPH_CLIENT_SECRET`).
    Secret(SecretString),
    /// A certificate and its private key as PEM files (`certificate_file`, `private_key_file`;
    /// they may be the same file). Read by whoever builds the Graph client.
    CertificateFiles {
        certificate_file: PathBuf,
        private_key_file: PathBuf,
    },
    /// A certificate and its private key given in memory by the host (read from Secrets
    /// Manager); never read from the file or the environment.
    Certificate {
        certificate_pem: String,
        private_key_pem: SecretString,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    tenant_id: Option<String>,
    client_id: Option<String>,
    #[serde(default, deserialize_with = "values::secret")]
    client_secret: Option<SecretString>,
    certificate_file: Option<PathBuf>,
    private_key_file: Option<PathBuf>,
    login_endpoint: Option<String>,
    graph_endpoint: Option<String>,
}

impl GraphSection {
    /// The one conversion, for the file and the environment alike. `given` is a credential the
    /// host holds (a certificate from Secrets Manager); it is then the only one allowed.
    pub(crate) fn from_table(
        table: toml::Table,
        given: Option<GraphCredential>,
    ) -> Result<Self, ConfigError> {
        let raw: Raw = values::raw("graph", table)?;
        Ok(Self {
            tenant_id: tenant_id(raw.tenant_id)?,
            client_id: values::text(
                "graph.client_id",
                values::required("graph.client_id", raw.client_id)?,
            )?,
            credential: credential(
                given,
                raw.client_secret,
                raw.certificate_file,
                raw.private_key_file,
            )?,
            login_endpoint: endpoint(
                "graph.login_endpoint",
                raw.login_endpoint.as_deref(),
                DEFAULT_LOGIN_ENDPOINT,
            )?,
            graph_endpoint: endpoint(
                "graph.graph_endpoint",
                raw.graph_endpoint.as_deref(),
                DEFAULT_GRAPH_ENDPOINT,
            )?,
        })
    }

    /// `tenant_id` alone (the webhook function needs nothing else of `[graph]`).
    pub(crate) fn tenant_id_from_table(table: toml::Table) -> Result<Uuid, ConfigError> {
        let raw: Raw = values::raw("graph", table)?;
        tenant_id(raw.tenant_id)
    }
}

/// The Graph client's rule (https; plain http only on loopback, for a simulator), checked here
/// so that a bad value is reported with its key before anything starts.
fn endpoint(key: &str, value: Option<&str>, default: &str) -> Result<Url, ConfigError> {
    let url = values::http_url(key, value.unwrap_or(default))?;
    match shadowsync_graph::endpoint_problem(&url) {
        Some(problem) => Err(error(key, problem)),
        None => Ok(url),
    }
}

fn tenant_id(value: Option<String>) -> Result<Uuid, ConfigError> {
    let value = values::required("graph.tenant_id", value)?;
    Uuid::parse_str(value.trim()).map_err(|_| {
        error(
            "graph.tenant_id",
            format!(
                "{value:?} must be the directory (tenant) ID, a GUID: notifications are checked against it"
            ),
        )
    })
}

fn credential(
    given: Option<GraphCredential>,
    secret: Option<SecretString>,
    certificate_file: Option<PathBuf>,
    private_key_file: Option<PathBuf>,
) -> Result<GraphCredential, ConfigError> {
    if let Some(given) = given {
        // Two credentials would leave which one is used to chance.
        let also = [
            ("graph.client_secret", secret.is_some()),
            ("graph.certificate_file", certificate_file.is_some()),
            ("graph.private_key_file", private_key_file.is_some()),
        ];
        if let Some((key, _)) = also.iter().find(|(_, set)| *set) {
            return Err(error(
                *key,
                "the host already gives the Graph credential (a certificate from Secrets Manager): remove this one",
            ));
        }
        return checked(given);
    }
    let credential = match (secret, certificate_file, private_key_file) {
        (Some(secret), None, None) => GraphCredential::Secret(secret),
        (Some(_), _, _) => {
            return Err(error(
                "graph.client_secret",
                "give either a client secret or certificate_file + private_key_file, not both",
            ))
        }
        (None, Some(certificate_file), Some(private_key_file)) => {
            GraphCredential::CertificateFiles {
                certificate_file,
                private_key_file,
            }
        }
        (None, Some(_), None) => {
            return Err(error(
                "graph.private_key_file",
                "required with certificate_file",
            ))
        }
        (None, None, Some(_)) => {
            return Err(error(
                "graph.certificate_file",
                "required with private_key_file",
            ))
        }
        (None, None, None) => {
            return Err(error(
                "graph.client_secret",
                format!(
                    "no credential: set {} or certificate_file + private_key_file",
                    env_name("graph", "client_secret")
                ),
            ))
        }
    };
    checked(credential)
}

fn checked(credential: GraphCredential) -> Result<GraphCredential, ConfigError> {
    match credential {
        GraphCredential::Secret(secret) if secret.expose_secret().trim().is_empty() => {
            Err(error("graph.client_secret", "must not be empty"))
        }
        GraphCredential::CertificateFiles {
            certificate_file,
            private_key_file,
        } => Ok(GraphCredential::CertificateFiles {
            certificate_file: values::readable_file("graph.certificate_file", &certificate_file)?,
            private_key_file: values::readable_file("graph.private_key_file", &private_key_file)?,
        }),
        other => Ok(other),
    }
}
