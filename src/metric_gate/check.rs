//! Asking Prometheus and Alertmanager: every query and every set of matchers at once,
//! each GET with a deadline, their answers read by [`super::answer`].
use std::time::Duration;

use super::answer::{self, QueryAnswer};
use super::{AlertmanagerGate, Finding, Gates, Matchers, PrometheusGate, Query, Verdict};
use crate::http::{self, Client, HttpError};

/// How long one question may take; a gate that does not answer in time holds the roll.
const TIMEOUT: Duration = Duration::from_secs(4);

/// Asks the gates, with one HTTP client for every question.
#[derive(Clone)]
pub struct Checker {
    client: Client,
}

impl Checker {
    /// Builds the client (within a Tokio runtime).
    pub fn new() -> Result<Self, HttpError> {
        Ok(Self {
            client: http::client()?,
        })
    }

    /// What every gate says now.
    pub async fn verdict(&self, gates: &Gates) -> Verdict {
        let mut asked = Vec::new();
        if let Some(p) = gates.prometheus() {
            asked.extend(
                p.queries
                    .iter()
                    .map(|q| self.query(p, q))
                    .map(futures::FutureExt::boxed),
            );
        }
        if let Some(a) = gates.alertmanager() {
            asked.extend(
                a.alerts
                    .iter()
                    .map(|m| self.alerts(a, m))
                    .map(futures::FutureExt::boxed),
            );
        }
        let findings = futures::future::join_all(asked).await;
        Verdict::of(findings.into_iter().flatten().collect())
    }

    /// `GET /api/v1/query?query=…`: any series is a finding.
    async fn query(&self, gate: &PrometheusGate, query: &Query) -> Option<Finding> {
        let failed = |error: String| {
            Some(Finding::QueryFailed {
                url: gate.url.clone(),
                query: query.clone(),
                error,
            })
        };
        let uri = match gate.url.at("/api/v1/query", &[("query", &query.0)]) {
            Ok(uri) => uri,
            Err(e) => return failed(e),
        };
        let (status, body) = match http::get(&self.client, uri, TIMEOUT).await {
            Ok(answer) => answer,
            Err(e) => return failed(e.to_string()),
        };
        match answer::query(status.as_u16(), &body) {
            QueryAnswer::Empty => None,
            QueryAnswer::Series { first, count } => Some(Finding::Series {
                query: query.clone(),
                first,
                count,
            }),
            QueryAnswer::Failed(error) => failed(error),
        }
    }

    /// `GET /api/v2/alerts?active=true&silenced=false&inhibited=false&filter=…`: any
    /// alert is a finding.
    async fn alerts(&self, gate: &AlertmanagerGate, matchers: &Matchers) -> Option<Finding> {
        let failed = |error: String| {
            Some(Finding::AlertsFailed {
                url: gate.url.clone(),
                error,
            })
        };
        let filters: Vec<String> = matchers
            .iter()
            .map(super::matchers::Matcher::filter)
            .collect();
        let mut params = vec![
            ("active", "true"),
            ("silenced", "false"),
            ("inhibited", "false"),
        ];
        params.extend(filters.iter().map(|f| ("filter", f.as_str())));
        let uri = match gate.url.at("/api/v2/alerts", &params) {
            Ok(uri) => uri,
            Err(e) => return failed(e),
        };
        let (status, body) = match http::get(&self.client, uri, TIMEOUT).await {
            Ok(answer) => answer,
            Err(e) => return failed(e.to_string()),
        };
        match answer::alerts(status.as_u16(), &body) {
            Ok(alerts) => {
                let count = alerts.len();
                let alert = alerts.into_iter().next()?;
                Some(Finding::Alert {
                    matchers: matchers.clone(),
                    alert,
                    count,
                })
            }
            Err(error) => failed(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metric_gate::{AlertmanagerGate, PrometheusGate};

    #[tokio::test]
    async fn a_gate_that_cannot_be_reached_holds_and_says_so() {
        // A loopback port nothing listens on any more.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a port")
            .port();
        let url: super::super::Endpoint = format!("http://127.0.0.1:{port}").parse().expect("url");
        let gates = Gates::new(
            Some(PrometheusGate {
                url: url.clone(),
                queries: vec!["up == 0".parse().expect("query")],
            }),
            Some(AlertmanagerGate {
                url: url.clone(),
                alerts: vec!["severity=critical".parse().expect("matchers")],
            }),
        )
        .expect("gates");
        let verdict = Checker::new().expect("client").verdict(&gates).await;
        let why = verdict.why().expect("unhealthy");
        assert!(
            why.starts_with(&format!(
                "Prometheus at {url} gives no answer to `up == 0` ("
            )),
            "{why}"
        );
        assert!(why.contains("refused"), "{why}");
        assert!(why.ends_with("; and 1 more gate finding(s)"), "{why}");
    }
}
