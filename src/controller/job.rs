//! The `job` step: the operator's pod, run as a Job on the drained node. The Job is
//! owned by its NodeMaintenance, so deleting the object lets the garbage collector
//! remove the Job too.
use futures::Stream;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::Toleration;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};

use crate::api::NodeMaintenance;
use crate::api::node_maintenance::{HELD_BY, JobStep};
use crate::cluster::{ClusterError, Connection};

/// The label on every Job kordon creates, which the controller watches them by.
const MANAGED_BY: &str = "app.kubernetes.io/managed-by";

/// The controller's watch of the Jobs it creates: a store a NodeMaintenance reads its
/// Job from, and the stream of changes that wakes it (through [`owner`]) when its Job
/// changes: its end, at once.
pub(super) fn watched(
    client: &kube::Client,
) -> (
    Store<Job>,
    impl Stream<Item = Result<Job, watcher::Error>> + Send + 'static,
) {
    let api: Api<Job> = Api::all(client.clone());
    let config = watcher::Config::default().labels(&format!("{MANAGED_BY}=kordon"));
    let (store, writer) = reflector::store();
    let stream = watcher(api, config)
        .default_backoff()
        .modify(|job| job.managed_fields_mut().clear())
        .reflect(writer)
        .applied_objects();
    (store, stream)
}

/// The NodeMaintenance a Job names by annotation: kube-runtime's `owns` would look for
/// the owner in the Job's namespace, and a NodeMaintenance has none.
pub(super) fn owner(job: Job) -> Option<ObjectRef<NodeMaintenance>> {
    let held_by = job.metadata.annotations?.remove(HELD_BY)?;
    Some(ObjectRef::new(&held_by))
}

/// Where the Job stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    Running(String),
    Succeeded,
    Failed(String),
}

/// Creates the Job when it does not exist yet, and says where it stands: from the
/// watch of Jobs once it has seen it, from the API until then.
pub async fn ensure(
    conn: &Connection,
    jobs: &Store<Job>,
    nm: &NodeMaintenance,
    step: &JobStep,
) -> Result<JobState, ClusterError> {
    let name = name_of(nm);
    let what = format!("job {}/{name}", step.namespace);
    if let Some(job) = jobs.get(&ObjectRef::new(&name).within(&step.namespace)) {
        return Ok(state_of(&job, &what));
    }
    let api: Api<Job> = Api::namespaced(conn.client.clone(), &step.namespace);
    let job = match api.create(&PostParams::default(), &build(nm, step)).await {
        Ok(job) => job,
        // Created before the watch saw it (by this process, or before a restart).
        Err(kube::Error::Api(s)) if s.code == 409 => api
            .get(&name)
            .await
            .map_err(|e| conn.error(format!("read {what}"), e))?,
        Err(e) => return Err(conn.error(format!("create {what} (create jobs)"), e)),
    };
    Ok(state_of(&job, &what))
}

fn name_of(nm: &NodeMaintenance) -> String {
    let name = format!("kordon-{}", nm.name_any());
    name.chars()
        .take(63)
        .collect::<String>()
        .trim_end_matches('-')
        .to_string()
}

/// The operator's pod template, pinned to the node and tolerating its cordon.
fn build(nm: &NodeMaintenance, step: &JobStep) -> Job {
    let mut template = step.template.clone();
    // Marks the pod as this maintenance's, which kordon's drains leave on the node.
    template
        .metadata
        .get_or_insert_default()
        .annotations
        .get_or_insert_default()
        .insert(crate::classify::MAINTENANCE_JOB.to_string(), nm.name_any());
    let pod = template.spec.get_or_insert_default();
    pod.node_name = Some(nm.spec.node_name.clone());
    pod.restart_policy
        .get_or_insert_with(|| "Never".to_string());
    pod.tolerations.get_or_insert_default().push(Toleration {
        key: Some("node.kubernetes.io/unschedulable".into()),
        operator: Some("Exists".into()),
        effect: Some("NoSchedule".into()),
        ..Default::default()
    });
    Job {
        metadata: ObjectMeta {
            name: Some(name_of(nm)),
            namespace: Some(step.namespace.clone()),
            labels: Some([(MANAGED_BY.to_string(), "kordon".to_string())].into()),
            // A name may be longer than a label value may be.
            annotations: Some([(HELD_BY.to_string(), nm.name_any())].into()),
            owner_references: nm.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            template,
            backoff_limit: Some(step.backoff_limit.unwrap_or(0)),
            ..Default::default()
        }),
        status: None,
    }
}

fn state_of(job: &Job, what: &str) -> JobState {
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let holds = |type_: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == "True")
    };
    if holds("Complete").is_some() {
        return JobState::Succeeded;
    }
    if let Some(failed) = holds("Failed") {
        let reason = failed.reason.as_deref().unwrap_or("Failed");
        let message = failed.message.as_deref().unwrap_or_default();
        return JobState::Failed(
            format!("{what} failed: {reason} {message}")
                .trim()
                .to_string(),
        );
    }
    JobState::Running(format!("{what} runs on the node"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nm() -> NodeMaintenance {
        serde_json::from_value(json!({
            "apiVersion": "kordon.dev/v1alpha1", "kind": "NodeMaintenance",
            "metadata": { "name": "node-2-os", "uid": "u-1" },
            "spec": { "nodeName": "node-2", "step": { "job": {
                "namespace": "ops",
                "template": { "spec": { "containers": [{ "name": "update", "image": "os-updater" }] } },
            }}},
        }))
        .expect("NodeMaintenance")
    }

    #[test]
    fn the_job_runs_on_the_node_once_owned_by_its_maintenance() {
        let nm = nm();
        let step = nm.spec.step.job.clone().expect("job step");
        let job = build(&nm, &step);
        let spec = job.spec.expect("spec");
        let pod = spec.template.spec.expect("pod");
        assert_eq!(pod.node_name.as_deref(), Some("node-2"));
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert!(
            pod.tolerations
                .unwrap_or_default()
                .iter()
                .any(|t| t.key.as_deref() == Some("node.kubernetes.io/unschedulable"))
        );
        assert_eq!(spec.backoff_limit, Some(0));
        let owner = &job.metadata.owner_references.expect("owner")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("NodeMaintenance", "node-2-os")
        );
    }

    #[test]
    fn a_job_is_done_when_complete_and_failed_with_its_reason() {
        let job = |type_: &str| -> Job {
            serde_json::from_value(json!({ "status": { "conditions": [
                { "type": type_, "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit" }
            ]}}))
            .expect("job")
        };
        assert_eq!(state_of(&job("Complete"), "job ops/x"), JobState::Succeeded);
        assert_eq!(
            state_of(&job("Failed"), "job ops/x"),
            JobState::Failed("job ops/x failed: BackoffLimitExceeded Job has reached the specified backoff limit".into())
        );
        assert!(matches!(
            state_of(&Job::default(), "job ops/x"),
            JobState::Running(_)
        ));
    }
}
