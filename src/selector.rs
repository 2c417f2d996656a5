//! Label selector evaluation (`matchLabels` and `matchExpressions`), as the API
//! server does it. An empty selector matches everything.
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = selector.match_expressions.iter().flatten().all(|e| {
        let value = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    by_labels && by_expressions
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sel(v: serde_json::Value) -> LabelSelector {
        serde_json::from_value(v).expect("selector")
    }

    #[test]
    fn labels_and_expressions_must_all_hold() {
        let labels: BTreeMap<String, String> = [
            ("app".to_string(), "web".to_string()),
            ("tier".into(), "fe".into()),
        ]
        .into();
        assert!(matches(&sel(json!({})), &labels));
        assert!(matches(
            &sel(json!({ "matchLabels": { "app": "web" } })),
            &labels
        ));
        assert!(!matches(
            &sel(json!({ "matchLabels": { "app": "db" } })),
            &labels
        ));
        let expr = json!({ "matchExpressions": [
            { "key": "tier", "operator": "In", "values": ["fe", "be"] },
            { "key": "canary", "operator": "DoesNotExist" },
        ]});
        assert!(matches(&sel(expr), &labels));
        let not_in = json!({ "matchExpressions": [{ "key": "app", "operator": "NotIn", "values": ["web"] }] });
        assert!(!matches(&sel(not_in), &labels));
    }
}
