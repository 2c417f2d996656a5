//! One pod's next move in a drain, and when a workload it touched is back, decided
//! from what the view shows. Pure, so every pacing rule is tested without a cluster;
//! the engine only observes and carries out.
//!
//! A drain follows workloads, not particular pods: it is done with a pod when that pod
//! is gone and its workload is back at the availability its budget requires, whichever
//! pods provide it (a replacement, a rollout's new ReplicaSet, pods another actor
//! placed). A replacement that someone else removed is never waited for.
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use serde::Serialize;

use crate::guard::{self, Admission};
use crate::names::NodeName;
use crate::plan::guards::Guard;
use crate::pod::{self, PodKey};
use crate::workload::{Rollout, Workload};

/// What is known of one pod right now.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// No pod with its UID is on the node any more.
    pub gone: bool,
    /// Its eviction (or its Deployment's restart) was accepted, or it was terminating
    /// already: it leaves by itself now.
    pub leaving: bool,
    /// The pod is Ready: evicting a pod that serves nothing takes no availability.
    pub ready: bool,
    /// Its workload as watched now: `None` for a pod without one, or once deleted.
    pub workload: Option<WorkloadSeen>,
    /// The budget whose 429 held it last, and whether that budget allows a disruption
    /// now (as the disruption controller reports it).
    pub held_by: Option<(String, bool)>,
}

/// A workload as the drain's watches show it now.
#[derive(Debug, Clone)]
pub struct WorkloadSeen {
    /// Its current spec: the replicas and `maxUnavailable` follow a scale or an edit.
    pub workload: Workload,
    /// Its pods that serve now: Ready, not terminating, not evicted by kordon.
    pub serving: i32,
    /// Its controller is replacing its pods or acting on a new spec.
    pub rollout: Option<Rollout>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Done,
    Evict,
    /// Restart its Deployment so a replacement is Ready first (`--surge`).
    Surge,
    /// Wait for it to leave.
    AwaitGone,
    /// Wait until the named budget allows a disruption.
    WaitForBudget(String),
    /// Wait until its workload's own rollout is through.
    WaitForRollout(Rollout),
    /// Wait until a replacement is Ready: `serving` pods serve and `floor` must stay.
    WaitForReplacement {
        serving: i32,
        floor: i32,
    },
}

pub fn next(guard: &Guard, seen: &Seen, allow_disruption: bool) -> Step {
    if seen.gone {
        return Step::Done;
    }
    if seen.leaving {
        return Step::AwaitGone;
    }
    if let Some(rollout) = seen.workload.as_ref().and_then(|w| w.rollout.clone()) {
        return Step::WaitForRollout(rollout);
    }
    if let Some((budget, false)) = &seen.held_by {
        return Step::WaitForBudget(budget.clone());
    }
    match (guard, &seen.workload) {
        (Guard::Api, _) => Step::Evict,
        (Guard::Surge(_), _) => Step::Surge,
        // Deleted meanwhile: no availability is left to keep.
        (Guard::Implicit(_), None) => Step::Evict,
        (Guard::Implicit(_), Some(now)) => {
            match guard::admit(&now.workload, now.serving, seen.ready, allow_disruption) {
                Admission::Go => Step::Evict,
                Admission::Wait { ready, floor } => Step::WaitForReplacement {
                    serving: ready,
                    floor,
                },
            }
        }
    }
}

/// Whether a workload the drain touched is back at the availability its budget
/// requires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum Recovery {
    /// Deleted during the drain: there is nothing to wait for.
    Deleted,
    /// Enough of its pods serve; `serving` names them.
    Back { serving: Vec<PodKey> },
    /// Fewer pods serve than `needs`, by its own budget or by the named
    /// PodDisruptionBudget (whose count is the disruption controller's).
    Short {
        serving: Vec<PodKey>,
        needs: i32,
        #[serde(skip_serializing_if = "Option::is_none")]
        budget: Option<String>,
    },
}

/// Decides [`Recovery`] from the workload as watched now (`None` once deleted), its
/// pods, and the PodDisruptionBudgets of the user's that cover it. A pod counts when it
/// is Ready and `serves` (its Services route to it); pods on the drained node never
/// count: they are leaving. A budget of the user's keeps guarding the
/// workload after the drain, so it is back once that budget has the healthy pods it
/// wants. An implicit budget ends with the drain (and kordon's shared budget with it),
/// so a workload without a budget of the user's is back only at all its replicas:
/// otherwise the next evictor could take it below its floor the moment kordon leaves.
pub fn recovery(
    workload: Option<&Workload>,
    pods: &[Arc<Pod>],
    budgets: &[Arc<PodDisruptionBudget>],
    drained: &NodeName,
    serves: &dyn Fn(&Pod) -> bool,
) -> Recovery {
    let Some(w) = workload else {
        return Recovery::Deleted;
    };
    let serving: Vec<PodKey> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && pod::is_ready(p))
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(drained.as_str()))
        .filter(|p| serves(p))
        .map(|p| PodKey::of(p))
        .collect();
    let short_budget = budgets.iter().find_map(|b| {
        let status = b.status.as_ref()?;
        (status.current_healthy < status.desired_healthy)
            .then(|| (status.desired_healthy, b.metadata.name.clone()))
    });
    let needs = match short_budget {
        Some((needs, budget)) => {
            return Recovery::Short {
                serving,
                needs,
                budget,
            };
        }
        None if !budgets.is_empty() => 0,
        None => w.replicas,
    };
    if i32::try_from(serving.len()).unwrap_or(i32::MAX) >= needs {
        Recovery::Back { serving }
    } else {
        Recovery::Short {
            serving,
            needs,
            budget: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{Workload, WorkloadId};

    fn web(replicas: i32, max_unavailable: i32) -> Guard {
        Guard::Implicit(Workload {
            id: WorkloadId {
                kind: crate::workload::WorkloadKind::Deployment,
                namespace: "shop".into(),
                name: "web".into(),
            },
            selector: Default::default(),
            replicas,
            max_unavailable,
            can_surge: true,
        })
    }

    fn workload(replicas: i32, max_unavailable: i32) -> Workload {
        match web(replicas, max_unavailable) {
            Guard::Implicit(w) => w,
            _ => unreachable!("web is an implicit guard"),
        }
    }

    /// A Ready pod of web (4 replicas, 1 may be unavailable) while `serving` serve.
    fn ready_serving(serving: i32) -> Seen {
        Seen {
            ready: true,
            workload: Some(WorkloadSeen {
                workload: workload(4, 1),
                serving,
                rollout: None,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_pod_gone_is_done_and_one_leaving_is_awaited_whatever_its_guard() {
        let gone = Seen {
            gone: true,
            leaving: true,
            ..Default::default()
        };
        assert_eq!(next(&web(4, 1), &gone, false), Step::Done);
        let leaving = Seen {
            leaving: true,
            ..Default::default()
        };
        assert_eq!(next(&Guard::Api, &leaving, false), Step::AwaitGone);
    }

    #[test]
    fn an_implicit_budget_evicts_only_above_its_floor() {
        // 4 replicas, 1 may be unavailable: 3 must serve.
        assert_eq!(next(&web(4, 1), &ready_serving(4), false), Step::Evict);
        assert_eq!(
            next(&web(4, 1), &ready_serving(3), false),
            Step::WaitForReplacement {
                serving: 3,
                floor: 3
            }
        );
        // A pod that serves nothing may go at once.
        let unready = Seen {
            ready: false,
            ..ready_serving(3)
        };
        assert_eq!(next(&web(4, 1), &unready, false), Step::Evict);
    }

    #[test]
    fn a_budget_that_said_not_yet_is_waited_on_until_it_allows() {
        let held = |allows| Seen {
            held_by: Some(("web-pdb".into(), allows)),
            ..ready_serving(4)
        };
        assert_eq!(
            next(&Guard::Api, &held(false), false),
            Step::WaitForBudget("web-pdb".into())
        );
        assert_eq!(next(&Guard::Api, &held(true), false), Step::Evict);
        assert_eq!(
            next(&web(4, 1), &held(false), false),
            Step::WaitForBudget("web-pdb".into())
        );
    }

    #[test]
    fn a_surge_guard_restarts_the_workload() {
        let solo = match web(1, 1) {
            Guard::Implicit(w) => Guard::Surge(w),
            g => g,
        };
        assert_eq!(next(&solo, &ready_serving(1), false), Step::Surge);
    }

    #[test]
    fn a_workload_mid_rollout_is_never_evicted_into_whatever_its_guard() {
        let rolling = |rollout| Seen {
            workload: Some(WorkloadSeen {
                rollout: Some(rollout),
                ..ready_serving(4).workload.expect("web")
            }),
            ..ready_serving(4)
        };
        for guard in [web(4, 1), Guard::Api] {
            assert_eq!(
                next(&guard, &rolling(Rollout::Revisions(2)), false),
                Step::WaitForRollout(Rollout::Revisions(2))
            );
            assert_eq!(
                next(&guard, &rolling(Rollout::Unobserved), false),
                Step::WaitForRollout(Rollout::Unobserved)
            );
        }
        // The rollout deletes the old pod itself: it is only waited for.
        let deleted_by_rollout = Seen {
            leaving: true,
            ..rolling(Rollout::Revisions(2))
        };
        assert_eq!(
            next(&web(4, 1), &deleted_by_rollout, false),
            Step::AwaitGone
        );
    }

    #[test]
    fn the_floor_follows_a_scale_and_a_deleted_workload_keeps_nothing() {
        // Planned at 4 (floor 3), scaled to 2 meanwhile (floor 1): 2 serve, one may go.
        let scaled = Seen {
            workload: Some(WorkloadSeen {
                workload: workload(2, 1),
                serving: 2,
                rollout: None,
            }),
            ..ready_serving(2)
        };
        assert_eq!(next(&web(4, 1), &scaled, false), Step::Evict);
        let deleted = Seen {
            workload: None,
            ..ready_serving(1)
        };
        assert_eq!(next(&web(4, 1), &deleted, false), Step::Evict);
    }

    mod recovery {
        use super::*;
        use serde_json::json;

        fn drained() -> NodeName {
            NodeName::new("node-c")
        }

        /// A pod of web on `node`, of ReplicaSet `rs`.
        fn pod(name: &str, node: &str, rs: &str, ready: bool, terminating: bool) -> Arc<Pod> {
            let mut meta = json!({ "name": name, "namespace": "shop", "uid": name,
                "labels": { "app": "web", "pod-template-hash": rs } });
            if terminating {
                meta["deletionTimestamp"] = json!("2026-12-05T12:00:00Z");
            }
            let status = if ready { "True" } else { "False" };
            Arc::new(
                serde_json::from_value(json!({
                    "metadata": meta,
                    "spec": { "nodeName": node, "containers": [] },
                    "status": { "phase": "Running",
                        "conditions": [{ "type": "Ready", "status": status }] },
                }))
                .expect("pod"),
            )
        }

        fn names(r: &Recovery) -> Vec<String> {
            match r {
                Recovery::Back { serving } | Recovery::Short { serving, .. } => {
                    serving.iter().map(ToString::to_string).collect()
                }
                Recovery::Deleted => Vec::new(),
            }
        }

        #[test]
        fn a_ready_replacement_its_services_do_not_route_to_yet_does_not_count() {
            let pods = vec![
                pod("web-a", "node-a", "old", true, false),
                pod("web-r", "node-b", "old", true, false),
            ];
            let unreached = |p: &Pod| p.metadata.name.as_deref() != Some("web-r");
            let r = recovery(Some(&workload(2, 1)), &pods, &[], &drained(), &unreached);
            assert!(matches!(r, Recovery::Short { needs: 2, .. }), "{r:?}");
            assert_eq!(names(&r), ["shop/web-a"]);
        }

        #[test]
        fn a_rollout_that_replaced_the_replacement_still_brings_the_workload_back() {
            // web-r (the replacement, old ReplicaSet) was removed by the rollout; the new
            // ReplicaSet's pods serve instead.
            let mut pods = vec![
                pod("web-a", "node-a", "old", true, false),
                pod("web-r", "node-b", "old", false, true),
                pod("web-n1", "node-a", "new", true, false),
                pod("web-n2", "node-b", "new", true, false),
                pod("web-n3", "node-b", "new", false, false),
            ];
            let r = recovery(Some(&workload(4, 1)), &pods, &[], &drained(), &|_| true);
            assert!(matches!(r, Recovery::Short { needs: 4, .. }), "{r:?}");
            pods[4] = pod("web-n3", "node-b", "new", true, false);
            let r = recovery(Some(&workload(4, 1)), &pods, &[], &drained(), &|_| true);
            assert!(matches!(r, Recovery::Back { .. }), "{r:?}");
            assert_eq!(
                names(&r),
                ["shop/web-a", "shop/web-n1", "shop/web-n2", "shop/web-n3"]
            );
        }

        #[test]
        fn a_replacement_another_drain_evicted_is_not_waited_for_by_name() {
            // web-r landed on node-b and another drain evicted it; its own replacement
            // web-s is not Ready yet: short by one, then back once web-s is Ready.
            let mut pods = vec![
                pod("web-a", "node-a", "rs", true, false),
                pod("web-b", "node-a", "rs", true, false),
                pod("web-r", "node-b", "rs", true, true),
                pod("web-s", "node-d", "rs", false, false),
            ];
            let short = recovery(Some(&workload(3, 1)), &pods, &[], &drained(), &|_| true);
            assert_eq!(
                short,
                Recovery::Short {
                    serving: vec![PodKey::of(&pods[0]), PodKey::of(&pods[1])],
                    needs: 3,
                    budget: None
                }
            );
            pods[3] = pod("web-s", "node-d", "rs", true, false);
            let back = recovery(Some(&workload(3, 1)), &pods, &[], &drained(), &|_| true);
            assert!(matches!(back, Recovery::Back { .. }), "{back:?}");
        }

        #[test]
        fn a_workload_scaled_down_mid_drain_needs_only_its_new_replicas() {
            // Planned at 4, scaled to 2 meanwhile.
            let pods = [
                pod("web-a", "node-a", "rs", true, false),
                pod("web-b", "node-b", "rs", true, false),
            ];
            let r = recovery(Some(&workload(2, 1)), &pods, &[], &drained(), &|_| true);
            assert!(matches!(r, Recovery::Back { .. }), "{r:?}");
            // Pods still on the drained node never count.
            let leaving = [
                pod("web-a", "node-a", "rs", true, false),
                pod("web-c", "node-c", "rs", true, false),
            ];
            let r = recovery(Some(&workload(2, 1)), &leaving, &[], &drained(), &|_| true);
            assert!(matches!(r, Recovery::Short { needs: 2, .. }), "{r:?}");
        }

        #[test]
        fn a_workload_deleted_mid_drain_is_nothing_to_wait_for() {
            let pods = [pod("web-a", "node-a", "rs", false, true)];
            assert_eq!(
                recovery(None, &pods, &[], &drained(), &|_| true),
                Recovery::Deleted
            );
        }

        #[test]
        fn a_budget_of_the_users_decides_by_its_own_count() {
            let pdb = |healthy: i32, desired: i32| {
                Arc::new(
                    serde_json::from_value::<PodDisruptionBudget>(json!({
                        "metadata": { "name": "web", "namespace": "shop" },
                        "status": { "currentHealthy": healthy, "desiredHealthy": desired,
                            "disruptionsAllowed": 0, "expectedPods": 4 },
                    }))
                    .expect("pdb"),
                )
            };
            let pods = [pod("web-a", "node-a", "rs", true, false)];
            let r = recovery(
                Some(&workload(4, 1)),
                &pods,
                &[pdb(2, 3)],
                &drained(),
                &|_| true,
            );
            assert!(
                matches!(&r, Recovery::Short { needs: 3, budget: Some(b), .. } if b == "web"),
                "{r:?}"
            );
            let r = recovery(
                Some(&workload(4, 1)),
                &pods,
                &[pdb(3, 3)],
                &drained(),
                &|_| true,
            );
            assert!(matches!(r, Recovery::Back { .. }), "{r:?}");
        }
    }
}
