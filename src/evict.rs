//! One eviction request and what the API's answer means. A 429 is not an error: it
//! is a PodDisruptionBudget saying "not yet", with its numbers in the status causes.
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, EvictParams, PostParams, Preconditions};
use serde::Serialize;

use crate::cluster::{ClusterError, Connection};
use crate::pod::PodKey;

/// How a pod is asked to leave.
#[derive(Debug, Clone, Copy)]
pub struct Request {
    /// Seconds the pod gets to shut down; `None` uses the pod's own.
    pub grace_period: Option<u32>,
    /// `--disable-eviction`: a plain DELETE that bypasses every budget.
    pub bypass_budgets: bool,
    /// `--dry-run=server`: the API server checks the request but changes nothing.
    pub server_dry_run: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted: the pod is terminating.
    Accepted,
    /// Already gone (404), or replaced by a new pod under the same name.
    AlreadyGone,
    /// A disruption budget does not allow it now.
    Blocked(Blocked),
}

/// A 429 from the Eviction API with what the budget said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Blocked {
    /// The PodDisruptionBudget's name, when the API named it.
    pub budget: Option<String>,
    /// e.g. "The disruption budget web needs 3 healthy pods and has 3 currently".
    pub detail: String,
}

#[derive(Debug, thiserror::Error)]
pub enum EvictError {
    #[error(
        "pod {pod} is covered by several PodDisruptionBudgets ({}), and the Eviction API refuses such pods; leave one budget per pod",
        .budgets.join(", ")
    )]
    SeveralBudgets { pod: PodKey, budgets: Vec<String> },
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// Asks the API server to evict (or delete) exactly this pod: the UID precondition
/// makes sure a new pod that took the same name is never hit.
pub async fn evict(
    conn: &Connection,
    target: &Pod,
    request: Request,
) -> Result<Outcome, EvictError> {
    let namespace = target.metadata.namespace.as_deref().unwrap_or_default();
    let name = target.metadata.name.as_deref().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(conn.client.clone(), namespace);
    let delete = DeleteParams {
        dry_run: request.server_dry_run,
        grace_period_seconds: request.grace_period,
        preconditions: Some(Preconditions {
            uid: target.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    let result = if request.bypass_budgets {
        api.delete(name, &delete).await.map(|_| ())
    } else {
        let params = EvictParams {
            delete_options: Some(delete),
            post_options: PostParams {
                dry_run: request.server_dry_run,
                ..Default::default()
            },
        };
        api.evict(name, &params).await.map(|_| ())
    };
    let verb = if request.bypass_budgets {
        "delete"
    } else {
        "evict"
    };
    match result {
        Ok(()) => Ok(Outcome::Accepted),
        Err(kube::Error::Api(status)) => match status.code {
            404 | 409 => Ok(Outcome::AlreadyGone),
            429 => Ok(Outcome::Blocked(blocked(&status))),
            500 if status.message.contains("more than one PodDisruptionBudget") => {
                Err(EvictError::SeveralBudgets {
                    pod: PodKey::of(target),
                    budgets: crate::budget::covering(conn, target).await?,
                })
            }
            _ => Err(conn
                .error(
                    format!("{verb} pod {}", PodKey::of(target)),
                    kube::Error::Api(status),
                )
                .into()),
        },
        Err(e) => Err(conn
            .error(format!("{verb} pod {}", PodKey::of(target)), e)
            .into()),
    }
}

/// Reads the budget's name and numbers from the 429's causes; kubectl drops these.
fn blocked(status: &kube::core::Status) -> Blocked {
    let cause = status
        .details
        .as_ref()
        .and_then(|d| d.causes.iter().find(|c| c.reason == "DisruptionBudget"));
    match cause {
        Some(c) => Blocked {
            budget: c
                .message
                .strip_prefix("The disruption budget ")
                .and_then(|rest| rest.split_whitespace().next())
                .map(str::to_string),
            detail: c.message.clone(),
        },
        None => Blocked {
            budget: None,
            detail: status.message.clone(),
        },
    }
}
