//! One pod's next move in a drain, decided from what the view shows. Pure, so every
//! pacing rule is tested without a cluster; the engine only observes and carries out.
use crate::guard::{self, Admission};
use crate::plan::guards::Guard;

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
    /// Its workload's pods that serve now (for implicit budgets).
    pub serving: i32,
    /// The budget whose 429 held it last, and whether that budget allows a disruption
    /// now (as the disruption controller reports it).
    pub held_by: Option<(String, bool)>,
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
    if let Some((budget, false)) = &seen.held_by {
        return Step::WaitForBudget(budget.clone());
    }
    match guard {
        Guard::Api => Step::Evict,
        Guard::Surge(_) => Step::Surge,
        Guard::Implicit(w) => match guard::admit(w, seen.serving, seen.ready, allow_disruption) {
            Admission::Go => Step::Evict,
            Admission::Wait { ready, floor } => Step::WaitForReplacement {
                serving: ready,
                floor,
            },
        },
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

    fn ready_serving(serving: i32) -> Seen {
        Seen {
            ready: true,
            serving,
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
            serving: 3,
            ..Default::default()
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
}
