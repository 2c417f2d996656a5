//! What the node agent does next for its node, from the node and the NodeMaintenances
//! that name it (pure). The record on the node (`kordon.dev/host-step`) is the agent's
//! memory: a step recorded for a NodeMaintenance is never run again for it, so a
//! reboot that restarts the agent does not reboot the node twice.
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;

use crate::api::NodeMaintenance;
use crate::api::node_maintenance::{HostStep, HostStepKind, StatusPhase};

/// One thing the agent does on its host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    /// Run the agent's reboot command for this NodeMaintenance.
    Reboot { uid: String, name: String },
    /// Run the step's command, stopped after `limit`.
    Command {
        uid: String,
        name: String,
        argv: Vec<String>,
        limit: Duration,
    },
    /// A command this NodeMaintenance's record says runs, which no agent runs any more
    /// (the agent restarted under it): its record, with why it failed, to be written
    /// with the time it ends; it is never run twice.
    Interrupted(HostStep),
}

/// The work due now, if any: the host step of the first NodeMaintenance (by name) that
/// is in its step (drained, volumes detached), has a `reboot` or `command` step and no
/// record of it yet. A reboot is due only while the node still has the bootID the
/// maintenance recorded before its step: a node that rebooted already is not rebooted
/// again. `ran_here`: the NodeMaintenances (by uid) whose step this process ran; their
/// records may show in the watch later than they were written.
pub fn next(
    node: &Node,
    maintenances: &[Arc<NodeMaintenance>],
    ran_here: &BTreeSet<String>,
) -> Option<Work> {
    let boot_id = node
        .status
        .as_ref()
        .and_then(|s| s.node_info.as_ref())
        .map(|i| i.boot_id.as_str());
    let mut in_step: Vec<&Arc<NodeMaintenance>> = maintenances
        .iter()
        .filter(|nm| {
            let status = nm.status.as_ref();
            status.and_then(|s| s.phase) == Some(StatusPhase::Maintaining)
                && status.is_some_and(|s| s.volumes_detached_at.is_some())
        })
        .collect();
    in_step.sort_by_key(|nm| nm.name_any());
    in_step.into_iter().find_map(|nm| {
        let uid = nm.uid().filter(|uid| !ran_here.contains(uid))?;
        let name = nm.name_any();
        let step = &nm.spec.step;
        if let Some(record) = HostStep::on(node, &uid) {
            let unfinished = record.outcome().is_none();
            return (unfinished && record.step == HostStepKind::Command).then(|| {
                Work::Interrupted(HostStep {
                    error: Some("was cut short: the agent restarted while it ran".into()),
                    ..record
                })
            });
        }
        if let Some(command) = &step.command {
            let limit = command.time_limit().ok()?;
            return Some(Work::Command {
                uid,
                name,
                argv: command.command.clone(),
                limit,
            });
        }
        let before = nm.status.as_ref()?.boot_id_before.as_deref();
        (step.reboot.is_some() && before.is_some() && before == boot_id)
            .then_some(Work::Reboot { uid, name })
    })
}

/// Whether a NodeMaintenance of this node is under way: the agent keeps its trigger
/// while one is, so the plan that started it keeps the node.
pub fn under_way(maintenances: &[Arc<NodeMaintenance>]) -> bool {
    maintenances.iter().any(|nm| {
        let phase = nm.status.as_ref().and_then(|s| s.phase);
        !phase.is_some_and(StatusPhase::finished)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::node_maintenance::HOST_STEP;
    use serde_json::json;

    fn node(boot_id: &str, record: Option<serde_json::Value>) -> Node {
        let annotations = record.map_or(json!({}), |r| json!({ HOST_STEP: r.to_string() }));
        serde_json::from_value(json!({
            "metadata": { "name": "n1", "annotations": annotations },
            "status": { "nodeInfo": {
                "bootID": boot_id, "machineID": "", "systemUUID": "", "kernelVersion": "",
                "osImage": "", "containerRuntimeVersion": "", "kubeletVersion": "",
                "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"
            } }
        }))
        .expect("node")
    }

    fn nm(
        name: &str,
        step: serde_json::Value,
        phase: &str,
        detached: bool,
    ) -> Arc<NodeMaintenance> {
        let mut status = json!({ "phase": phase, "bootIdBefore": "boot-1" });
        if detached {
            status["volumesDetachedAt"] = json!("2026-12-06T10:00:00Z");
        }
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "kordon.dev/v1alpha1", "kind": "NodeMaintenance",
                "metadata": { "name": name, "uid": format!("uid-{name}") },
                "spec": { "nodeName": "n1", "step": step },
                "status": status
            }))
            .expect("nm"),
        )
    }

    fn none() -> BTreeSet<String> {
        BTreeSet::new()
    }

    fn reboot() -> serde_json::Value {
        json!({ "reboot": {} })
    }

    #[test]
    fn a_reboot_is_due_once_drained_and_only_while_the_node_has_its_old_boot() {
        let drained = nm("a", reboot(), "Maintaining", true);
        assert_eq!(
            next(
                &node("boot-1", None),
                std::slice::from_ref(&drained),
                &none()
            ),
            Some(Work::Reboot {
                uid: "uid-a".into(),
                name: "a".into()
            })
        );
        // Rebooted already (a new bootID): nothing to do, whatever the record says.
        assert_eq!(next(&node("boot-2", None), &[drained], &none()), None);
        // Still draining, or waiting for its volumes: not yet.
        for early in [
            nm("a", reboot(), "Draining", false),
            nm("a", reboot(), "Maintaining", false),
        ] {
            assert_eq!(next(&node("boot-1", None), &[early], &none()), None);
        }
        // A step the agent does not run.
        let held = nm("a", json!({ "hold": {} }), "Maintaining", true);
        assert_eq!(next(&node("boot-1", None), &[held], &none()), None);
    }

    #[test]
    fn a_recorded_step_is_never_run_again_and_an_orphaned_command_is_failed() {
        let started =
            json!({ "uid": "uid-a", "step": "reboot", "startedAt": "2026-12-06T10:01:00Z" });
        let drained = nm("a", reboot(), "Maintaining", true);
        assert_eq!(
            next(
                &node("boot-1", Some(started)),
                std::slice::from_ref(&drained),
                &none()
            ),
            None
        );
        // Run by this process: its record may not be in the watch yet.
        let here = BTreeSet::from(["uid-a".to_string()]);
        assert_eq!(next(&node("boot-1", None), &[drained], &here), None);

        let command = json!({ "command": { "command": ["true"], "timeout": "1m" } });
        let running =
            json!({ "uid": "uid-b", "step": "command", "startedAt": "2026-12-06T10:01:00Z" });
        let due = nm("b", command.clone(), "Maintaining", true);
        match next(
            &node("boot-1", Some(running)),
            std::slice::from_ref(&due),
            &none(),
        ) {
            Some(Work::Interrupted(record)) => {
                assert_eq!(record.uid, "uid-b");
                assert!(record.outcome().is_some_and(|o| o.is_err()), "{record:?}");
            }
            other => panic!("{other:?}"),
        }
        let finished = json!({ "uid": "uid-b", "step": "command", "startedAt": "2026-12-06T10:01:00Z",
            "finishedAt": "2026-12-06T10:02:00Z", "exitCode": 0 });
        assert_eq!(
            next(
                &node("boot-1", Some(finished)),
                std::slice::from_ref(&due),
                &none()
            ),
            None
        );
        // A record of another NodeMaintenance means nothing to this one.
        let other = json!({ "uid": "uid-z", "step": "command", "startedAt": "2026-12-06T10:01:00Z",
            "finishedAt": "2026-12-06T10:02:00Z", "exitCode": 0 });
        assert_eq!(
            next(&node("boot-1", Some(other)), &[due], &none()),
            Some(Work::Command {
                uid: "uid-b".into(),
                name: "b".into(),
                argv: vec!["true".into()],
                limit: Duration::from_secs(60)
            })
        );
    }

    #[test]
    fn a_finished_maintenance_is_not_under_way() {
        let done = nm("a", reboot(), "Done", true);
        let failed = nm("b", reboot(), "Failed", true);
        assert!(!under_way(&[done.clone(), failed]));
        assert!(under_way(&[done, nm("c", reboot(), "Draining", false)]));
    }
}
