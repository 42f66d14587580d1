//! CloudWatch embedded metric format: a JSON log line that CloudWatch Logs turns into metrics,
//! with no API call and no agent (<https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>).
//! Written by hand: the format is one small JSON object, and the crates that emit it want the
//! `metrics` facade and a global recorder, which a function flushing once per invocation does
//! not need.

use serde_json::{json, Map, Value};

pub const NAMESPACE: &str = "shadowsync";

#[derive(Debug, Clone, Copy)]
pub enum Unit {
    Count,
    Milliseconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

/// One metric: a value, or several (CloudWatch takes an array of up to 100 values per line).
#[derive(Debug, Clone)]
pub struct Metric {
    pub name: &'static str,
    pub unit: Unit,
    pub values: Vec<f64>,
}

impl Metric {
    pub fn count(name: &'static str, n: u64) -> Self {
        Self {
            name,
            unit: Unit::Count,
            values: vec![n as f64],
        }
    }

    pub fn milliseconds(name: &'static str, values: Vec<f64>) -> Self {
        Self {
            name,
            unit: Unit::Milliseconds,
            values,
        }
    }
}

/// Counters by name, as metrics.
pub fn counts(counters: &[(&'static str, u64)]) -> Vec<Metric> {
    counters
        .iter()
        .map(|(name, n)| Metric::count(name, *n))
        .collect()
}

/// The EMF line for `metrics`, under dimension `Function = function`. Metrics without values
/// are left out; `None` when none is left.
pub fn line(function: &str, timestamp_ms: i64, metrics: &[Metric]) -> Option<String> {
    let metrics: Vec<&Metric> = metrics.iter().filter(|m| !m.values.is_empty()).collect();
    if metrics.is_empty() {
        return None;
    }
    let mut root = Map::new();
    root.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Function"]],
                "Metrics": metrics.iter().map(|m| json!({"Name": m.name, "Unit": m.unit.as_str()})).collect::<Vec<_>>(),
            }],
        }),
    );
    root.insert("Function".into(), Value::from(function));
    // CloudWatch accepts at most 100 values in one array; keep the latest 100.
    for m in metrics {
        let values = &m.values[m.values.len().saturating_sub(100)..];
        let value = match values {
            [one] => json!(one),
            many => json!(many),
        };
        root.insert(m.name.into(), value);
    }
    Some(Value::Object(root).to_string())
}

/// Writes the line to standard output, where the Lambda log agent picks it up.
pub fn emit(function: &str, metrics: &[Metric]) {
    if let Some(line) = line(function, chrono::Utc::now().timestamp_millis(), metrics) {
        println!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_declares_each_metric_and_carries_its_values() {
        let line = line(
            "provisioner",
            1_700_000_000_000,
            &[
                Metric::count("JobsApplied", 3),
                Metric::count("Conflicts", 0),
                Metric::milliseconds("NotificationToAppliedLatency", vec![120.0, 340.5]),
                Metric::milliseconds("Unused", vec![]),
            ],
        )
        .expect("a line");
        let v: Value = serde_json::from_str(&line).unwrap();
        let declared = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(declared["Namespace"], "shadowsync");
        assert_eq!(declared["Dimensions"], json!([["Function"]]));
        let names: Vec<&str> = declared["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["JobsApplied", "Conflicts", "NotificationToAppliedLatency"]
        );
        assert_eq!(v["_aws"]["Timestamp"], 1_700_000_000_000i64);
        assert_eq!(v["Function"], "provisioner");
        assert_eq!(v["JobsApplied"], 3.0);
        assert_eq!(v["NotificationToAppliedLatency"], json!([120.0, 340.5]));
        assert!(v.get("Unused").is_none());
    }

    #[test]
    fn no_values_no_line_and_at_most_100_values() {
        assert!(line("f", 0, &[Metric::milliseconds("X", vec![])]).is_none());
        let many: Vec<f64> = (0..250).map(f64::from).collect();
        let v: Value =
            serde_json::from_str(&line("f", 0, &[Metric::milliseconds("X", many)]).unwrap())
                .unwrap();
        let values = v["X"].as_array().unwrap();
        assert_eq!(values.len(), 100);
        assert_eq!(values[0], 150.0);
    }
}
