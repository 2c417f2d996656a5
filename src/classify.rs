//! Every pod on a node gets a verdict before anything changes, as `kubectl drain` does
//! with its chain of filters, but as a type: a refused pod says which flag would change
//! the verdict, and all of a pod's reasons are kept, not just the last one.
use k8s_openapi::api::core::v1::Pod;
use serde::Serialize;

use crate::fence;
use crate::flag::Flag;
use crate::placement;
use crate::pod;

/// The decisions a user makes with flags, named as in `kubectl drain`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Permissions {
    /// `--ignore-daemonsets`: leave DaemonSet pods running (they cannot move anyway).
    pub ignore_daemonsets: bool,
    /// `--delete-emptydir-data`: evict pods whose emptyDir data is lost with them.
    pub delete_emptydir_data: bool,
    /// `--force`: evict pods that no controller will recreate.
    pub force: bool,
    /// `--ignore-do-not-disrupt`: evict pods that other tools' markers protect
    /// (see [`DO_NOT_DISRUPT`]).
    pub ignore_do_not_disrupt: bool,
    /// `--evict-daemonsets`: evict DaemonSet pods too, last, with the node tainted so
    /// their DaemonSets do not put them back (see [`crate::fence::draining_taint`]).
    pub evict_daemonsets: bool,
}

/// The annotations, and their values, by which other node tools (Karpenter, the
/// cluster autoscaler) mark a pod as never to be disrupted; kordon honours them too.
pub const DO_NOT_DISRUPT: [(&str, &str); 2] = [
    ("karpenter.sh/do-not-disrupt", "true"),
    ("cluster-autoscaler.kubernetes.io/safe-to-evict", "false"),
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "camelCase")]
pub enum Verdict {
    /// Goes through the Eviction API.
    Evict(Eviction),
    /// Stays where it is and does not block the drain.
    Skip { reason: SkipReason },
    /// Already being deleted: waited for, not evicted again.
    AwaitTermination,
    /// Blocks the drain until the user passes the named flags.
    Refuse { reasons: Refusals },
}

/// Why a pod may be evicted, and what is lost with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Eviction {
    pub replacement: Replacement,
    /// emptyDir volumes whose data goes with the pod (allowed by --delete-emptydir-data).
    pub lost_volumes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "by", rename_all = "camelCase")]
pub enum Replacement {
    /// Its controller recreates it elsewhere.
    ByController { kind: String, name: String },
    /// Finished (Succeeded/Failed): removing it loses nothing.
    NotNeeded { phase: String },
    /// No controller: gone for good (allowed by --force).
    None,
    /// A DaemonSet's pod (allowed by --evict-daemonsets): its DaemonSet recreates it on
    /// this node once kordon's taint is off, and nowhere else.
    DaemonSet { name: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum SkipReason {
    /// Managed by a DaemonSet, which would put it straight back (--ignore-daemonsets).
    DaemonSet,
    /// A static pod's mirror; only the kubelet's manifest can remove it.
    Mirror,
    /// A DaemonSet pod that tolerates kordon's draining taint (e.g. every taint, with
    /// `operator: Exists` and no key): evicted, it would come straight back, so
    /// --evict-daemonsets leaves it in place.
    ToleratesDrainingTaint,
    /// The pod of a NodeMaintenance's Job, pinned to the node to do its maintenance:
    /// kordon's own work, which a drain of that node (again, after a restart) leaves.
    MaintenanceJob,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "camelCase")]
pub enum Refusal {
    DaemonSet,
    LocalStorage {
        volumes: Vec<String>,
    },
    Unmanaged,
    /// Marked as never to be disrupted (`annotation` = the marker's `key=value`).
    DoNotDisrupt {
        annotation: String,
    },
    /// No eviction can ever fit the pod's budget (found by [`crate::guard`]).
    Budget {
        #[serde(flatten)]
        impossible: crate::guard::Impossible,
        flag: Flag,
    },
}

impl Refusal {
    /// The flag that turns this refusal into a decision.
    pub fn flag(&self) -> Flag {
        match self {
            Self::DaemonSet => Flag::IgnoreDaemonSets,
            Self::LocalStorage { .. } => Flag::DeleteEmptyDirData,
            Self::Unmanaged => Flag::Force,
            Self::DoNotDisrupt { .. } => Flag::IgnoreDoNotDisrupt,
            Self::Budget { flag, .. } => *flag,
        }
    }

    pub fn explain(&self) -> String {
        match self {
            Self::DaemonSet => {
                "managed by a DaemonSet, which would recreate it on this node".into()
            }
            Self::LocalStorage { volumes } => {
                format!(
                    "uses emptyDir ({}), whose data would be lost",
                    volumes.join(", ")
                )
            }
            Self::Unmanaged => "has no controller, so nothing would recreate it".into(),
            Self::DoNotDisrupt { annotation } => {
                format!("is marked {annotation}: its owner asked that it never be disrupted")
            }
            Self::Budget { impossible, .. } => impossible.explain(),
        }
    }
}

/// At least one refusal: a `Refuse` verdict without a reason cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "Vec<Refusal>")]
pub struct Refusals {
    first: Refusal,
    rest: Vec<Refusal>,
}

impl Refusals {
    pub fn one(refusal: Refusal) -> Self {
        Self {
            first: refusal,
            rest: Vec::new(),
        }
    }

    fn from_vec(mut all: Vec<Refusal>) -> Option<Self> {
        if all.is_empty() {
            return None;
        }
        let first = all.remove(0);
        Some(Self { first, rest: all })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Refusal> {
        std::iter::once(&self.first).chain(&self.rest)
    }
}

impl From<Refusals> for Vec<Refusal> {
    fn from(r: Refusals) -> Self {
        std::iter::once(r.first).chain(r.rest).collect()
    }
}

const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// Set by the controller on the pod template of a NodeMaintenance's Job, with the
/// NodeMaintenance's name: the pods of a Job that carry it are kordon's own work.
pub const MAINTENANCE_JOB: &str = "kordon.dev/maintenance-job";

/// A pod of a Job marked as a NodeMaintenance's (see [`MAINTENANCE_JOB`]).
fn is_maintenance_job(pod: &Pod) -> bool {
    let marked = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(MAINTENANCE_JOB));
    marked && pod::controller(pod).is_some_and(|o| o.kind == "Job")
}

/// Decides what draining does with one pod.
pub fn classify(pod: &Pod, permissions: Permissions) -> Verdict {
    if pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(MIRROR_ANNOTATION))
    {
        return Verdict::Skip {
            reason: SkipReason::Mirror,
        };
    }
    if pod.metadata.deletion_timestamp.is_some() {
        return Verdict::AwaitTermination;
    }
    if is_maintenance_job(pod) {
        return Verdict::Skip {
            reason: SkipReason::MaintenanceJob,
        };
    }
    if let Some(phase) = pod::finished_phase(pod) {
        return Verdict::Evict(Eviction {
            replacement: Replacement::NotNeeded {
                phase: phase.to_string(),
            },
            lost_volumes: Vec::new(),
        });
    }

    let controller = pod::controller(pod);
    let daemon = pod::is_daemon(pod);
    if daemon && permissions.evict_daemonsets && placement::tolerated(pod, &fence::draining_taint())
    {
        return Verdict::Skip {
            reason: SkipReason::ToleratesDrainingTaint,
        };
    }
    if daemon && !permissions.evict_daemonsets {
        return if permissions.ignore_daemonsets {
            Verdict::Skip {
                reason: SkipReason::DaemonSet,
            }
        } else {
            Verdict::Refuse {
                reasons: Refusals {
                    first: Refusal::DaemonSet,
                    rest: Vec::new(),
                },
            }
        };
    }

    let mut refusals = Vec::new();
    if !permissions.ignore_do_not_disrupt
        && let Some(annotation) = do_not_disrupt(pod)
    {
        refusals.push(Refusal::DoNotDisrupt { annotation });
    }
    let volumes = pod::empty_dir_volumes(pod);
    if !volumes.is_empty() && !permissions.delete_emptydir_data {
        refusals.push(Refusal::LocalStorage {
            volumes: volumes.clone(),
        });
    }
    if controller.is_none() && !permissions.force {
        refusals.push(Refusal::Unmanaged);
    }
    if let Some(reasons) = Refusals::from_vec(refusals) {
        return Verdict::Refuse { reasons };
    }
    Verdict::Evict(Eviction {
        replacement: match controller {
            Some(c) if daemon => Replacement::DaemonSet {
                name: c.name.clone(),
            },
            Some(c) => Replacement::ByController {
                kind: c.kind.clone(),
                name: c.name.clone(),
            },
            None => Replacement::None,
        },
        lost_volumes: volumes,
    })
}

/// The first [`DO_NOT_DISRUPT`] marker the pod carries, as `key=value`.
fn do_not_disrupt(pod: &Pod) -> Option<String> {
    let annotations = pod.metadata.annotations.as_ref()?;
    DO_NOT_DISRUPT
        .iter()
        .find(|(key, value)| annotations.get(*key).map(String::as_str) == Some(*value))
        .map(|(key, value)| format!("{key}={value}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(extra: serde_json::Value) -> Pod {
        let mut base = json!({
            "metadata": { "name": "p", "namespace": "ns" },
            "spec": { "containers": [{ "name": "c", "image": "nginx" }] },
            "status": { "phase": "Running" },
        });
        merge(&mut base, extra);
        serde_json::from_value(base).expect("pod")
    }

    fn merge(base: &mut serde_json::Value, extra: serde_json::Value) {
        match (base, extra) {
            (serde_json::Value::Object(b), serde_json::Value::Object(e)) => {
                for (k, v) in e {
                    merge(b.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (b, e) => *b = e,
        }
    }

    fn owned_by(kind: &str) -> serde_json::Value {
        json!({ "metadata": { "ownerReferences": [{
            "apiVersion": "apps/v1", "kind": kind, "name": "owner", "uid": "u1", "controller": true
        }]}})
    }

    const NONE: Permissions = Permissions {
        ignore_daemonsets: false,
        delete_emptydir_data: false,
        force: false,
        ignore_do_not_disrupt: false,
        evict_daemonsets: false,
    };

    #[test]
    fn a_node_maintenances_job_pod_is_left_and_another_job_pod_is_not() {
        let marked = |kind| {
            let mut extra = owned_by(kind);
            merge(
                &mut extra,
                json!({ "metadata": { "annotations": { MAINTENANCE_JOB: "nm-node-1" } } }),
            );
            pod(extra)
        };
        assert_eq!(
            classify(&marked("Job"), NONE),
            Verdict::Skip {
                reason: SkipReason::MaintenanceJob
            }
        );
        assert!(matches!(
            classify(&pod(owned_by("Job")), NONE),
            Verdict::Evict(_)
        ));
        // The marker alone, on a pod of another controller, exempts nothing.
        assert!(matches!(
            classify(&marked("ReplicaSet"), NONE),
            Verdict::Evict(_)
        ));
    }

    #[test]
    fn replicaset_pod_is_evicted_and_recreated_by_its_controller() {
        let verdict = classify(&pod(owned_by("ReplicaSet")), NONE);
        assert_eq!(
            verdict,
            Verdict::Evict(Eviction {
                replacement: Replacement::ByController {
                    kind: "ReplicaSet".into(),
                    name: "owner".into()
                },
                lost_volumes: vec![],
            })
        );
    }

    #[test]
    fn daemonset_pod_is_refused_until_ignored() {
        let ds = pod(owned_by("DaemonSet"));
        let Verdict::Refuse { reasons } = classify(&ds, NONE) else {
            panic!("refused")
        };
        assert_eq!(
            reasons.iter().map(Refusal::flag).collect::<Vec<_>>(),
            [Flag::IgnoreDaemonSets]
        );
        let allowed = Permissions {
            ignore_daemonsets: true,
            ..NONE
        };
        assert_eq!(
            classify(&ds, allowed),
            Verdict::Skip {
                reason: SkipReason::DaemonSet
            }
        );
    }

    #[test]
    fn evict_daemonsets_evicts_them_unless_their_daemonset_tolerates_the_taint() {
        let evict = Permissions {
            evict_daemonsets: true,
            ..NONE
        };
        assert_eq!(
            classify(&pod(owned_by("DaemonSet")), evict),
            Verdict::Evict(Eviction {
                replacement: Replacement::DaemonSet {
                    name: "owner".into()
                },
                lost_volumes: vec![],
            })
        );
        // Tolerating every taint (no key, Exists), it would be back at once.
        let mut everywhere = pod(owned_by("DaemonSet"));
        merge_into(
            &mut everywhere,
            json!({ "spec": { "tolerations": [{ "operator": "Exists" }] } }),
        );
        let skipped = Verdict::Skip {
            reason: SkipReason::ToleratesDrainingTaint,
        };
        assert_eq!(classify(&everywhere, evict), skipped);
        // The cordon's own toleration, which DaemonSets add, does not keep it on.
        let mut cordon_only = pod(owned_by("DaemonSet"));
        merge_into(
            &mut cordon_only,
            json!({ "spec": { "tolerations": [{ "key": "node.kubernetes.io/unschedulable",
                "operator": "Exists", "effect": "NoSchedule" }] } }),
        );
        assert!(matches!(classify(&cordon_only, evict), Verdict::Evict(_)));
        // Its emptyDir still needs the flag.
        let mut cache = pod(owned_by("DaemonSet"));
        merge_into(
            &mut cache,
            json!({ "spec": { "volumes": [{ "name": "c", "emptyDir": {} }] } }),
        );
        assert!(matches!(classify(&cache, evict), Verdict::Refuse { .. }));
    }

    fn merge_into(p: &mut Pod, extra: serde_json::Value) {
        let mut value = serde_json::to_value(&*p).expect("json");
        merge(&mut value, extra);
        *p = serde_json::from_value(value).expect("pod");
    }

    #[test]
    fn standalone_pod_with_empty_dir_names_both_flags() {
        let p = pod(json!({ "spec": { "volumes": [{ "name": "cache", "emptyDir": {} }] } }));
        let Verdict::Refuse { reasons } = classify(&p, NONE) else {
            panic!("refused")
        };
        assert_eq!(
            reasons.iter().map(Refusal::flag).collect::<Vec<_>>(),
            [Flag::DeleteEmptyDirData, Flag::Force]
        );
        let all = Permissions {
            delete_emptydir_data: true,
            force: true,
            ..NONE
        };
        assert_eq!(
            classify(&p, all),
            Verdict::Evict(Eviction {
                replacement: Replacement::None,
                lost_volumes: vec!["cache".into()]
            })
        );
    }

    #[test]
    fn pods_other_tools_mark_do_not_disrupt_are_refused_until_overridden() {
        for (key, value) in DO_NOT_DISRUPT {
            let mut marked = pod(owned_by("ReplicaSet"));
            marked.metadata.annotations = Some([(key.to_string(), value.to_string())].into());
            let Verdict::Refuse { reasons } = classify(&marked, NONE) else {
                panic!("refused")
            };
            assert_eq!(
                reasons.iter().map(Refusal::flag).collect::<Vec<_>>(),
                [Flag::IgnoreDoNotDisrupt]
            );
            let allowed = Permissions {
                ignore_do_not_disrupt: true,
                ..NONE
            };
            assert!(matches!(classify(&marked, allowed), Verdict::Evict(_)));
        }
        // The opposite values are no marker.
        let mut willing = pod(owned_by("ReplicaSet"));
        willing.metadata.annotations = Some(
            [
                (
                    "karpenter.sh/do-not-disrupt".to_string(),
                    "false".to_string(),
                ),
                (
                    "cluster-autoscaler.kubernetes.io/safe-to-evict".to_string(),
                    "true".to_string(),
                ),
            ]
            .into(),
        );
        assert!(matches!(classify(&willing, NONE), Verdict::Evict(_)));
    }

    #[test]
    fn mirror_terminating_and_finished_pods_need_no_flag() {
        let mirror = pod(json!({ "metadata": { "annotations": { MIRROR_ANNOTATION: "x" } } }));
        assert_eq!(
            classify(&mirror, NONE),
            Verdict::Skip {
                reason: SkipReason::Mirror
            }
        );
        let terminating =
            pod(json!({ "metadata": { "deletionTimestamp": "2026-01-01T00:00:00Z" } }));
        assert_eq!(classify(&terminating, NONE), Verdict::AwaitTermination);
        let done = pod(json!({ "status": { "phase": "Succeeded" } }));
        assert!(matches!(
            classify(&done, NONE),
            Verdict::Evict(Eviction {
                replacement: Replacement::NotNeeded { .. },
                ..
            })
        ));
    }

    #[test]
    fn verdicts_serialize_with_their_reasons() {
        let v = classify(&pod(json!({})), NONE);
        assert_eq!(
            serde_json::to_value(&v).expect("json"),
            json!({ "verdict": "refuse", "reasons": [{ "reason": "unmanaged" }] })
        );
    }
}
