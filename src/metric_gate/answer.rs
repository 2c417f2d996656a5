//! What a Prometheus `/api/v1/query` answer and an Alertmanager `/api/v2/alerts` answer
//! mean for a gate, read from their bytes: pure, so every odd answer is a unit test.
use std::collections::BTreeMap;

use serde::Deserialize;

/// A Prometheus instant query's answer, as a gate reads it: like an alert rule, any
/// series in the result means unhealthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryAnswer {
    /// An empty vector: healthy.
    Empty,
    /// These series (their labels, `{job="shop"}`), and how many there are in all.
    Series { first: Vec<String>, count: usize },
    /// Prometheus did not evaluate it (bad PromQL, a timeout), or answered something a
    /// gate cannot read (a scalar, a range vector, not JSON).
    Failed(String),
}

/// How many series an answer names in its sentence.
const NAMED: usize = 3;

#[derive(Deserialize)]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    #[serde(default)]
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct Sample {
    #[serde(default)]
    metric: BTreeMap<String, String>,
}

/// Reads Prometheus's answer (`status`: its HTTP status, for an answer that is not
/// JSON). Prometheus answers a bad query with 400 or 422 and a JSON error.
pub fn query(status: u16, body: &[u8]) -> QueryAnswer {
    let Ok(envelope) = serde_json::from_slice::<Envelope>(body) else {
        return QueryAnswer::Failed(format!(
            "HTTP {status} with an answer that is not Prometheus's JSON"
        ));
    };
    if envelope.status != "success" {
        let kind = envelope.error_type.unwrap_or_else(|| "error".into());
        let error = envelope.error.unwrap_or_default();
        return QueryAnswer::Failed(format!("{kind}: {error}"));
    }
    let Some(data) = envelope.data else {
        return QueryAnswer::Failed("an answer without data".into());
    };
    if data.result_type != "vector" {
        return QueryAnswer::Failed(format!(
            "the query gives a {}, not an instant vector: write it as an alert rule's expression, e.g. `rate(x[1m]) > 0.05`",
            data.result_type
        ));
    }
    let Ok(samples) = serde_json::from_value::<Vec<Sample>>(data.result) else {
        return QueryAnswer::Failed("a vector that is not a list of series".into());
    };
    if samples.is_empty() {
        return QueryAnswer::Empty;
    }
    QueryAnswer::Series {
        first: samples
            .iter()
            .take(NAMED)
            .map(|s| labels(&s.metric))
            .collect(),
        count: samples.len(),
    }
}

/// An active alert that matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// Its `alertname` label.
    pub name: String,
    /// Its other labels, `{severity="critical", team="shop"}`.
    pub labels: String,
}

#[derive(Deserialize)]
struct Gettable {
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    status: Option<AlertStatus>,
}

#[derive(Deserialize)]
struct AlertStatus {
    #[serde(default)]
    state: String,
}

/// Reads Alertmanager's list of alerts (asked for active, not silenced, not inhibited
/// ones); an alert it still calls suppressed is left out all the same.
pub fn alerts(status: u16, body: &[u8]) -> Result<Vec<Alert>, String> {
    if !(200..300).contains(&status) {
        let text = String::from_utf8_lossy(body);
        let text: String = text.trim().chars().take(200).collect();
        return Err(format!("HTTP {status}: {text}"));
    }
    let list: Vec<Gettable> = serde_json::from_slice(body)
        .map_err(|_| "an answer that is not Alertmanager's list of alerts".to_string())?;
    Ok(list
        .into_iter()
        .filter(|a| a.status.as_ref().is_none_or(|s| s.state != "suppressed"))
        .map(|mut a| Alert {
            name: a.labels.remove("alertname").unwrap_or_default(),
            labels: labels(&a.labels),
        })
        .collect())
}

/// `{a="1", b="2"}`.
fn labels(labels: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", pairs.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_vector_is_healthy_and_any_series_is_not() {
        let empty = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(query(200, empty), QueryAnswer::Empty);
        let two = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"job":"shop","instance":"a"},"value":[1.5,"0.2"]},
            {"metric":{},"value":[1.5,"1"]}]}}"#;
        assert_eq!(
            query(200, two),
            QueryAnswer::Series {
                first: vec![r#"{instance="a", job="shop"}"#.into(), "{}".into()],
                count: 2
            }
        );
    }

    #[test]
    fn a_query_prometheus_cannot_evaluate_is_a_failure_with_its_error() {
        let bad = br#"{"status":"error","errorType":"bad_data","error":"parse error: unexpected end of input"}"#;
        assert_eq!(
            query(400, bad),
            QueryAnswer::Failed("bad_data: parse error: unexpected end of input".into())
        );
        assert!(
            matches!(query(502, b"<html>bad gateway</html>"), QueryAnswer::Failed(m) if m.contains("HTTP 502"))
        );
        let scalar = br#"{"status":"success","data":{"resultType":"scalar","result":[1.5,"1"]}}"#;
        assert!(matches!(query(200, scalar), QueryAnswer::Failed(m) if m.contains("scalar")));
    }

    #[test]
    fn active_alerts_are_read_with_their_name_and_labels() {
        let body = br#"[
          {"labels":{"alertname":"ShopErrors","severity":"critical"},"status":{"state":"active","silencedBy":[],"inhibitedBy":[]}},
          {"labels":{"alertname":"Quiet"},"status":{"state":"suppressed","silencedBy":["x"],"inhibitedBy":[]}}]"#;
        assert_eq!(
            alerts(200, body),
            Ok(vec![Alert {
                name: "ShopErrors".into(),
                labels: r#"{severity="critical"}"#.into()
            }])
        );
        assert_eq!(alerts(200, b"[]"), Ok(vec![]));
        assert!(alerts(400, b"bad filter").is_err_and(|e| e.contains("bad filter")));
        assert!(alerts(200, b"{}").is_err());
    }
}
