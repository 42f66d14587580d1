//! Secrets from AWS Secrets Manager.
//!
//! The infrastructure passes a secret as `SHADOWSYNC_<SECTION>_<KEY>_SECRET_ARN`, never as a
//! value. [`resolve`] fetches each once and puts its value under `SHADOWSYNC_<SECTION>_<KEY>`,
//! which the configuration loader reads like any other key. The Graph certificate
//! (`SHADOWSYNC_GRAPH_CERTIFICATE_SECRET_ARN`) is JSON `{"certificate_pem", "private_key_pem"}`
//! and becomes a credential held in memory. Values never reach a log line or an error message.

use crate::AwsError;
use secrecy::SecretString;
use serde::Deserialize;
use shadowsync_config::GraphCredential;

const SUFFIX: &str = "_SECRET_ARN";
const GRAPH_CERTIFICATE: &str = "SHADOWSYNC_GRAPH_CERTIFICATE_SECRET_ARN";
/// Each secret variable and the configuration variable its value goes to.
const SECRET_VARIABLES: [(&str, &str); 4] = [
    (
        "SHADOWSYNC_GRAPH_CLIENT_SECRET_ARN",
        "SHADOWSYNC_GRAPH_CLIENT_SECRET",
    ),
    (
        "SHADOWSYNC_WEBHOOK_CLIENT_STATE_SECRET_ARN",
        "SHADOWSYNC_WEBHOOK_CLIENT_STATE",
    ),
    (
        "SHADOWSYNC_WEBHOOK_PREVIOUS_CLIENT_STATE_SECRET_ARN",
        "SHADOWSYNC_WEBHOOK_PREVIOUS_CLIENT_STATE",
    ),
    (
        "SHADOWSYNC_DIRECTORY_BIND_PASSWORD_SECRET_ARN",
        "SHADOWSYNC_DIRECTORY_BIND_PASSWORD",
    ),
];

pub struct Resolved {
    /// The environment with every `*_SECRET_ARN` replaced by its value.
    pub env: Vec<(String, String)>,
    pub graph_certificate: Option<GraphCredential>,
}

#[derive(Deserialize)]
struct CertificateSecret {
    certificate_pem: String,
    private_key_pem: String,
}

/// The region of the first `SHADOWSYNC_*_SECRET_ARN` in `env`
/// (`arn:<partition>:secretsmanager:<region>:<account>:secret:<name>`): a host outside AWS (the
/// connector) reads its secrets where they are.
pub fn region_of_secrets(env: &[(String, String)]) -> Option<String> {
    env.iter()
        .filter(|(name, _)| name.starts_with("SHADOWSYNC_") && name.ends_with(SUFFIX))
        .find_map(|(_, arn)| arn.split(':').nth(3).filter(|r| !r.is_empty()))
        .map(str::to_string)
}

/// Swaps every `SHADOWSYNC_*_SECRET_ARN` in `env` for the secret's value. The names are checked
/// first (nothing is fetched for an environment that names an unknown secret); the secrets are
/// then fetched concurrently, so a cold start waits for one round trip to Secrets Manager, not
/// one per secret.
pub async fn resolve(
    client: &aws_sdk_secretsmanager::Client,
    env: Vec<(String, String)>,
) -> Result<Resolved, AwsError> {
    // Where each variable's value goes: as it is, or a secret's value to a configuration
    // variable or to the Graph certificate. Every name is checked before anything is fetched.
    enum Target {
        Plain,
        Variable(&'static str),
        GraphCertificate,
    }
    let targets = env
        .iter()
        .map(|(name, value)| {
            if !(name.starts_with("SHADOWSYNC_") && name.ends_with(SUFFIX))
                || value.trim().is_empty()
            {
                return Ok(Target::Plain);
            }
            if name == GRAPH_CERTIFICATE {
                return Ok(Target::GraphCertificate);
            }
            match SECRET_VARIABLES.iter().find(|(variable, _)| variable == name) {
                Some((_, target)) => Ok(Target::Variable(target)),
                None => Err(AwsError::BadEnv {
                    name: "SHADOWSYNC_*_SECRET_ARN",
                    reason: format!(
                        "{name} is not a secret shadowsync reads (expected one of {}, {GRAPH_CERTIFICATE})",
                        SECRET_VARIABLES.map(|(v, _)| v).join(", ")
                    ),
                }),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let fetched = futures::future::try_join_all(
        env.iter()
            .zip(&targets)
            .filter(|(_, target)| !matches!(target, Target::Plain))
            .map(|((name, arn), _)| fetch(client, name, arn.trim())),
    )
    .await?;

    let mut fetched = fetched.into_iter();
    let mut out = Vec::with_capacity(env.len());
    let mut graph_certificate = None;
    for ((name, value), target) in env.into_iter().zip(targets) {
        match target {
            Target::Plain => out.push((name, value)),
            Target::Variable(target) => {
                let secret = fetched.next().expect("one value per secret variable");
                out.push((target.to_string(), secret));
            }
            Target::GraphCertificate => {
                let secret = fetched.next().expect("one value per secret variable");
                let parsed: CertificateSecret =
                    serde_json::from_str(&secret).map_err(|_| AwsError::Secret {
                        variable: name.clone(),
                        arn: value.trim().to_string(),
                        // serde's message could quote the key material: say what is expected
                        // instead.
                        reason:
                            "expected JSON {\"certificate_pem\": \"...\", \"private_key_pem\": \"...\"}"
                                .into(),
                        source: None,
                    })?;
                graph_certificate = Some(GraphCredential::Certificate {
                    certificate_pem: parsed.certificate_pem,
                    private_key_pem: SecretString::from(parsed.private_key_pem),
                });
            }
        }
    }
    Ok(Resolved {
        env: out,
        graph_certificate,
    })
}

async fn fetch(
    client: &aws_sdk_secretsmanager::Client,
    variable: &str,
    arn: &str,
) -> Result<String, AwsError> {
    let error = |reason: String| AwsError::Secret {
        variable: variable.to_string(),
        arn: arn.to_string(),
        reason,
        source: None,
    };
    let out = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| AwsError::Secret {
            variable: variable.to_string(),
            arn: arn.to_string(),
            reason: aws_sdk_secretsmanager::error::DisplayErrorContext(&e).to_string(),
            source: Some(Box::new(e)),
        })?;
    let value = out
        .secret_string()
        .ok_or_else(|| error("has no SecretString (binary secrets are not supported)".into()))?;
    if value.trim().is_empty() {
        return Err(error(
            "is empty: put the value with `aws secretsmanager put-secret-value`".into(),
        ));
    }
    Ok(value.to_string())
}
