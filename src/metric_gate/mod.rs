//! Metric gates: a roll or a MaintenancePlan starts no new node while the workloads'
//! own signals say something is wrong: a Prometheus query that returns any series (read
//! as an alert rule: `rate(http_errors_total[1m]) > 0.05`), or an active alert in
//! Alertmanager that matches a set of labels. A Prometheus or Alertmanager that cannot
//! answer holds the roll too: a gate that cannot be read is not a gate that passed.
//!
//! Reading the answers and deciding are pure ([`answer`], [`matchers`], [`Verdict`]);
//! [`check`] does the GETs.
pub mod answer;
pub mod check;
pub mod matchers;

use std::fmt;
use std::str::FromStr;

pub use check::Checker;
pub use matchers::Matchers;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GateError {
    #[error("{url:?} is not an http:// or https:// URL with a host")]
    Url { url: String },
    #[error("a query is empty")]
    EmptyQuery,
    #[error("{part:?} in {whole:?} {why}")]
    Matcher {
        part: String,
        whole: String,
        why: String,
    },
}

/// The base URL of a Prometheus or an Alertmanager: http or https, with a host, and
/// perhaps a path prefix (`http://monitoring/prometheus`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint(String);

impl FromStr for Endpoint {
    type Err = GateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || GateError::Url { url: s.to_string() };
        let uri: hyper::Uri = s.parse().map_err(|_| bad())?;
        let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
        if !scheme_ok || uri.host().is_none_or(str::is_empty) || uri.query().is_some() {
            return Err(bad());
        }
        Ok(Self(s.trim_end_matches('/').to_string()))
    }
}

impl Endpoint {
    /// `path` (from the API's root) with `query` parameters, as a URI.
    fn at(&self, path: &str, query: &[(&str, &str)]) -> Result<hyper::Uri, String> {
        let mut form = form_urlencoded::Serializer::new(String::new());
        for (k, v) in query {
            form.append_pair(k, v);
        }
        let uri = format!("{}{path}?{}", self.0, form.finish());
        uri.parse()
            .map_err(|e: hyper::http::uri::InvalidUri| e.to_string())
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A PromQL expression, not empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query(String);

impl FromStr for Query {
    type Err = GateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err(GateError::EmptyQuery);
        }
        Ok(Self(s.to_string()))
    }
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Prometheus and the queries that pause the roll while they return series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrometheusGate {
    pub url: Endpoint,
    pub queries: Vec<Query>,
}

/// An Alertmanager and the matchers whose active alerts pause the roll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertmanagerGate {
    pub url: Endpoint,
    pub alerts: Vec<Matchers>,
}

/// The metric gates of a roll or a plan: at least one of the two.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gates {
    prometheus: Option<PrometheusGate>,
    alertmanager: Option<AlertmanagerGate>,
}

impl Gates {
    /// The gates, or `None` when neither is given (or given nothing to ask).
    pub fn new(
        prometheus: Option<PrometheusGate>,
        alertmanager: Option<AlertmanagerGate>,
    ) -> Option<Self> {
        let prometheus = prometheus.filter(|p| !p.queries.is_empty());
        let alertmanager = alertmanager.filter(|a| !a.alerts.is_empty());
        (prometheus.is_some() || alertmanager.is_some()).then_some(Self {
            prometheus,
            alertmanager,
        })
    }

    pub fn prometheus(&self) -> Option<&PrometheusGate> {
        self.prometheus.as_ref()
    }

    pub fn alertmanager(&self) -> Option<&AlertmanagerGate> {
        self.alertmanager.as_ref()
    }
}

/// Why a gate holds the roll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// A query returns series.
    Series {
        query: Query,
        first: Vec<String>,
        count: usize,
    },
    /// An active alert matches.
    Alert {
        matchers: Matchers,
        alert: answer::Alert,
        /// How many alerts matched in all.
        count: usize,
    },
    /// Prometheus could not answer a query (unreachable, an error, an odd answer).
    QueryFailed {
        url: Endpoint,
        query: Query,
        error: String,
    },
    /// Alertmanager could not answer.
    AlertsFailed { url: Endpoint, error: String },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Series {
                query,
                first,
                count,
            } => {
                let more = count.saturating_sub(first.len());
                let more = if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                };
                write!(
                    f,
                    "query `{query}` returns {count} series: {}{more}",
                    first.join(", ")
                )
            }
            Self::Alert {
                matchers,
                alert,
                count,
            } => {
                let more = if *count > 1 {
                    format!(" ({count} alerts match)")
                } else {
                    String::new()
                };
                write!(
                    f,
                    "alert {} {} is active (matching {matchers}){more}",
                    alert.name, alert.labels
                )
            }
            Self::QueryFailed { url, query, error } => write!(
                f,
                "Prometheus at {url} gives no answer to `{query}` ({error}), which counts as unhealthy"
            ),
            Self::AlertsFailed { url, error } => write!(
                f,
                "Alertmanager at {url} gives no answer ({error}), which counts as unhealthy"
            ),
        }
    }
}

/// What the gates say now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Healthy,
    /// At least one finding: the first, and the others.
    Unhealthy {
        first: Finding,
        more: Vec<Finding>,
    },
}

impl Verdict {
    /// The verdict of every gate's findings: healthy when there are none.
    pub fn of(findings: Vec<Finding>) -> Self {
        let mut findings = findings.into_iter();
        match findings.next() {
            None => Self::Healthy,
            Some(first) => Self::Unhealthy {
                first,
                more: findings.collect(),
            },
        }
    }

    pub fn is_healthy(&self) -> bool {
        matches!(self, Self::Healthy)
    }

    /// One sentence: the first finding, and how many more there are.
    pub fn why(&self) -> Option<String> {
        match self {
            Self::Healthy => None,
            Self::Unhealthy { first, more } if more.is_empty() => Some(first.to_string()),
            Self::Unhealthy { first, more } => {
                Some(format!("{first}; and {} more gate finding(s)", more.len()))
            }
        }
    }
}

/// What the gates mean for the next start, given the latest approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    /// No gate, or they pass.
    Pass,
    /// A gate fails, but this approval, not used before, lets one node start.
    Approved(String),
    /// A gate fails: no node starts, and why.
    Held(String),
}

impl Hold {
    /// Why no node starts, when a gate holds.
    pub fn held(&self) -> Option<&str> {
        match self {
            Self::Held(why) => Some(why),
            Self::Pass | Self::Approved(_) => None,
        }
    }
}

/// Whether a failing gate holds the next start: an `approval` (a `kordon approve`, an
/// annotation's value) that is not the one `used` last lets one node start.
pub fn hold(verdict: Option<&Verdict>, approval: Option<&str>, used: Option<&str>) -> Hold {
    let Some(why) = verdict.and_then(Verdict::why) else {
        return Hold::Pass;
    };
    match approval.filter(|a| Some(*a) != used) {
        Some(approval) => Hold::Approved(approval.to_string()),
        None => Hold::Held(why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_is_an_http_or_https_url_with_a_host() {
        let e: Endpoint = "http://127.0.0.1:9090/prom/".parse().expect("url");
        assert_eq!(e.to_string(), "http://127.0.0.1:9090/prom");
        let uri = e
            .at("/api/v1/query", &[("query", "rate(x[1m]) > 0.05")])
            .expect("uri");
        assert_eq!(
            uri.to_string(),
            "http://127.0.0.1:9090/prom/api/v1/query?query=rate%28x%5B1m%5D%29+%3E+0.05"
        );
        for bad in ["", "prometheus:9090", "ftp://x", "http://", "http://x/?a=b"] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad:?}");
        }
        assert_eq!(" ".parse::<Query>(), Err(GateError::EmptyQuery));
    }

    #[test]
    fn gates_without_a_query_or_matcher_are_no_gates() {
        let url: Endpoint = "http://p:9090".parse().expect("url");
        let prometheus = |queries: Vec<Query>| PrometheusGate {
            url: url.clone(),
            queries,
        };
        assert_eq!(Gates::new(None, None), None);
        assert_eq!(Gates::new(Some(prometheus(vec![])), None), None);
        let q: Query = "up == 0".parse().expect("query");
        assert!(Gates::new(Some(prometheus(vec![q])), None).is_some());
    }

    #[test]
    fn a_verdict_says_its_first_finding_and_how_many_more() {
        assert_eq!(Verdict::of(vec![]), Verdict::Healthy);
        assert_eq!(Verdict::Healthy.why(), None);
        let series = Finding::Series {
            query: "errors > 0".parse().expect("query"),
            first: vec![r#"{job="shop"}"#.into()],
            count: 4,
        };
        let alert = Finding::Alert {
            matchers: "severity=critical".parse().expect("matchers"),
            alert: answer::Alert {
                name: "ShopErrors".into(),
                labels: r#"{severity="critical"}"#.into(),
            },
            count: 1,
        };
        let verdict = Verdict::of(vec![series, alert.clone()]);
        assert!(!verdict.is_healthy());
        assert_eq!(
            verdict.why().as_deref(),
            Some(
                r#"query `errors > 0` returns 4 series: {job="shop"} and 3 more; and 1 more gate finding(s)"#
            )
        );
        assert_eq!(
            Verdict::of(vec![alert]).why().as_deref(),
            Some(
                r#"alert ShopErrors {severity="critical"} is active (matching severity=critical)"#
            )
        );
        let down = Finding::AlertsFailed {
            url: "http://am:9093".parse().expect("url"),
            error: "tcp connect error: Connection refused".into(),
        };
        assert_eq!(
            down.to_string(),
            "Alertmanager at http://am:9093 gives no answer (tcp connect error: Connection refused), which counts as unhealthy"
        );
    }
}
