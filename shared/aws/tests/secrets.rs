//! Secrets Manager loading against moto: `*_SECRET_ARN` swapped for values, the Graph
//! certificate as an in-memory credential, clear errors that never show a value.

use shadowsync_aws::secrets::{region_of_secrets, resolve};
use shadowsync_aws::{AwsError, LambdaHost};
use shadowsync_e2e::{aws, unique};

fn var(name: &str, value: &str) -> (String, String) {
    (name.to_string(), value.to_string())
}

#[tokio::test]
async fn secret_arns_become_configuration_values() {
    let sdk = aws::sdk_config().await;
    let client = aws_sdk_secretsmanager::Client::new(&sdk);
    let client_secret = aws::secret("graph-client-secret-value").await;
    let client_state = aws::secret("a-client-state-of-sufficient-length").await;
    let env = vec![
        var("SHADOWSYNC_GRAPH_CLIENT_SECRET_ARN", &client_secret),
        var("SHADOWSYNC_WEBHOOK_CLIENT_STATE_SECRET_ARN", &client_state),
        var(
            "SHADOWSYNC_GRAPH_TENANT_ID",
            "8a3f6c2e-5b1d-4e7a-9c0f-2d4b6e8a1c3f",
        ),
        var(
            "SHADOWSYNC_QUEUE_URL",
            "https://sqs.us-east-1.amazonaws.com/1/q.fifo",
        ),
        var("PATH", "/usr/bin"),
    ];
    assert_eq!(region_of_secrets(&env).as_deref(), Some(aws::REGION));
    let resolved = resolve(&client, env.clone()).await.unwrap();
    let get = |name: &str| {
        resolved
            .env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(
        get("SHADOWSYNC_GRAPH_CLIENT_SECRET"),
        Some("graph-client-secret-value")
    );
    assert_eq!(get("SHADOWSYNC_GRAPH_CLIENT_SECRET_ARN"), None);
    assert_eq!(get("PATH"), Some("/usr/bin"));

    // The whole host: the webhook's two keys load from the resolved environment.
    let host = LambdaHost::load(sdk, env).await.unwrap();
    assert_eq!(
        host.config.tenant_id().unwrap().to_string(),
        "8a3f6c2e-5b1d-4e7a-9c0f-2d4b6e8a1c3f"
    );
    assert!(host.config.client_state().is_ok());
    assert!(host.table_name().is_err(), "not configured, and says so");
}

#[tokio::test]
async fn a_certificate_secret_becomes_an_in_memory_credential() {
    let client = aws_sdk_secretsmanager::Client::new(&aws::sdk_config().await);
    let arn = aws::secret(
        r#"{"certificate_pem": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", "private_key_pem": "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"}"#,
    )
    .await;
    let resolved = resolve(
        &client,
        vec![var("SHADOWSYNC_GRAPH_CERTIFICATE_SECRET_ARN", &arn)],
    )
    .await
    .unwrap();
    assert!(resolved.env.is_empty());
    match resolved.graph_certificate {
        Some(shadowsync_config::GraphCredential::Certificate {
            certificate_pem, ..
        }) => assert!(certificate_pem.contains("BEGIN CERTIFICATE")),
        other => panic!("{other:?}"),
    }

    let malformed = aws::secret("PRIVATE-KEY-MATERIAL not json").await;
    let error = resolve(
        &client,
        vec![var("SHADOWSYNC_GRAPH_CERTIFICATE_SECRET_ARN", &malformed)],
    )
    .await
    .err()
    .expect("refused");
    let message = error.to_string();
    assert!(message.contains("certificate_pem"), "{message}");
    assert!(
        !message.contains("PRIVATE-KEY-MATERIAL"),
        "never shows the value: {message}"
    );
}

/// The ARN of a secret that does not exist, in moto's account and region.
fn missing_secret_arn() -> String {
    format!(
        "arn:aws:secretsmanager:{}:{}:secret:does-not-exist-{}",
        aws::REGION,
        aws::ACCOUNT,
        unique()
    )
}

#[tokio::test]
async fn a_missing_secret_is_an_error_naming_the_variable() {
    let client = aws_sdk_secretsmanager::Client::new(&aws::sdk_config().await);
    let arn = missing_secret_arn();
    let error = resolve(
        &client,
        vec![var("SHADOWSYNC_DIRECTORY_BIND_PASSWORD_SECRET_ARN", &arn)],
    )
    .await
    .err()
    .expect("refused");
    match &error {
        AwsError::Secret {
            variable, arn: a, ..
        } => {
            assert_eq!(variable, "SHADOWSYNC_DIRECTORY_BIND_PASSWORD_SECRET_ARN");
            assert_eq!(a, &arn);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_unknown_secret_variable_is_refused_before_anything_is_fetched() {
    let client = aws_sdk_secretsmanager::Client::new(&aws::sdk_config().await);
    let missing = missing_secret_arn();
    // The missing secret comes first: fetched, it would be the error.
    let error = resolve(
        &client,
        vec![
            var("SHADOWSYNC_DIRECTORY_BIND_PASSWORD_SECRET_ARN", &missing),
            var("SHADOWSYNC_GRAPH_TYPO_SECRET_ARN", &missing),
        ],
    )
    .await
    .err()
    .expect("refused");
    match &error {
        AwsError::BadEnv { reason, .. } => assert!(
            reason.contains("SHADOWSYNC_GRAPH_TYPO_SECRET_ARN is not a secret shadowsync reads"),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
}
