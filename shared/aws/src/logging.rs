//! The Lambda functions' logs: lambda_runtime's default subscriber (JSON when the function's log
//! format is JSON, each line carrying the invocation's `requestId` from the runtime's span; the
//! level from `AWS_LAMBDA_LOG_LEVEL` or `RUST_LOG`), except that the Lambda crates never log
//! below info, whatever level is asked for.

use std::str::FromStr;
use tracing::Subscriber;
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Crates that log whole invocations below info: lambda_runtime writes every event's raw JSON
/// at trace, which for the webhook is Graph's notifications with their `clientState`; lambda_http
/// and the runtime API client log requests and responses. A secret must not reach the logs
/// because someone turned the level up to look at something else.
const LOG_WHOLE_INVOCATIONS: [&str; 3] =
    ["lambda_runtime", "lambda_runtime_api_client", "lambda_http"];

/// Logs as Lambda wants them, on standard output.
pub fn init_logging() {
    let var = |name| std::env::var(name).ok();
    let json =
        var("AWS_LAMBDA_LOG_FORMAT").is_some_and(|format| format.eq_ignore_ascii_case("json"));
    let filter = filter(
        var("AWS_LAMBDA_LOG_LEVEL").as_deref(),
        var("RUST_LOG").as_deref(),
    );
    subscriber(filter, json, std::io::stdout).init();
}

/// lambda_runtime's rule: the level `AWS_LAMBDA_LOG_LEVEL` names, else the one `RUST_LOG` names,
/// else info; `RUST_LOG`'s directives on top.
fn filter(lambda_log_level: Option<&str>, rust_log: Option<&str>) -> EnvFilter {
    let level = lambda_log_level
        .or(rust_log)
        .and_then(|level| LevelFilter::from_str(level).ok())
        .unwrap_or(LevelFilter::INFO);
    EnvFilter::builder()
        .with_default_directive(level.into())
        .parse_lossy(rust_log.unwrap_or_default())
}

/// Info at most for [`LOG_WHOLE_INVOCATIONS`], anything for the rest. Applied on top of the
/// level filter rather than as directives in it, so that no directive, however specific
/// (`lambda_runtime::layers::api_response=trace`), can lift it.
fn at_most_info_for_lambda_crates() -> Targets {
    LOG_WHOLE_INVOCATIONS.iter().fold(
        Targets::new().with_default(LevelFilter::TRACE),
        |cap, target| cap.with_target(*target, LevelFilter::INFO),
    )
}

/// lambda_runtime's default subscriber (same format: no target, no time, JSON or text), capped.
fn subscriber<W>(filter: EnvFilter, json: bool, writer: W) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let format = tracing_subscriber::fmt()
        .with_target(false)
        .without_time()
        .with_env_filter(filter)
        .with_writer(writer);
    let cap = at_most_info_for_lambda_crates();
    if json {
        Box::new(format.json().finish().with(cap))
    } else {
        Box::new(format.finish().with(cap))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    /// What the subscriber wrote.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl MakeWriter<'_> for Captured {
        type Writer = Captured;
        fn make_writer(&self) -> Captured {
            self.clone()
        }
    }

    /// What the functions would log, as lambda_runtime, lambda_http and shadowsync log, with
    /// these settings.
    fn logged(lambda_log_level: Option<&str>, rust_log: Option<&str>) -> String {
        let out = Captured::default();
        let subscriber = subscriber(filter(lambda_log_level, rust_log), true, out.clone());
        tracing::subscriber::with_default(subscriber, || {
            // What lambda_runtime 1.x logs of every invocation.
            tracing::trace!(
                target: "lambda_runtime::layers::api_response",
                body = r#"{"value":[{"clientState":"secretClientValue"}]}"#,
                "raw JSON event received from Lambda"
            );
            tracing::debug!(target: "lambda_http::request", "lambda_http debug");
            tracing::trace!(target: "lambda_runtime_api_client", "runtime api client trace");
            tracing::info!(target: "lambda_runtime::runtime", "lambda_runtime info");
            tracing::trace!(target: "shadowsync_app::jobs", "shadowsync trace");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        text
    }

    #[test]
    fn the_lambda_crates_log_nothing_below_info_whatever_is_asked() {
        for (lambda_log_level, rust_log) in [
            (None, Some("trace")),
            (Some("TRACE"), None),
            (Some("trace"), Some("debug")),
            (
                None,
                Some("lambda_runtime=trace,lambda_http=trace,lambda_runtime_api_client=trace"),
            ),
            (
                None,
                Some("trace,lambda_runtime::layers::api_response=trace"),
            ),
        ] {
            let asked = format!("AWS_LAMBDA_LOG_LEVEL={lambda_log_level:?} RUST_LOG={rust_log:?}");
            let logged = logged(lambda_log_level, rust_log);
            for hidden in [
                "secretClientValue",
                "lambda_http debug",
                "runtime api client trace",
            ] {
                assert!(!logged.contains(hidden), "{asked}: {hidden} in\n{logged}");
            }
            assert!(logged.contains("lambda_runtime info"), "{asked}:\n{logged}");
        }
    }

    #[test]
    fn lines_keep_the_invocations_request_id() {
        let out = Captured::default();
        let subscriber = subscriber(filter(None, None), true, out.clone());
        tracing::subscriber::with_default(subscriber, || {
            // lambda_runtime's span around each invocation (an info span: under the cap).
            let span = tracing::info_span!(
                target: "lambda_runtime::layers::trace",
                "Lambda runtime invoke",
                requestId = "8476a536-e9f4-11e8-9739-2dfe598c3fcd"
            );
            let _inside = span.enter();
            tracing::info!(target: "shadowsync_app::jobs", "applied");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(
            line["span"]["requestId"], "8476a536-e9f4-11e8-9739-2dfe598c3fcd",
            "{text}"
        );
    }

    #[test]
    fn everything_else_follows_the_level_asked() {
        assert!(logged(None, Some("trace")).contains("shadowsync trace"));
        assert!(logged(Some("TRACE"), None).contains("shadowsync trace"));
        let default = logged(None, None);
        assert!(default.contains("lambda_runtime info"), "{default}");
        assert!(!default.contains("shadowsync trace"), "{default}");
    }
}
