//! The configuration through its public API: the file, the environment, and both together.

use secrecy::ExposeSecret;
use shadowsync_config::{
    env_name, Config, ConfigError, EnvConfig, GraphCredential, SecretString,
    MAX_SUBSCRIPTION_LIFETIME, SUBSCRIPTION_LIFETIME,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

const FILE: &str = r#"
[graph]
tenant_id = "8a3f6c2e-5b1d-4e7a-9c0f-2d4b6e8a1c3f"
client_id = "3c9e1a7b-6d2f-4b8e-a5c1-9f0d2e4b7a6c"

[webhook]
listen = "127.0.0.1:7070"
public_url = "https://shadowsync.example.com"

[directory]
url = "ldaps://dc1.corp.example.test"
bind_dn = "CN=svc-shadowsync,OU=Service,DC=corp,DC=example,DC=test"
guests_ou = "OU=Guests,DC=corp,DC=example,DC=test"
disabled_ou = "OU=Disabled Guests,DC=corp,DC=example,DC=test"

[policy]
retention_days = 14

[state]
path = "/var/lib/shadowsync/state.redb"
"#;

const CLIENT_SECRET: &str = "s3cret-value";
const CLIENT_STATE: &str = "a-long-random-client-state";
const BIND_PASSWORD: &str = "bind-pa55word";
const PRIVATE_KEY: &str =
    "-----BEGIN PRIVATE KEY-----\nprivate-key-material\n-----END PRIVATE KEY-----\n";

const MINUTE: u64 = 60;
const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;

fn secrets() -> Vec<(String, String)> {
    vec![
        (
            "SHADOWSYNC_GRAPH_CLIENT_SECRET".into(),
            CLIENT_SECRET.into(),
        ),
        (
            "SHADOWSYNC_WEBHOOK_CLIENT_STATE".into(),
            CLIENT_STATE.into(),
        ),
        (
            "SHADOWSYNC_DIRECTORY_BIND_PASSWORD".into(),
            BIND_PASSWORD.into(),
        ),
    ]
}

fn with(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = secrets();
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

fn parse(text: &str, env: Vec<(String, String)>) -> Result<Config, ConfigError> {
    Config::parse(Path::new("test.toml"), text, env, None)
}

/// The file with `section` appended (for sections FILE does not have).
fn plus(section: &str) -> String {
    format!("{FILE}\n{section}\n")
}

/// The key and reason of a key error; anything else fails the test.
fn key_error<T: std::fmt::Debug>(result: Result<T, ConfigError>) -> (String, String) {
    match result {
        Err(ConfigError::Key { key, reason }) => (key, reason),
        other => panic!("expected a key error, got {other:?}"),
    }
}

fn err_key(text: &str, env: Vec<(String, String)>) -> String {
    key_error(parse(text, env)).0
}

fn mins(n: u64) -> Duration {
    Duration::from_secs(n * MINUTE)
}
fn hours(n: u64) -> Duration {
    Duration::from_secs(n * HOUR)
}
fn days(n: u64) -> Duration {
    Duration::from_secs(n * DAY)
}

/// A file that exists and can be read.
fn readable() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")
}

fn certificate() -> GraphCredential {
    GraphCredential::Certificate {
        certificate_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
        private_key_pem: SecretString::from(PRIVATE_KEY),
    }
}

// --- the file and the environment -------------------------------------------------------------

#[test]
fn loads_with_defaults_and_env_secrets() {
    let c = parse(FILE, secrets()).unwrap();
    assert_eq!(
        c.graph.tenant_id.to_string(),
        "8a3f6c2e-5b1d-4e7a-9c0f-2d4b6e8a1c3f"
    );
    assert_eq!(c.graph.client_id, "3c9e1a7b-6d2f-4b8e-a5c1-9f0d2e4b7a6c");
    match &c.graph.credential {
        GraphCredential::Secret(s) => assert_eq!(s.expose_secret(), CLIENT_SECRET),
        other => panic!("{other:?}"),
    }
    assert_eq!(c.policy.retention, Some(days(14)));
    assert!(!c.policy.require_accepted);
    assert_eq!(c.policy.scope_group_id, None);
    assert_eq!(c.provisioner.workers, 4);
    assert_eq!(c.provisioner.max_attempts, 100);
    assert_eq!(c.provisioner.retry_for, hours(6));
    assert_eq!(
        c.graph.graph_endpoint.as_str(),
        "https://graph.microsoft.com/"
    );
    assert_eq!(
        c.graph.login_endpoint.as_str(),
        "https://login.microsoftonline.com/"
    );
    assert_eq!(
        c.webhook.notification_url(),
        "https://shadowsync.example.com/api/notifications"
    );
    assert_eq!(
        c.webhook.lifecycle_url(),
        "https://shadowsync.example.com/api/lifecycle"
    );
    assert_eq!(c.webhook.client_state.expose_secret(), CLIENT_STATE);
    assert_eq!(c.directory.bind_password.expose_secret(), BIND_PASSWORD);
    assert_eq!(c.directory.ca_file, None);
    assert_eq!(c.directory.base_dn, None);
    assert!(c.directory.indexed_anchor, "auto by default");
    assert!(
        !format!("{c:?}").contains(CLIENT_SECRET),
        "secrets stay out of Debug"
    );
    let policy = c.policy();
    assert_eq!(policy.retention, Some(days(14)));
    assert_eq!(policy.guests_ou, "OU=Guests,DC=corp,DC=example,DC=test");
    assert_eq!(
        policy.disabled_ou,
        "OU=Disabled Guests,DC=corp,DC=example,DC=test"
    );
    assert_eq!(
        c.state_path().unwrap(),
        Path::new("/var/lib/shadowsync/state.redb")
    );
}

#[test]
fn defaults_of_the_optional_sections() {
    let c = parse(&FILE.replace("retention_days = 14", ""), secrets()).unwrap();
    assert_eq!(c.policy.retention, Some(days(30)));
    assert_eq!(
        c.policy.retention,
        Some(shadowsync_core::policy::DEFAULT_RETENTION)
    );
    assert_eq!(c.webhook.listen.to_string(), "127.0.0.1:7070");
    assert_eq!(c.admin.listen.to_string(), "127.0.0.1:7071");
    assert_eq!(c.subscriptions.renew_margin, hours(72));
    assert_eq!(c.subscriptions.check_interval, hours(1));
    assert_eq!(c.reconciler.interval, mins(15));
    assert_eq!(c.reconciler.sweep_interval, days(1));
    assert_eq!(
        (c.provisioner.workers, c.provisioner.max_attempts),
        (4, 100)
    );
    assert!(c.connector.is_none());
    assert!(
        c.partners.is_none(),
        "the partner direction is off without [partners]"
    );
    // Without [webhook] listen either.
    let c = parse(
        &FILE.replace("listen = \"127.0.0.1:7070\"\n", ""),
        secrets(),
    )
    .unwrap();
    assert_eq!(c.webhook.listen.to_string(), "127.0.0.1:7070");
}

#[test]
fn partners_from_the_file_and_the_environment() {
    let c = parse(
        &plus("[partners]\nmode = \"invite\""),
        with(&[
            (
                "SHADOWSYNC_PARTNERS_OUS",
                "OU=A,DC=corp,DC=example,DC=test;OU=B,DC=corp,DC=example,DC=test",
            ),
            ("SHADOWSYNC_PARTNERS_MODE", "convert"),
        ]),
    )
    .unwrap();
    let p = c.partners.unwrap();
    assert_eq!(p.mode, shadowsync_config::PartnerMode::Convert);
    assert_eq!(p.ous.len(), 2);
    let (key, _) = key_error(parse(&plus("[partners]\nmode = \"invite\""), secrets()));
    assert_eq!(key, "partners", "a scope is required");
}

#[test]
fn subscription_lifetimes_are_graphs() {
    assert_eq!(SUBSCRIPTION_LIFETIME, mins(41_000));
    assert_eq!(MAX_SUBSCRIPTION_LIFETIME, mins(41_760));
    assert!(SUBSCRIPTION_LIFETIME < MAX_SUBSCRIPTION_LIFETIME);
}

#[test]
fn environment_overrides_any_key() {
    let env = with(&[
        ("SHADOWSYNC_POLICY_RETENTION_DAYS", "0"),
        ("SHADOWSYNC_POLICY_REQUIRE_ACCEPTED", "true"),
        ("SHADOWSYNC_WEBHOOK_LISTEN", "0.0.0.0:8080"),
        ("SHADOWSYNC_GRAPH_CLIENT_ID", "12345"),
        ("SHADOWSYNC_SAMBA_DIR", "/not/config"),
        ("SHADOWSYNC_QUEUE_URL", "https://sqs.example/q.fifo"),
    ]);
    let c = parse(FILE, env).unwrap();
    assert_eq!(
        c.policy.retention, None,
        "0 keeps disabled accounts for ever"
    );
    assert_eq!(c.policy().retention, None);
    assert!(c.policy.require_accepted);
    assert_eq!(c.webhook.listen.port(), 8080);
    assert_eq!(c.graph.client_id, "12345");
}

#[test]
fn secrets_in_the_file_are_refused() {
    for (section, key) in [
        ("graph", "client_secret"),
        ("webhook", "client_state"),
        ("webhook", "previous_client_state"),
        ("directory", "bind_password"),
    ] {
        let text = FILE.replace(
            &format!("[{section}]"),
            &format!("[{section}]\n{key} = \"in-the-file-xxxxxxxx\""),
        );
        let (got, reason) = key_error(parse(&text, secrets()));
        assert_eq!(got, format!("{section}.{key}"));
        assert!(reason.contains(&env_name(section, key)), "{reason}");
        assert!(!reason.contains("in-the-file"), "{reason}");
    }
}

#[test]
fn errors_name_the_key() {
    let cases = [
        (
            FILE.replace("retention_days = 14", "retention_days = \"two weeks\""),
            "policy.retention_days",
        ),
        (FILE.replace("ldaps://dc1", "http://dc1"), "directory.url"),
        (
            FILE.replace("OU=Guests,DC=corp", "OU=Guests,,DC=corp"),
            "directory.guests_ou",
        ),
        (
            FILE.replace("127.0.0.1:7070", "localhost"),
            "webhook.listen",
        ),
        (
            FILE.replace("https://shadowsync", "ftp://shadowsync"),
            "webhook.public_url",
        ),
        (FILE.replace("8a3f6c2e-5b1d", "tenant"), "graph.tenant_id"),
    ];
    for (text, key) in cases {
        assert_eq!(err_key(&text, secrets()), key);
    }
    // An unknown key names its section.
    let (key, reason) = key_error(parse(
        &FILE.replace("retention_days = 14", "retention_dayz = 14"),
        secrets(),
    ));
    assert!(key.starts_with("policy"), "{key}");
    assert!(reason.contains("retention_dayz"), "{reason}");
    let unknown_env = with(&[("SHADOWSYNC_GRAPH_TENANTID", "x")]);
    assert_eq!(err_key(FILE, unknown_env), "graph.tenantid");
    // An unknown section, and a section that is not one.
    assert_eq!(err_key(&plus("[grahp]\nx = 1"), secrets()), "grahp");
    assert_eq!(err_key(&format!("admin = 5\n{FILE}"), secrets()), "admin");
    // A key of the wrong type.
    let (key, reason) = key_error(parse(
        &FILE.replace("\"3c9e1a7b-6d2f-4b8e-a5c1-9f0d2e4b7a6c\"", "5"),
        secrets(),
    ));
    assert_eq!(key, "graph.client_id");
    assert_eq!(reason, "invalid type: integer `5`, expected a string");
}

#[test]
fn syntax_and_read_errors_name_the_file() {
    match parse("[graph\n", secrets()) {
        Err(ConfigError::Syntax { path, message }) => {
            assert_eq!(path, Path::new("test.toml"));
            assert_eq!(
                message,
                "line 1, column 7: invalid table header; expected `.`, `]`"
            );
        }
        other => panic!("{other:?}"),
    }
    // toml's own rendering would quote the line, secret and all.
    let env = "[graph]\nclient_secret = \"s3cret-value\" x\n";
    match parse(env, secrets()) {
        Err(ConfigError::Syntax { message, .. }) => {
            assert!(message.starts_with("line 2, column "), "{message}");
            assert!(!message.contains(CLIENT_SECRET), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let missing = Path::new("/nonexistent/shadowsync.toml");
    match Config::load_with_env(missing, secrets(), None) {
        Err(ConfigError::Read { path, .. }) => assert_eq!(path, missing),
        other => panic!("{other:?}"),
    }
}

#[test]
fn load_reads_the_file() {
    let path = std::env::temp_dir().join(format!("shadowsync-config-{}.toml", std::process::id()));
    std::fs::write(&path, FILE).unwrap();
    let loaded = Config::load_with_env(&path, secrets(), None);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(loaded.unwrap().policy.retention, Some(days(14)));
}

#[test]
fn missing_keys_say_which_variable_to_set() {
    let err = parse(FILE, vec![]).unwrap_err().to_string();
    assert!(err.contains("SHADOWSYNC_GRAPH_CLIENT_SECRET"), "{err}");
    let env: Vec<_> = secrets()
        .into_iter()
        .filter(|(k, _)| !k.contains("BIND"))
        .collect();
    let err = parse(FILE, env).unwrap_err().to_string();
    assert!(
        err.contains("directory.bind_password")
            && err.contains("SHADOWSYNC_DIRECTORY_BIND_PASSWORD"),
        "{err}"
    );
    let no_public_url = FILE.replace("public_url = \"https://shadowsync.example.com\"", "");
    let (key, reason) = key_error(parse(&no_public_url, secrets()));
    assert_eq!(key, "webhook.public_url");
    assert!(reason.contains("SHADOWSYNC_WEBHOOK_PUBLIC_URL"), "{reason}");
}

#[test]
fn the_state_section_is_needed_by_serve_only() {
    let no_state = FILE.replace("[state]\npath = \"/var/lib/shadowsync/state.redb\"", "");
    let c = parse(&no_state, secrets()).unwrap();
    let (key, reason) = key_error(c.state_path());
    assert_eq!(key, "state.path");
    assert!(
        reason.contains("serve") && reason.contains("admin"),
        "{reason}"
    );
    // Given by the environment alone.
    let c = parse(&no_state, with(&[("SHADOWSYNC_STATE_PATH", "/tmp/s.redb")])).unwrap();
    assert_eq!(c.state_path().unwrap(), Path::new("/tmp/s.redb"));
    // A [state] without its path is an error, not a missing section.
    assert_eq!(
        err_key(
            &FILE.replace("path = \"/var/lib/shadowsync/state.redb\"", ""),
            secrets()
        ),
        "state.path"
    );
}

// --- graph ------------------------------------------------------------------------------------

#[test]
fn graph_takes_exactly_one_credential() {
    let files = FILE.replace(
        "[webhook]",
        &format!(
            "certificate_file = {:?}\nprivate_key_file = {:?}\n\n[webhook]",
            readable(),
            readable()
        ),
    );
    let no_secret: Vec<_> = secrets()
        .into_iter()
        .filter(|(k, _)| !k.contains("CLIENT_SECRET"))
        .collect();
    let c = parse(&files, no_secret.clone()).unwrap();
    match &c.graph.credential {
        GraphCredential::CertificateFiles {
            certificate_file,
            private_key_file,
        } => {
            assert_eq!(certificate_file, &readable());
            assert_eq!(private_key_file, &readable());
        }
        other => panic!("{other:?}"),
    }
    // Both a secret and files.
    assert_eq!(err_key(&files, secrets()), "graph.client_secret");
    // Half a certificate.
    let cert_only = files.replace(&format!("private_key_file = {:?}\n", readable()), "");
    assert_eq!(
        err_key(&cert_only, no_secret.clone()),
        "graph.private_key_file"
    );
    let key_only = files.replace(&format!("certificate_file = {:?}\n", readable()), "");
    assert_eq!(
        err_key(&key_only, no_secret.clone()),
        "graph.certificate_file"
    );
    // Files that are not there, or not files.
    let missing = files.replacen(&format!("{:?}", readable()), "\"/nonexistent/app.pem\"", 1);
    let (key, reason) = key_error(parse(&missing, no_secret.clone()));
    assert_eq!(key, "graph.certificate_file");
    assert!(reason.contains("/nonexistent/app.pem"), "{reason}");
    let directory = files.replacen(
        &format!("private_key_file = {:?}", readable()),
        &format!("private_key_file = {:?}", env!("CARGO_MANIFEST_DIR")),
        1,
    );
    assert_eq!(
        err_key(&directory, no_secret.clone()),
        "graph.private_key_file"
    );
    // None at all, or an empty secret.
    let (key, reason) = key_error(parse(FILE, no_secret.clone()));
    assert_eq!(key, "graph.client_secret");
    assert!(
        reason.contains("SHADOWSYNC_GRAPH_CLIENT_SECRET"),
        "{reason}"
    );
    let mut empty = no_secret;
    empty.push(("SHADOWSYNC_GRAPH_CLIENT_SECRET".into(), " ".into()));
    assert_eq!(err_key(FILE, empty), "graph.client_secret");
}

#[test]
fn a_certificate_in_memory_is_the_only_credential() {
    let no_secret: Vec<_> = secrets()
        .into_iter()
        .filter(|(k, _)| !k.contains("CLIENT_SECRET"))
        .collect();
    let c = Config::parse(
        Path::new("t.toml"),
        FILE,
        no_secret.clone(),
        Some(certificate()),
    )
    .unwrap();
    match &c.graph.credential {
        GraphCredential::Certificate {
            certificate_pem,
            private_key_pem,
        } => {
            assert!(certificate_pem.starts_with("-----BEGIN CERTIFICATE-----"));
            assert_eq!(private_key_pem.expose_secret(), PRIVATE_KEY);
        }
        other => panic!("{other:?}"),
    }
    // With a secret in the environment too.
    let both = Config::parse(Path::new("t.toml"), FILE, secrets(), Some(certificate()));
    assert_eq!(key_error(both).0, "graph.client_secret");
    // With certificate files in the file too.
    let files = FILE.replace(
        "[webhook]",
        &format!("certificate_file = {:?}\n\n[webhook]", readable()),
    );
    let both = Config::parse(
        Path::new("t.toml"),
        &files,
        no_secret.clone(),
        Some(certificate()),
    );
    assert_eq!(key_error(both).0, "graph.certificate_file");
    // The environment alone, through the same rules.
    let env = EnvConfig::from_env(no_secret.into_iter().chain([
        (
            "SHADOWSYNC_GRAPH_TENANT_ID".to_string(),
            "8a3f6c2e-5b1d-4e7a-9c0f-2d4b6e8a1c3f".to_string(),
        ),
        ("SHADOWSYNC_GRAPH_CLIENT_ID".to_string(), "app".to_string()),
    ]))
    .unwrap();
    let graph = env.graph(Some(certificate())).unwrap();
    assert!(matches!(
        graph.credential,
        GraphCredential::Certificate { .. }
    ));
    assert_eq!(key_error(env.graph(None)).0, "graph.client_secret");
}

#[test]
fn graph_endpoints_are_bases() {
    for (value, ok) in [
        ("http://127.0.0.1:9/sim/", true),
        ("http://[::1]:9/sim/", true),
        ("http://localhost:9", true),
        ("https://graph.microsoft.us", true),
        // Plain http only to a simulator on this machine: elsewhere the token and every
        // guest's data would cross the network in the clear.
        ("http://graph.microsoft.com", false),
        ("http://10.1.2.3:8080", false),
        ("ftp://graph.example", false),
        ("https://graph.example/?a=b", false),
        ("https://graph.example/#frag", false),
        ("graph.example", false),
    ] {
        for key in ["login_endpoint", "graph_endpoint"] {
            let env = with(&[(&env_name("graph", key), value)]);
            let result = parse(FILE, env);
            if ok {
                assert!(result.is_ok(), "{key} = {value}: {result:?}");
            } else {
                assert_eq!(key_error(result).0, format!("graph.{key}"), "{value}");
            }
        }
    }
}

// --- webhook ----------------------------------------------------------------------------------

#[test]
fn client_state_is_16_to_128_characters() {
    for (len, ok) in [
        (5, false),
        (15, false),
        (16, true),
        (128, true),
        (129, false),
    ] {
        let state = "x".repeat(len);
        let mut env = secrets();
        env[1].1 = state.clone();
        let result = parse(FILE, env);
        if ok {
            assert_eq!(result.unwrap().webhook.client_state.expose_secret(), state);
        } else {
            let (key, reason) = key_error(result);
            assert_eq!(key, "webhook.client_state", "{len}");
            assert!(
                !reason.contains(&state),
                "the value stays out of the message"
            );
        }
    }
}

#[test]
fn webhook_urls_handle_a_trailing_slash() {
    let env = with(&[(
        "SHADOWSYNC_WEBHOOK_PUBLIC_URL",
        "https://hooks.example.com/shadowsync/",
    )]);
    let c = parse(FILE, env).unwrap();
    assert_eq!(
        c.webhook.notification_url(),
        "https://hooks.example.com/shadowsync/api/notifications"
    );
    assert_eq!(
        c.webhook.lifecycle_url(),
        "https://hooks.example.com/shadowsync/api/lifecycle"
    );
}

// --- directory --------------------------------------------------------------------------------

#[test]
fn directory_rules() {
    let set = |key: &str, value: &str| parse(FILE, with(&[(&env_name("directory", key), value)]));
    let (key, reason) = key_error(set("url", "ldap//dc1"));
    assert_eq!(key, "directory.url");
    assert_eq!(
        reason,
        "\"ldap//dc1\" must be ldaps://host[:port] (or ldap://, upgraded with StartTLS)"
    );
    assert_eq!(key_error(set("url", "ldaps://")).0, "directory.url");
    assert_eq!(
        set("url", "ldap://dc1:389").unwrap().directory.url,
        "ldap://dc1:389"
    );
    for ok in ["svc@corp.example.test", "CORP\\svc", "CN=svc,DC=corp"] {
        assert_eq!(set("bind_dn", ok).unwrap().directory.bind_dn, ok);
    }
    for bad in ["svc", "@corp", "CORP\\", "CN=svc,,DC=corp", ""] {
        assert_eq!(
            key_error(set("bind_dn", bad)).0,
            "directory.bind_dn",
            "{bad:?}"
        );
    }
    // The same OU in another case is the same OU.
    let same = set("disabled_ou", "ou=guests,dc=CORP,dc=example,dc=test");
    assert_eq!(key_error(same).0, "directory.disabled_ou");
    assert_eq!(
        key_error(set("base_dn", "DC=corp,,")).0,
        "directory.base_dn"
    );
    assert_eq!(
        set("base_dn", "DC=corp,DC=example,DC=test")
            .unwrap()
            .directory
            .base_dn
            .as_deref(),
        Some("DC=corp,DC=example,DC=test")
    );
    assert!(
        !set("indexed_anchor", "off")
            .unwrap()
            .directory
            .indexed_anchor
    );
    assert!(
        set("indexed_anchor", "auto")
            .unwrap()
            .directory
            .indexed_anchor
    );
    assert_eq!(
        key_error(set("indexed_anchor", "yes")).0,
        "directory.indexed_anchor"
    );
    assert_eq!(
        key_error(set("ca_file", "/nonexistent/ca.pem")).0,
        "directory.ca_file"
    );
    let readable = readable();
    let with_ca = set("ca_file", readable.to_str().unwrap()).unwrap();
    assert_eq!(with_ca.directory.ca_file, Some(readable));
    assert_eq!(
        key_error(set("bind_password", "")).0,
        "directory.bind_password"
    );
}

// --- policy -----------------------------------------------------------------------------------

#[test]
fn retention_reads_like_a_duration_or_in_days() {
    let retention = |line: &str| {
        parse(&FILE.replace("retention_days = 14", line), secrets()).map(|c| c.policy.retention)
    };
    assert_eq!(retention("retention = \"30d\"").unwrap(), Some(days(30)));
    assert_eq!(retention("retention = \"36h\"").unwrap(), Some(hours(36)));
    assert_eq!(retention("retention = \"1week\"").unwrap(), Some(days(7)));
    for never in ["\"never\"", "\"Never\"", "\"0\"", "\"0d\"", "0"] {
        assert_eq!(
            retention(&format!("retention = {never}")).unwrap(),
            None,
            "{never}"
        );
    }
    assert_eq!(retention("retention_days = 0").unwrap(), None);
    assert_eq!(
        retention("retention_days = \"45\"").unwrap(),
        Some(days(45))
    );
    assert_eq!(
        retention("retention_days = 36500").unwrap(),
        Some(days(36_500))
    );
    assert_eq!(retention("").unwrap(), Some(days(30)));

    let bad = |line: &str| key_error(retention(line));
    assert_eq!(bad("retention = \"often\"").0, "policy.retention");
    assert_eq!(bad("retention = 30").0, "policy.retention");
    assert_eq!(bad("retention = \"101y\"").0, "policy.retention");
    assert_eq!(
        bad("retention = \"99999999999999999999y\"").0,
        "policy.retention"
    );
    assert_eq!(bad("retention_days = 36501").0, "policy.retention_days");
    assert_eq!(bad("retention_days = -1").0, "policy.retention_days");
    assert_eq!(bad("retention_days = 1.5").0, "policy.retention_days");
    assert_eq!(
        bad("retention_days = 9223372036854775807").0,
        "policy.retention_days"
    );
    let (key, reason) = bad("retention = \"30d\"\nretention_days = 30");
    assert_eq!(key, "policy.retention");
    assert!(reason.contains("retention_days"), "{reason}");

    // From the environment: u64::MAX days is an error, not an overflow.
    let env = with(&[("SHADOWSYNC_POLICY_RETENTION_DAYS", "18446744073709551615")]);
    assert_eq!(err_key(FILE, env), "policy.retention_days");
    // The file's retention_days and the environment's retention are both given.
    let env = with(&[("SHADOWSYNC_POLICY_RETENTION", "30d")]);
    assert_eq!(err_key(FILE, env), "policy.retention");
}

#[test]
fn scope_group_and_acceptance() {
    let group = "4F8A2C1E-9B3D-4E5F-8A7B-6C5D4E3F2A1B";
    let c = parse(FILE, with(&[("SHADOWSYNC_POLICY_SCOPE_GROUP_ID", group)])).unwrap();
    assert_eq!(
        c.policy.scope_group_id.as_ref().map(|id| id.as_str()),
        Some("4f8a2c1e-9b3d-4e5f-8a7b-6c5d4e3f2a1b")
    );
    assert_eq!(c.policy().scope_group_id, c.policy.scope_group_id);
    for bad in ["all-guests", "", "{4f8a2c1e-9b3d-4e5f-8a7b-6c5d4e3f2a1b}"] {
        let env = with(&[("SHADOWSYNC_POLICY_SCOPE_GROUP_ID", bad)]);
        assert_eq!(err_key(FILE, env), "policy.scope_group_id", "{bad:?}");
    }
    let c = parse(
        &FILE.replace("retention_days = 14", "require_accepted = true"),
        secrets(),
    );
    assert!(c.unwrap().policy().require_accepted);
    let env = with(&[("SHADOWSYNC_POLICY_REQUIRE_ACCEPTED", "yes")]);
    assert_eq!(err_key(FILE, env), "policy.require_accepted");
}

// --- provisioner ------------------------------------------------------------------------------

#[test]
fn provisioner_ranges() {
    let provisioner = |key: &str, value: &str| {
        parse(FILE, with(&[(&env_name("provisioner", key), value)])).map(|c| c.provisioner)
    };
    assert_eq!(provisioner("workers", "1").unwrap().workers, 1);
    assert_eq!(provisioner("workers", "1024").unwrap().workers, 1024);
    assert_eq!(provisioner("max_attempts", "1").unwrap().max_attempts, 1);
    assert_eq!(
        provisioner("max_attempts", "1000").unwrap().max_attempts,
        1000
    );
    for (key, bad) in [
        ("workers", "0"),
        ("workers", "1025"),
        ("workers", "-1"),
        ("workers", "lots"),
        ("workers", "18446744073709551615"),
        ("max_attempts", "0"),
        ("max_attempts", "1001"),
        ("max_attempts", "4294967296"),
        ("max_attempts", "2.5"),
        ("retry_for", "59s"),
        ("retry_for", "15d"),
        ("retry_for", "soon"),
    ] {
        let (got, reason) = key_error(provisioner(key, bad));
        assert_eq!(got, format!("provisioner.{key}"), "{bad}");
        assert!(reason.contains(bad), "{reason}");
    }
    assert_eq!(provisioner("retry_for", "30m").unwrap().retry_for, mins(30));
    let file = plus("[provisioner]\nworkers = 16\nmax_attempts = 3\nretry_for = \"1d\"");
    let c = parse(&file, secrets()).unwrap();
    assert_eq!((c.provisioner.workers, c.provisioner.max_attempts), (16, 3));
    assert_eq!(c.provisioner.retry_for, days(1));
}

// --- subscriptions ----------------------------------------------------------------------------

fn subscriptions(lines: &str) -> Result<shadowsync_config::SubscriptionsSection, ConfigError> {
    parse(&plus(&format!("[subscriptions]\n{lines}")), secrets()).map(|c| c.subscriptions)
}

#[test]
fn subscription_timings_in_both_spellings() {
    let s = subscriptions("renew_margin = \"48h\"\ncheck_interval = \"30m\"").unwrap();
    assert_eq!((s.renew_margin, s.check_interval), (hours(48), mins(30)));
    let s = subscriptions("renew_margin_hours = 48\ncheck_interval_minutes = 30").unwrap();
    assert_eq!((s.renew_margin, s.check_interval), (hours(48), mins(30)));
    // What the CLI's tests use: a check every 1.2 s.
    let s = subscriptions("check_interval_minutes = 0.02\nrenew_margin_hours = 72").unwrap();
    assert_eq!(s.check_interval, Duration::from_millis(1200));
    assert_eq!(s.renew_margin, hours(72));
    // One spelling of each, mixed.
    let s = subscriptions("renew_margin = \"2d\"\ncheck_interval_minutes = 5").unwrap();
    assert_eq!((s.renew_margin, s.check_interval), (days(2), mins(5)));
    // From the environment, as the AWS template sets it.
    let env = with(&[("SHADOWSYNC_SUBSCRIPTIONS_RENEW_MARGIN_HOURS", "72")]);
    assert_eq!(
        parse(FILE, env).unwrap().subscriptions.renew_margin,
        hours(72)
    );
    let env = with(&[("SHADOWSYNC_SUBSCRIPTIONS_CHECK_INTERVAL", "10m")]);
    assert_eq!(
        parse(FILE, env).unwrap().subscriptions.check_interval,
        mins(10)
    );
}

#[test]
fn both_spellings_of_one_subscription_setting_are_an_error() {
    let (key, reason) = key_error(subscriptions(
        "renew_margin = \"72h\"\nrenew_margin_hours = 72",
    ));
    assert_eq!(key, "subscriptions.renew_margin");
    assert!(reason.contains("renew_margin_hours"), "{reason}");
    let (key, reason) = key_error(subscriptions(
        "check_interval = \"1h\"\ncheck_interval_minutes = 60",
    ));
    assert_eq!(key, "subscriptions.check_interval");
    assert!(reason.contains("check_interval_minutes"), "{reason}");
    // One in the file, the other from the environment.
    let file = plus("[subscriptions]\nrenew_margin = \"72h\"");
    let env = with(&[("SHADOWSYNC_SUBSCRIPTIONS_RENEW_MARGIN_HOURS", "72")]);
    assert_eq!(err_key(&file, env), "subscriptions.renew_margin");
}

#[test]
fn subscription_timings_out_of_range_name_the_key_written() {
    let cases = [
        // The renew margin: at least a minute, shorter than the requested lifetime.
        ("renew_margin = \"30s\"", "subscriptions.renew_margin"),
        ("renew_margin = \"0\"", "subscriptions.renew_margin"),
        ("renew_margin = \"41000m\"", "subscriptions.renew_margin"),
        ("renew_margin = \"29d\"", "subscriptions.renew_margin"),
        (
            "renew_margin = \"99999999999999999999h\"",
            "subscriptions.renew_margin",
        ),
        ("renew_margin = 72", "subscriptions.renew_margin"),
        ("renew_margin_hours = 0", "subscriptions.renew_margin_hours"),
        (
            "renew_margin_hours = 684",
            "subscriptions.renew_margin_hours",
        ),
        (
            "renew_margin_hours = 9223372036854775807",
            "subscriptions.renew_margin_hours",
        ),
        (
            "renew_margin_hours = -1",
            "subscriptions.renew_margin_hours",
        ),
        (
            "renew_margin_hours = 1.5",
            "subscriptions.renew_margin_hours",
        ),
        (
            "renew_margin_hours = \"lots\"",
            "subscriptions.renew_margin_hours",
        ),
        // The check interval: more than 0, shorter than the margin.
        ("check_interval = \"0s\"", "subscriptions.check_interval"),
        ("check_interval = \"72h\"", "subscriptions.check_interval"),
        ("check_interval = \"often\"", "subscriptions.check_interval"),
        (
            "check_interval_minutes = 0",
            "subscriptions.check_interval_minutes",
        ),
        (
            "check_interval_minutes = -5",
            "subscriptions.check_interval_minutes",
        ),
        (
            "check_interval_minutes = 1e300",
            "subscriptions.check_interval_minutes",
        ),
        (
            "check_interval_minutes = 1.7976931348623157e308",
            "subscriptions.check_interval_minutes",
        ),
        (
            "check_interval_minutes = nan",
            "subscriptions.check_interval_minutes",
        ),
        (
            "check_interval_minutes = inf",
            "subscriptions.check_interval_minutes",
        ),
        (
            "check_interval_minutes = 1e-12",
            "subscriptions.check_interval_minutes",
        ),
        (
            "check_interval_minutes = 4320",
            "subscriptions.check_interval_minutes",
        ),
        (
            "renew_margin_hours = 2\ncheck_interval_minutes = 120",
            "subscriptions.check_interval_minutes",
        ),
        (
            "renew_margin = \"1m\"\ncheck_interval = \"1m\"",
            "subscriptions.check_interval",
        ),
    ];
    for (lines, key) in cases {
        assert_eq!(key_error(subscriptions(lines)).0, key, "{lines}");
    }
    // The edges that are allowed.
    let s = subscriptions("renew_margin = \"40999m\"").unwrap();
    assert_eq!(s.renew_margin, mins(40_999));
    let s = subscriptions("renew_margin_hours = 683").unwrap();
    assert_eq!(s.renew_margin, hours(683));
    let s = subscriptions("renew_margin = \"1m\"\ncheck_interval = \"59s\"").unwrap();
    assert_eq!(
        (s.renew_margin, s.check_interval),
        (mins(1), Duration::from_secs(59))
    );

    // Values only the environment can give: u64::MAX hours and words for numbers.
    for (name, value, key) in [
        (
            "RENEW_MARGIN_HOURS",
            "18446744073709551615",
            "subscriptions.renew_margin_hours",
        ),
        (
            "RENEW_MARGIN_HOURS",
            "18446744073709551616",
            "subscriptions.renew_margin_hours",
        ),
        (
            "CHECK_INTERVAL_MINUTES",
            "NaN",
            "subscriptions.check_interval_minutes",
        ),
        (
            "CHECK_INTERVAL_MINUTES",
            "1e300",
            "subscriptions.check_interval_minutes",
        ),
        (
            "CHECK_INTERVAL_MINUTES",
            "-inf",
            "subscriptions.check_interval_minutes",
        ),
    ] {
        let env = with(&[(&format!("SHADOWSYNC_SUBSCRIPTIONS_{name}"), value)]);
        let (got, reason) = key_error(parse(FILE, env));
        assert_eq!(got, key, "{value}");
        assert!(reason.contains(value), "{reason}");
    }
}

// --- reconciler -------------------------------------------------------------------------------

#[test]
fn reconciler_intervals_read_like_durations() {
    let c = parse(FILE, secrets()).unwrap();
    assert_eq!(c.reconciler.interval.as_secs(), 15 * 60);
    assert_eq!(c.reconciler.sweep_interval.as_secs(), 24 * 3600);
    let text = plus("[reconciler]\ninterval = \"5m\"\nsweep_interval = \"12h\"");
    let c = parse(&text, secrets()).unwrap();
    assert_eq!(
        (
            c.reconciler.interval.as_secs(),
            c.reconciler.sweep_interval.as_secs()
        ),
        (300, 43200)
    );
    let (key, reason) = key_error(parse(
        &plus("[reconciler]\ninterval = \"often\""),
        secrets(),
    ));
    assert_eq!(key, "reconciler.interval");
    assert!(
        reason.starts_with(r#""often" is not a duration like "15m" or "1h""#),
        "{reason}"
    );
}

#[test]
fn reconciler_intervals_out_of_range() {
    let reconciler = |lines: &str| {
        parse(&plus(&format!("[reconciler]\n{lines}")), secrets()).map(|c| c.reconciler)
    };
    for (lines, key) in [
        ("interval = \"0s\"", "reconciler.interval"),
        ("interval = \"0\"", "reconciler.interval"),
        ("interval = \"7d\"", "reconciler.interval"),
        ("interval = \"1y\"", "reconciler.interval"),
        (
            "interval = \"99999999999999999999s\"",
            "reconciler.interval",
        ),
        ("interval = 15", "reconciler.interval"),
        ("sweep_interval = \"0m\"", "reconciler.sweep_interval"),
        ("sweep_interval = \"366d\"", "reconciler.sweep_interval"),
        ("sweep_interval = \"daily\"", "reconciler.sweep_interval"),
    ] {
        assert_eq!(key_error(reconciler(lines)).0, key, "{lines}");
    }
    let r = reconciler("interval = \"6d 23h\"\nsweep_interval = \"365d\"").unwrap();
    assert_eq!(
        (r.interval, r.sweep_interval),
        (days(6) + hours(23), days(365))
    );
    let r = reconciler("interval = \"90s\"\nsweep_interval = \"1h 30m\"").unwrap();
    assert_eq!(
        (r.interval, r.sweep_interval),
        (Duration::from_secs(90), mins(90))
    );
}

// --- admin and connector ----------------------------------------------------------------------

#[test]
fn admin_listens_on_loopback_only() {
    let env = with(&[("SHADOWSYNC_ADMIN_LISTEN", "[::1]:9000")]);
    assert_eq!(
        parse(FILE, env).unwrap().admin.listen.to_string(),
        "[::1]:9000"
    );
    for bad in ["0.0.0.0:7071", "10.0.0.1:7071", "localhost:7071"] {
        let env = with(&[("SHADOWSYNC_ADMIN_LISTEN", bad)]);
        assert_eq!(err_key(FILE, env), "admin.listen", "{bad}");
    }
}

fn connector_env() -> Vec<(String, String)> {
    with(&[
        (
            "SHADOWSYNC_CONNECTOR_QUEUE_URL",
            "https://sqs.eu-west-1.amazonaws.com/123456789012/shadowsync-jobs.fifo",
        ),
        (
            "SHADOWSYNC_CONNECTOR_DEAD_LETTER_QUEUE_URL",
            "https://sqs.eu-west-1.amazonaws.com/123456789012/shadowsync-dlq.fifo",
        ),
        ("SHADOWSYNC_CONNECTOR_TABLE_NAME", "shadowsync-State"),
    ])
}

#[test]
fn the_connector_section_is_validated_and_knows_its_region() {
    let env = connector_env();
    let config = parse(FILE, env.clone()).unwrap();
    let connector = config.connector().unwrap();
    assert_eq!(connector.region().as_deref(), Some("eu-west-1"));
    assert_eq!(connector.health_listen.to_string(), "127.0.0.1:7072");
    assert_eq!(connector.table_name, "shadowsync-State");

    let (key, _) = key_error(parse(FILE, secrets()).unwrap().connector());
    assert_eq!(key, "connector", "serve needs none, the connector does");

    let bad = |name: &str, value: &str| {
        let mut env = connector_env();
        env.push((format!("SHADOWSYNC_CONNECTOR_{name}"), value.into()));
        err_key(FILE, env)
    };
    assert_eq!(
        bad("HEALTH_LISTEN", "0.0.0.0:7072"),
        "connector.health_listen"
    );
    assert_eq!(
        bad("QUEUE_URL", "https://sqs.eu-west-1.amazonaws.com/1/jobs"),
        "connector.queue_url"
    );
    assert_eq!(
        bad("DEAD_LETTER_QUEUE_URL", "sqs://x/dlq.fifo"),
        "connector.dead_letter_queue_url"
    );
    assert_eq!(bad("TABLE_NAME", "  "), "connector.table_name");
    assert_eq!(bad("REGION", "eu west"), "connector.region");

    let mut env = connector_env();
    env.push(("SHADOWSYNC_CONNECTOR_REGION".into(), "us-east-2".into()));
    let config = parse(FILE, env).unwrap();
    assert_eq!(
        config.connector().unwrap().region().as_deref(),
        Some("us-east-2")
    );
}

// --- the environment alone --------------------------------------------------------------------

fn env_config(pairs: &[(&str, &str)]) -> EnvConfig {
    EnvConfig::from_env(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()
}

#[test]
fn the_environment_alone_gives_the_partners_section_as_the_template_sets_it() {
    let env = env_config(&[
        ("SHADOWSYNC_PARTNERS_MODE", "invite"),
        (
            "SHADOWSYNC_PARTNERS_OUS",
            "OU=Partners,DC=corp,DC=example,DC=test;OU=Vendors\\, Ltd,DC=corp,DC=example,DC=test",
        ),
        (
            "SHADOWSYNC_PARTNERS_FILTER",
            "(extensionAttribute1=Partner)",
        ),
        (
            "SHADOWSYNC_PARTNERS_UPN_SUFFIXES",
            "@partners.contoso.com;@vendors.contoso.com",
        ),
    ]);
    let p = env.partners().unwrap().expect("configured");
    assert_eq!(p.mode, shadowsync_config::PartnerMode::Invite);
    assert_eq!(p.ous.len(), 2);
    assert_eq!(p.filter.as_deref(), Some("(extensionAttribute1=Partner)"));
    assert_eq!(
        p.upn_suffixes,
        ["@partners.contoso.com", "@vendors.contoso.com"]
    );
    assert!(env_config(&[]).partners().unwrap().is_none(), "off");
    let (key, _) = key_error(env_config(&[("SHADOWSYNC_PARTNERS_MODE", "invite")]).partners());
    assert_eq!(key, "partners", "a scope is required");
}

#[test]
fn the_environment_alone_gives_each_section_with_its_errors() {
    let webhook = env_config(&[
        (
            "SHADOWSYNC_GRAPH_TENANT_ID",
            "8a3f6c2e-5b1d-4e7a-9c0f-2d4b6e8a1c3f",
        ),
        ("SHADOWSYNC_WEBHOOK_CLIENT_STATE", CLIENT_STATE),
        ("SHADOWSYNC_QUEUE_URL", "https://sqs.example/q.fifo"),
    ]);
    assert_eq!(
        webhook.tenant_id().unwrap().to_string(),
        "8a3f6c2e-5b1d-4e7a-9c0f-2d4b6e8a1c3f"
    );
    assert_eq!(
        webhook.client_state().unwrap().expose_secret(),
        CLIENT_STATE
    );
    // No [graph] client id: the webhook does not need one, the others say what is missing.
    let (key, reason) = key_error(webhook.graph(None));
    assert_eq!(key, "graph.client_id");
    assert!(reason.contains("SHADOWSYNC_GRAPH_CLIENT_ID"), "{reason}");
    assert_eq!(key_error(webhook.webhook()).0, "webhook.public_url");
    assert_eq!(webhook.reconciler().unwrap().interval, mins(15));
    assert_eq!(webhook.subscriptions().unwrap().renew_margin, hours(72));
    assert_eq!(webhook.provisioner().unwrap().max_attempts, 100);
    assert_eq!(webhook.safety().unwrap().max_disables_per_hour, 100);
    assert_eq!(
        webhook.admin().unwrap().listen.to_string(),
        "127.0.0.1:7071"
    );

    let short = env_config(&[("SHADOWSYNC_WEBHOOK_CLIENT_STATE", "short")]);
    let (key, reason) = key_error(short.client_state());
    assert_eq!(key, "webhook.client_state");
    assert!(reason.contains("at least 16"), "{reason}");
    let (key, reason) = key_error(env_config(&[]).tenant_id());
    assert_eq!(key, "graph.tenant_id");
    assert!(reason.contains("SHADOWSYNC_GRAPH_TENANT_ID"), "{reason}");
    let (key, _) = key_error(env_config(&[("SHADOWSYNC_GRAPH_TENANT_ID", "x")]).tenant_id());
    assert_eq!(key, "graph.tenant_id");
    let (key, reason) =
        key_error(env_config(&[("SHADOWSYNC_PROVISIONER_MAX_ATTEMPTS", "lots")]).provisioner());
    assert_eq!(key, "provisioner.max_attempts");
    assert!(reason.contains("\"lots\""), "{reason}");
    // Every range applies here too.
    let (key, _) = key_error(
        env_config(&[(
            "SHADOWSYNC_SUBSCRIPTIONS_RENEW_MARGIN_HOURS",
            "18446744073709551615",
        )])
        .subscriptions(),
    );
    assert_eq!(key, "subscriptions.renew_margin_hours");
    let (key, _) = key_error(env_config(&[("SHADOWSYNC_RECONCILER_INTERVAL", "8d")]).reconciler());
    assert_eq!(key, "reconciler.interval");
    let (key, _) = key_error(env_config(&[("SHADOWSYNC_RECONCILER_INTERVALL", "8d")]).reconciler());
    assert_eq!(key, "reconciler.intervall");
    assert_eq!(key_error(env_config(&[]).state()).0, "state.path");
    assert_eq!(
        key_error(env_config(&[]).connector()).0,
        "connector.queue_url"
    );
}

#[test]
fn has_section_tells_whether_a_section_is_configured() {
    let env = env_config(&[
        ("SHADOWSYNC_DIRECTORY_URL", "ldaps://dc1"),
        ("SHADOWSYNC_QUEUE_URL", "https://sqs.example/q.fifo"),
    ]);
    assert!(env.has_section("directory"));
    assert!(!env.has_section("graph"));
    assert!(!env.has_section("queue"), "not a section");
}

#[test]
fn generic_keys_from_the_environment() {
    let env = env_config(&[
        ("SHADOWSYNC_PROVISIONER_WORKERS", " 12 "),
        ("SHADOWSYNC_WEBHOOK_CLIENT_STATE", CLIENT_STATE),
    ]);
    assert_eq!(env.key::<u32>("provisioner", "workers").unwrap(), Some(12));
    assert_eq!(env.key::<u32>("provisioner", "max_attempts").unwrap(), None);
    let (key, reason) = key_error(env.required::<u32>("provisioner", "max_attempts"));
    assert_eq!(key, "provisioner.max_attempts");
    assert!(
        reason.contains("SHADOWSYNC_PROVISIONER_MAX_ATTEMPTS"),
        "{reason}"
    );
    // A secret that does not parse is not quoted in the error.
    let (key, reason) = key_error(env.key::<u32>("webhook", "client_state"));
    assert_eq!(key, "webhook.client_state");
    assert!(!reason.contains(CLIENT_STATE), "{reason}");
}

/// Every key, as environment variables; `FULL_FILE` says the same as a file.
fn full_env() -> Vec<(String, String)> {
    with(&[
        (
            "SHADOWSYNC_GRAPH_TENANT_ID",
            "8a3f6c2e-5b1d-4e7a-9c0f-2d4b6e8a1c3f",
        ),
        ("SHADOWSYNC_GRAPH_CLIENT_ID", "app-id"),
        (
            "SHADOWSYNC_GRAPH_LOGIN_ENDPOINT",
            "http://127.0.0.1:9/login",
        ),
        (
            "SHADOWSYNC_GRAPH_GRAPH_ENDPOINT",
            "http://127.0.0.1:9/graph/",
        ),
        ("SHADOWSYNC_WEBHOOK_LISTEN", "0.0.0.0:8080"),
        ("SHADOWSYNC_WEBHOOK_PUBLIC_URL", "https://hooks.example.com"),
        ("SHADOWSYNC_DIRECTORY_URL", "ldap://dc1:389"),
        ("SHADOWSYNC_DIRECTORY_BIND_DN", "svc@corp.example.test"),
        ("SHADOWSYNC_DIRECTORY_GUESTS_OU", "OU=G,DC=corp"),
        ("SHADOWSYNC_DIRECTORY_DISABLED_OU", "OU=D,DC=corp"),
        ("SHADOWSYNC_DIRECTORY_BASE_DN", "DC=corp"),
        (
            "SHADOWSYNC_POLICY_SCOPE_GROUP_ID",
            "4F8A2C1E-9B3D-4E5F-8A7B-6C5D4E3F2A1B",
        ),
        ("SHADOWSYNC_POLICY_REQUIRE_ACCEPTED", "true"),
        ("SHADOWSYNC_POLICY_RETENTION_DAYS", "90"),
        ("SHADOWSYNC_STATE_PATH", "/tmp/state.redb"),
        ("SHADOWSYNC_PROVISIONER_WORKERS", "2"),
        ("SHADOWSYNC_PROVISIONER_MAX_ATTEMPTS", "5"),
        ("SHADOWSYNC_SUBSCRIPTIONS_RENEW_MARGIN_HOURS", "48"),
        ("SHADOWSYNC_SUBSCRIPTIONS_CHECK_INTERVAL", "20m"),
        ("SHADOWSYNC_ADMIN_LISTEN", "127.0.0.1:9071"),
        ("SHADOWSYNC_RECONCILER_INTERVAL", "5m"),
        ("SHADOWSYNC_RECONCILER_SWEEP_INTERVAL", "12h"),
        (
            "SHADOWSYNC_CONNECTOR_QUEUE_URL",
            "https://sqs.eu-west-1.amazonaws.com/1/jobs.fifo",
        ),
        (
            "SHADOWSYNC_CONNECTOR_DEAD_LETTER_QUEUE_URL",
            "https://sqs.eu-west-1.amazonaws.com/1/dlq.fifo",
        ),
        ("SHADOWSYNC_CONNECTOR_TABLE_NAME", "state"),
        ("SHADOWSYNC_CONNECTOR_REGION", "eu-west-1"),
        ("SHADOWSYNC_CONNECTOR_HEALTH_LISTEN", "127.0.0.1:9072"),
    ])
}

const FULL_FILE: &str = r#"
[graph]
tenant_id = "8a3f6c2e-5b1d-4e7a-9c0f-2d4b6e8a1c3f"
client_id = "app-id"
login_endpoint = "http://127.0.0.1:9/login"
graph_endpoint = "http://127.0.0.1:9/graph/"
[webhook]
listen = "0.0.0.0:8080"
public_url = "https://hooks.example.com"
[directory]
url = "ldap://dc1:389"
bind_dn = "svc@corp.example.test"
guests_ou = "OU=G,DC=corp"
disabled_ou = "OU=D,DC=corp"
base_dn = "DC=corp"
[policy]
scope_group_id = "4F8A2C1E-9B3D-4E5F-8A7B-6C5D4E3F2A1B"
require_accepted = true
retention_days = 90
[state]
path = "/tmp/state.redb"
[provisioner]
workers = 2
max_attempts = 5
[subscriptions]
renew_margin_hours = 48
check_interval = "20m"
[admin]
listen = "127.0.0.1:9071"
[reconciler]
interval = "5m"
sweep_interval = "12h"
[connector]
queue_url = "https://sqs.eu-west-1.amazonaws.com/1/jobs.fifo"
dead_letter_queue_url = "https://sqs.eu-west-1.amazonaws.com/1/dlq.fifo"
table_name = "state"
region = "eu-west-1"
health_listen = "127.0.0.1:9072"
"#;

#[test]
fn the_environment_alone_and_the_file_give_the_same_configuration() {
    let env = EnvConfig::from_env(full_env()).unwrap();
    let from_env = parse("", full_env()).unwrap();
    let from_file = parse(FULL_FILE, secrets()).unwrap();
    for config in [&from_env, &from_file] {
        let graph = env.graph(None).unwrap();
        assert_eq!(config.graph.tenant_id, graph.tenant_id);
        assert_eq!(config.graph.tenant_id, env.tenant_id().unwrap());
        assert_eq!(config.graph.client_id, graph.client_id);
        assert_eq!(config.graph.login_endpoint, graph.login_endpoint);
        assert_eq!(config.graph.graph_endpoint, graph.graph_endpoint);
        match (&config.graph.credential, &graph.credential) {
            (GraphCredential::Secret(a), GraphCredential::Secret(b)) => {
                assert_eq!(a.expose_secret(), b.expose_secret())
            }
            other => panic!("{other:?}"),
        }
        let webhook = env.webhook().unwrap();
        assert_eq!(config.webhook.listen, webhook.listen);
        assert_eq!(config.webhook.public_url, webhook.public_url);
        assert_eq!(
            config.webhook.client_state.expose_secret(),
            webhook.client_state.expose_secret()
        );
        assert_eq!(
            config.webhook.client_state.expose_secret(),
            env.client_state().unwrap().expose_secret()
        );
        let directory = env.directory().unwrap();
        assert_eq!(
            format!("{:?}", config.directory),
            format!("{directory:?}"),
            "every field but the password, which Debug hides"
        );
        assert_eq!(
            config.directory.bind_password.expose_secret(),
            directory.bind_password.expose_secret()
        );
        assert_eq!(config.policy(), env.policy(&directory).unwrap());
        assert_eq!(config.state.as_ref(), Some(&env.state().unwrap()));
        assert_eq!(config.provisioner, env.provisioner().unwrap());
        assert_eq!(config.subscriptions, env.subscriptions().unwrap());
        assert_eq!(config.admin, env.admin().unwrap());
        assert_eq!(config.reconciler, env.reconciler().unwrap());
        assert_eq!(config.connector.as_ref(), Some(&env.connector().unwrap()));
    }
    // And the values are the ones written.
    let c = from_file;
    assert_eq!(c.policy.retention, Some(days(90)));
    assert!(c.policy.require_accepted);
    assert_eq!(c.subscriptions.renew_margin, hours(48));
    assert_eq!(c.subscriptions.check_interval, mins(20));
    assert_eq!((c.provisioner.workers, c.provisioner.max_attempts), (2, 5));
    assert_eq!(c.reconciler.interval, mins(5));
    assert_eq!(c.admin.listen.port(), 9071);
    assert_eq!(c.connector().unwrap().health_listen.port(), 9072);
}

// --- secrets stay secret ----------------------------------------------------------------------

#[test]
fn debug_never_shows_a_secret() {
    let secret_values = [
        CLIENT_SECRET,
        CLIENT_STATE,
        BIND_PASSWORD,
        "private-key-material",
    ];
    let no_secret: Vec<_> = secrets()
        .into_iter()
        .filter(|(k, _)| !k.contains("CLIENT_SECRET"))
        .collect();
    let with_secret = parse(FILE, secrets()).unwrap();
    let with_certificate =
        Config::parse(Path::new("t.toml"), FILE, no_secret, Some(certificate())).unwrap();
    let env = EnvConfig::from_env(full_env()).unwrap();
    let shown = [
        format!("{with_secret:?}"),
        format!("{with_secret:#?}"),
        format!("{with_certificate:?}"),
        format!("{:?}", certificate()),
        format!("{:?}", with_secret.graph),
        format!("{:?}", with_secret.webhook),
        format!("{:?}", with_secret.directory),
        format!("{env:?}"),
        format!("{:?}", env.client_state().unwrap()),
    ];
    for text in &shown {
        for secret in secret_values {
            assert!(!text.contains(secret), "{secret:?} shown in {text}");
        }
    }
    // They are in there, only not shown.
    assert!(shown[2].contains("BEGIN CERTIFICATE"), "{}", shown[2]);
    assert!(shown[7].contains("webhook.client_state"), "{}", shown[7]);
}

// --- no panic, whatever the input -------------------------------------------------------------

#[test]
fn no_value_of_any_key_panics() {
    let keys = [
        ("graph", "tenant_id"),
        ("graph", "client_id"),
        ("graph", "client_secret"),
        ("graph", "certificate_file"),
        ("graph", "private_key_file"),
        ("graph", "login_endpoint"),
        ("graph", "graph_endpoint"),
        ("webhook", "listen"),
        ("webhook", "public_url"),
        ("webhook", "client_state"),
        ("directory", "url"),
        ("directory", "bind_dn"),
        ("directory", "bind_password"),
        ("directory", "ca_file"),
        ("directory", "guests_ou"),
        ("directory", "disabled_ou"),
        ("directory", "base_dn"),
        ("directory", "indexed_anchor"),
        ("policy", "scope_group_id"),
        ("policy", "require_accepted"),
        ("policy", "retention"),
        ("policy", "retention_days"),
        ("state", "path"),
        ("provisioner", "workers"),
        ("provisioner", "max_attempts"),
        ("subscriptions", "renew_margin"),
        ("subscriptions", "renew_margin_hours"),
        ("subscriptions", "check_interval"),
        ("subscriptions", "check_interval_minutes"),
        ("admin", "listen"),
        ("reconciler", "interval"),
        ("reconciler", "sweep_interval"),
        ("connector", "queue_url"),
        ("connector", "dead_letter_queue_url"),
        ("connector", "table_name"),
        ("connector", "region"),
        ("connector", "health_listen"),
    ];
    let long = "9".repeat(400);
    let values = [
        "",
        " ",
        "\\",
        "é\\",
        "=",
        ",",
        "\u{0}",
        "\u{202e}",
        long.as_str(),
        "-1",
        "-0",
        "1e400",
        "1e300",
        "-1e300",
        "NaN",
        "inf",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775808",
        "0",
        "0s",
        "1ns",
        "584942417355y",
        "99999999999999999999y",
        "CN=\\",
        "CN=a\\,",
        "ldaps://",
        "ldap://:1",
        "http://[::1",
        "http://",
        "https://x:99999/",
        "[::1]:0",
        "never",
        "true",
    ];
    for (section, key) in keys {
        for value in &values {
            let env = with(&[(&env_name(section, key), value)]);
            // Ok or a key error naming this section; anything but a panic.
            match parse(FILE, env.clone()) {
                Ok(_) => {}
                Err(ConfigError::Key { key: got, .. }) if got.starts_with(section) => {}
                Err(e) => panic!("{section}.{key} = {value:?}: {e}"),
            }
            let alone = EnvConfig::from_env(env).unwrap();
            let _ = (
                alone.graph(None),
                alone.tenant_id(),
                alone.webhook(),
                alone.client_state(),
                alone.provisioner(),
                alone.subscriptions(),
                alone.reconciler(),
                alone.admin(),
                alone.state(),
                alone.connector(),
            );
            if let Ok(directory) = alone.directory() {
                let _ = alone.policy(&directory);
            }
        }
    }
}

#[test]
fn a_previous_client_state_is_accepted_during_a_rotation() {
    let c = parse(FILE, secrets()).unwrap();
    assert!(c.webhook.previous_client_state.is_none(), "none by default");
    let previous = "the-client-state-rotated-out-1234";
    let c = parse(
        FILE,
        with(&[("SHADOWSYNC_WEBHOOK_PREVIOUS_CLIENT_STATE", previous)]),
    )
    .unwrap();
    assert_eq!(
        c.webhook
            .previous_client_state
            .as_ref()
            .map(|s| s.expose_secret().to_string()),
        Some(previous.to_string())
    );
    assert!(!format!("{c:?}").contains(previous), "not in Debug");
    let env = EnvConfig::from_env(with(&[(
        "SHADOWSYNC_WEBHOOK_PREVIOUS_CLIENT_STATE",
        previous,
    )]))
    .unwrap();
    let (current, rotated_out) = env.client_states().unwrap();
    assert_eq!(current.expose_secret(), CLIENT_STATE);
    assert_eq!(rotated_out.unwrap().expose_secret(), previous);

    let same = with(&[("SHADOWSYNC_WEBHOOK_PREVIOUS_CLIENT_STATE", CLIENT_STATE)]);
    assert_eq!(err_key(FILE, same), "webhook.previous_client_state");
    let short = with(&[("SHADOWSYNC_WEBHOOK_PREVIOUS_CLIENT_STATE", "short")]);
    let (key, reason) = key_error(parse(FILE, short));
    assert_eq!(key, "webhook.previous_client_state");
    assert!(reason.contains("at least 16"), "{reason}");
}
