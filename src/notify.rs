//! Notifications: a JSON POST to a webhook at a roll's or a MaintenancePlan's turning
//! points (a node started, blocked or failed; the round paused or ended), so the people
//! who own the workloads hear of it where they already look, with the pods and budgets
//! that hold a drain up.
//!
//! Delivery happens in the background, in order, each notification retried on a
//! connection error, a 5xx or a 429 (after 1, 2 and 4 s); it never holds the maintenance
//! up, and a webhook that is down costs only its retries.
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Uri;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::http::{Client, HttpError};

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("webhook {url:?} is not an http:// or https:// URL with a host")]
    Url { url: String },
    #[error("the webhook client: {0}")]
    Client(#[from] HttpError),
}

/// A webhook's URL: http or https, with a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook(Box<Uri>);

impl FromStr for Webhook {
    type Err = NotifyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || NotifyError::Url { url: s.to_string() };
        let uri: Uri = s.parse().map_err(|_| bad())?;
        let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
        if !scheme_ok || uri.host().is_none_or(str::is_empty) {
            return Err(bad());
        }
        Ok(Self(Box::new(uri)))
    }
}

impl std::fmt::Display for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Kind {
    /// A node was taken out: its drain starts.
    Started,
    /// A budget holds a node's drain up (said once per pod).
    Blocked,
    /// No node starts until a window opens or a pause ends.
    Paused,
    /// A node failed.
    Failed,
    /// The round ended (`state` in the message: done, failed, halted, stopped).
    Completed,
}

/// Whose round it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    /// `roll` or `MaintenancePlan`.
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The roll's run id, or the plan's name.
    pub name: String,
}

/// A pod a budget keeps on the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Blocking {
    /// `namespace/name`.
    pub pod: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<String>,
    pub detail: String,
}

/// The JSON body of one POST.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub kind: Kind,
    pub source: Source,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// One sentence for people.
    pub message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub blocking: Vec<Blocking>,
    pub at: jiff::Timestamp,
}

/// How many notifications reached their webhook, and how many did not after every try.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Delivery {
    pub delivered: usize,
    pub failed: usize,
}

/// How many notifications may wait; past that, new ones are dropped (and logged) rather
/// than holding the maintenance up.
const QUEUE: usize = 256;
/// The waits before each retry.
const RETRIES: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
];
/// How long one POST may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Sends notifications to their webhooks from one background task.
pub struct Notifier {
    queue: mpsc::Sender<(Arc<Webhook>, Notification)>,
    task: tokio::task::JoinHandle<()>,
    /// What the task has sent so far.
    delivery: Arc<std::sync::Mutex<Delivery>>,
}

impl Notifier {
    /// Starts the sender (within a Tokio runtime).
    pub fn start() -> Result<Self, NotifyError> {
        let client = crate::http::client()?;
        let (queue, mut rx) = mpsc::channel::<(Arc<Webhook>, Notification)>(QUEUE);
        let delivery: Arc<std::sync::Mutex<Delivery>> = Arc::default();
        let counts = delivery.clone();
        let task = tokio::spawn(async move {
            while let Some((webhook, notification)) = rx.recv().await {
                let taken = deliver(&client, &webhook, &notification).await;
                if let Ok(mut d) = counts.lock() {
                    match taken {
                        true => d.delivered += 1,
                        false => d.failed += 1,
                    }
                }
            }
        });
        Ok(Self {
            queue,
            task,
            delivery,
        })
    }

    /// Queues `notification` for `webhook`; never waits.
    pub fn send(&self, webhook: &Arc<Webhook>, notification: Notification) {
        if let Err(e) = self.queue.try_send((webhook.clone(), notification)) {
            tracing::warn!("notification to {webhook} dropped: {e}");
        }
    }

    /// Lets what is queued go out (for at most `limit`) and says how it went: what is
    /// still unsent then is given up, and counts as neither.
    pub async fn finish(self, limit: Duration) -> Delivery {
        drop(self.queue);
        let abort = self.task.abort_handle();
        if tokio::time::timeout(limit, self.task).await.is_err() {
            abort.abort();
            tracing::warn!("notifications still unsent after {limit:?} were given up");
        }
        self.delivery.lock().map(|d| *d).unwrap_or_default()
    }
}

/// One notification, tried until it is accepted, refused for good, or out of retries.
async fn deliver(client: &Client, webhook: &Webhook, notification: &Notification) -> bool {
    let body = match serde_json::to_vec(notification) {
        Ok(body) => Bytes::from(body),
        Err(e) => {
            tracing::warn!("notification cannot be written as JSON: {e}");
            return false;
        }
    };
    let mut waits = RETRIES.iter();
    loop {
        let request = hyper::Request::post(webhook.0.as_ref().clone())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::USER_AGENT, crate::http::USER_AGENT)
            .body(Full::new(body.clone()));
        let request = match request {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("notification to {webhook} cannot be built: {e}");
                return false;
            }
        };
        let why = match tokio::time::timeout(TIMEOUT, client.request(request)).await {
            Ok(Ok(response)) if response.status().is_success() => return true,
            Ok(Ok(response)) => {
                let status = response.status();
                if !(status.is_server_error() || status.as_u16() == 429) {
                    tracing::warn!("webhook {webhook} refused a notification: {status}");
                    return false;
                }
                status.to_string()
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer in {TIMEOUT:?}"),
        };
        let Some(wait) = waits.next() else {
            tracing::warn!("webhook {webhook} did not take a notification: {why}");
            return false;
        };
        tracing::debug!("webhook {webhook}: {why}; trying again in {wait:?}");
        tokio::time::sleep(*wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhook_is_an_http_or_https_url_with_a_host() {
        assert!("http://127.0.0.1:8080/hook".parse::<Webhook>().is_ok());
        assert!("https://hooks.example.com/x".parse::<Webhook>().is_ok());
        for bad in [
            "",
            "hooks.example.com",
            "ftp://x/y",
            "http://",
            "/just/a/path",
        ] {
            assert!(bad.parse::<Webhook>().is_err(), "{bad:?} is refused");
        }
    }

    #[test]
    fn a_notification_is_camel_case_json_without_empty_fields() {
        let n = Notification {
            kind: Kind::Blocked,
            source: Source {
                kind: "roll",
                namespace: None,
                name: "r1".into(),
            },
            node: Some("n1".into()),
            phase: None,
            message: "a budget holds web-1".into(),
            blocking: vec![Blocking {
                pod: "shop/web-1".into(),
                budget: Some("web".into()),
                detail: "needs 3 healthy".into(),
            }],
            at: jiff::Timestamp::UNIX_EPOCH,
        };
        let json = serde_json::to_value(&n).expect("json");
        assert_eq!(json["kind"], "blocked");
        assert_eq!(
            json["source"],
            serde_json::json!({ "kind": "roll", "name": "r1" })
        );
        assert_eq!(json["blocking"][0]["budget"], "web");
        assert!(json.get("phase").is_none());
    }
}
