//! The escalation ladder: what a drain does with the pods a budget still holds once its
//! `--deadline` has passed. Waiting forever and forcing everything are the only answers
//! other drain tools give; here the operator names which pods may be deleted past their
//! budget (by namespace and labels, or because they are not Ready and so serve nothing)
//! and whether the rest is waited for or the drain abandoned. A pod the ladder deletes
//! keeps its whole grace period before the deadline: the ladder engages for it at the
//! deadline less its grace ([`Ladder::engages_at`]), as Karpenter deletes before a
//! node's expiry. Pure: the drain observes and carries out.
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use serde::Serialize;

use crate::evict::Blocked;
use crate::pod::PodKey;

/// What the operator allows once the deadline has passed.
#[derive(Debug, Clone, Default)]
pub struct Ladder {
    /// When the ladder engages; `None`: never (every pod is waited for).
    pub deadline: Option<Duration>,
    /// Pods these rules name may be deleted past their budget.
    pub delete: Vec<DeleteRule>,
    /// Pods that are not Ready and held by a PodDisruptionBudget may be deleted past
    /// it: they serve nothing (the budget's `unhealthyPodEvictionPolicy: AlwaysAllow`).
    pub unhealthy: bool,
    /// What happens to blocked pods no rule names.
    pub then: AfterDeadline,
}

use crate::policy::AfterDeadline;

/// `NAMESPACE[:SELECTOR]`: the pods in a namespace (`*` for any), optionally only those
/// matching a label selector, which the API server evaluates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteRule {
    /// `None` for any namespace.
    pub namespace: Option<String>,
    pub selector: Option<String>,
}

impl FromStr for DeleteRule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (namespace, selector) = match s.split_once(':') {
            Some((ns, sel)) => (ns.trim(), Some(sel.trim())),
            None => (s.trim(), None),
        };
        if namespace.is_empty() {
            return Err(format!(
                "\"{s}\" names no namespace: write NAMESPACE[:SELECTOR], or *:SELECTOR for any namespace"
            ));
        }
        if selector.is_some_and(str::is_empty) {
            return Err(format!(
                "\"{s}\" has an empty selector: drop the colon to name the whole namespace"
            ));
        }
        Ok(Self {
            namespace: (namespace != "*").then(|| namespace.to_string()),
            selector: selector.map(str::to_string),
        })
    }
}

impl fmt::Display for DeleteRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.namespace.as_deref().unwrap_or("*"))?;
        match &self.selector {
            Some(s) => write!(f, ":{s}"),
            None => Ok(()),
        }
    }
}

/// Why a pod may be deleted past its budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "by", content = "rule")]
pub enum Allowance {
    /// A `--delete-past-budget` rule names it.
    Rule(String),
    /// It is not Ready and `--delete-unhealthy-past-budget` was given.
    Unhealthy,
}

impl fmt::Display for Allowance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rule(r) => write!(f, "--delete-past-budget {r}"),
            Self::Unhealthy => f.write_str("--delete-unhealthy-past-budget (not Ready)"),
        }
    }
}

/// A pod a budget holds after the deadline.
#[derive(Debug, Clone)]
pub struct Blocker {
    pub pod: PodKey,
    pub ready: bool,
    /// What held it last: a PodDisruptionBudget (named) or kordon's implicit budget.
    pub held: Blocked,
    /// The first delete rule whose pods include it.
    pub named_by: Option<DeleteRule>,
    /// The grace its deletion gives it ([`grace_of`]).
    pub grace: Duration,
}

/// The API server's default `terminationGracePeriodSeconds`, for a pod that has none.
const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// What the ladder leaves before the deadline beyond a pod's grace: the timer wakes and
/// the deletion reaches the API server a little late, and the grace runs from then. A
/// pod with no grace is still deleted a second before the deadline.
const MARGIN: Duration = Duration::from_secs(1);

/// The grace a deletion gives the pod: `--grace-period` when given, else its own
/// `terminationGracePeriodSeconds` (which the API server sets on every pod).
pub fn grace_of(pod: &Pod, grace_period: Option<u32>) -> Duration {
    let own = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .map_or(DEFAULT_GRACE, |s| {
            Duration::from_secs(u64::try_from(s).unwrap_or(0))
        });
    grace_period.map_or(own, |s| Duration::from_secs(u64::from(s)))
}

#[derive(Debug, Clone)]
pub enum Decision {
    /// Nothing to do now.
    Wait,
    /// Delete these pods past their budgets.
    Delete(Vec<(Blocker, Allowance)>),
    /// Stop: these pods block and no rule allows them. Nothing is deleted then, since
    /// the node would not be emptied anyway.
    Abandon(Vec<Blocker>),
}

/// A deadline at or past the drain's timeout: the drain would time out before its
/// ladder engages. Each edge says it with its own names (flags, spec fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadlineNotBeforeTimeout {
    pub deadline: Duration,
    pub timeout: Duration,
}

impl Ladder {
    /// The deadline must come before the timeout (`None`: no timeout).
    pub fn check(&self, timeout: Option<Duration>) -> Result<(), DeadlineNotBeforeTimeout> {
        match (self.deadline, timeout) {
            (Some(deadline), Some(timeout)) if deadline >= timeout => {
                Err(DeadlineNotBeforeTimeout { deadline, timeout })
            }
            _ => Ok(()),
        }
    }

    /// Whether the ladder does anything at its deadline.
    pub fn engaged(&self) -> bool {
        self.deadline.is_some()
    }

    /// When (from the drain's start) the ladder engages for a pod whose deletion gives
    /// it `grace`: early enough that the whole grace ends by the deadline, a
    /// [`MARGIN`] to spare, and at once when that is longer than the deadline. `None`
    /// without a deadline.
    pub fn engages_at(&self, grace: Duration) -> Option<Duration> {
        Some(self.deadline?.saturating_sub(grace + MARGIN))
    }

    /// The first moment after `elapsed` at which the ladder engages for one of these
    /// graces or reaches its deadline: when the drain must look again.
    pub fn next_engagement(
        &self,
        graces: impl IntoIterator<Item = Duration>,
        elapsed: Duration,
    ) -> Option<Duration> {
        let deadline = self.deadline?;
        graces
            .into_iter()
            .filter_map(|g| self.engages_at(g))
            .chain([deadline])
            .filter(|at| *at > elapsed)
            .min()
    }

    /// What to do with the pods a budget holds, `elapsed` into the drain. Before the
    /// deadline only an allowed pod whose time has come ([`Self::engages_at`]) goes, and
    /// under `abandon` none while an unallowed pod still blocks, since the drain may be
    /// abandoned at the deadline and an abandoned drain deletes nothing. From the
    /// deadline on every held pod is judged.
    pub fn decide(&self, blockers: Vec<Blocker>, elapsed: Duration) -> Decision {
        let Some(deadline) = self.deadline else {
            return Decision::Wait;
        };
        let (allowed, unallowed): (Vec<_>, Vec<_>) = blockers
            .into_iter()
            .map(|b| {
                let allowance = self.allowance(&b);
                (b, allowance)
            })
            .partition(|(_, a)| a.is_some());
        let abandoning = self.then == AfterDeadline::Abandon && !unallowed.is_empty();
        if abandoning && elapsed >= deadline {
            return Decision::Abandon(unallowed.into_iter().map(|(b, _)| b).collect());
        }
        let due: Vec<_> = allowed
            .into_iter()
            .filter(|(b, _)| self.engages_at(b.grace).is_some_and(|at| at <= elapsed))
            .filter_map(|(b, a)| Some((b, a?)))
            .collect();
        if due.is_empty() || abandoning {
            return Decision::Wait;
        }
        Decision::Delete(due)
    }

    fn allowance(&self, b: &Blocker) -> Option<Allowance> {
        if let Some(rule) = &b.named_by {
            return Some(Allowance::Rule(rule.to_string()));
        }
        // Only a PodDisruptionBudget holds a pod that is not Ready: kordon's implicit
        // budget lets such pods go at once.
        (self.unhealthy && !b.ready && b.held.budget.is_some()).then_some(Allowance::Unhealthy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_must_come_before_the_timeout() {
        let at = |s| Ladder {
            deadline: Some(Duration::from_secs(s)),
            ..Ladder::default()
        };
        let minute = Some(Duration::from_secs(60));
        assert_eq!(at(30).check(minute), Ok(()));
        assert_eq!(
            at(60).check(minute),
            Err(DeadlineNotBeforeTimeout {
                deadline: Duration::from_secs(60),
                timeout: Duration::from_secs(60)
            })
        );
        assert_eq!(at(600).check(None), Ok(()), "no timeout");
        assert_eq!(Ladder::default().check(minute), Ok(()), "no deadline");
    }

    fn blocker(pod: &str, ready: bool, named_by: Option<&str>) -> Blocker {
        Blocker {
            pod: pod.into(),
            ready,
            held: Blocked {
                budget: Some("web-pdb".into()),
                detail: "The disruption budget web-pdb needs 2 healthy pods and has 2 currently"
                    .into(),
            },
            named_by: named_by.map(|r| r.parse().expect("rule")),
            grace: Duration::from_secs(30),
        }
    }

    /// Long past any deadline the tests set.
    const LATE: Duration = Duration::from_secs(3600);

    fn pods(d: &Decision) -> Vec<String> {
        match d {
            Decision::Wait => Vec::new(),
            Decision::Delete(v) => v.iter().map(|(b, _)| b.pod.to_string()).collect(),
            Decision::Abandon(v) => v.iter().map(|b| b.pod.to_string()).collect(),
        }
    }

    #[test]
    fn rules_parse_as_namespace_and_optional_selector() {
        let r: DeleteRule = "shop:app=cache,tier!=db".parse().expect("rule");
        assert_eq!(r.namespace.as_deref(), Some("shop"));
        assert_eq!(r.selector.as_deref(), Some("app=cache,tier!=db"));
        let any: DeleteRule = "*:app in (a,b)".parse().expect("rule");
        assert_eq!(any.namespace, None);
        assert_eq!(any.to_string(), "*:app in (a,b)");
        assert_eq!("batch".parse::<DeleteRule>().expect("rule").selector, None);
        assert!(":app=x".parse::<DeleteRule>().is_err());
        assert!("shop:".parse::<DeleteRule>().is_err());
    }

    #[test]
    fn only_pods_a_rule_names_are_deleted_and_the_rest_waits() {
        let ladder = Ladder {
            deadline: Some(Duration::from_secs(1)),
            delete: vec!["shop:app=cache".parse().expect("rule")],
            ..Default::default()
        };
        let d = ladder.decide(
            vec![
                blocker("shop/cache-1", true, Some("shop:app=cache")),
                blocker("shop/web-1", true, None),
            ],
            LATE,
        );
        assert_eq!(pods(&d), ["shop/cache-1"]);
        assert!(matches!(
            ladder.decide(vec![blocker("shop/web-1", true, None)], LATE),
            Decision::Wait
        ));
    }

    #[test]
    fn unhealthy_pods_go_only_when_allowed_and_only_if_a_budget_held_them() {
        let mut ladder = Ladder {
            deadline: Some(Duration::ZERO),
            ..Default::default()
        };
        let unready = blocker("shop/warming-1", false, None);
        assert!(matches!(
            ladder.decide(vec![unready.clone()], LATE),
            Decision::Wait
        ));
        ladder.unhealthy = true;
        match ladder.decide(
            vec![unready.clone(), blocker("shop/web-1", true, None)],
            LATE,
        ) {
            Decision::Delete(v) => {
                assert_eq!(v.len(), 1);
                assert_eq!(v[0].1, Allowance::Unhealthy);
            }
            d => panic!("expected a delete, got {d:?}"),
        }
        let implicit = Blocker {
            held: Blocked {
                budget: None,
                detail: "Deployment shop/warming keeps at least 1".into(),
            },
            ..unready
        };
        assert!(matches!(
            ladder.decide(vec![implicit], LATE),
            Decision::Wait
        ));
    }

    #[test]
    fn abandon_deletes_nothing_when_something_unallowed_still_blocks() {
        let ladder = Ladder {
            deadline: Some(Duration::ZERO),
            delete: vec!["shop:app=cache".parse().expect("rule")],
            then: AfterDeadline::Abandon,
            ..Default::default()
        };
        let d = ladder.decide(
            vec![
                blocker("shop/cache-1", true, Some("shop:app=cache")),
                blocker("shop/web-1", true, None),
            ],
            LATE,
        );
        assert!(matches!(d, Decision::Abandon(_)));
        assert_eq!(pods(&d), ["shop/web-1"]);
        // When every blocker is allowed, the allowed ones go instead.
        let d = ladder.decide(
            vec![blocker("shop/cache-1", true, Some("shop:app=cache"))],
            LATE,
        );
        assert!(matches!(d, Decision::Delete(_)));
        assert!(matches!(ladder.decide(Vec::new(), LATE), Decision::Wait));
    }

    fn pod_with_grace(seconds: Option<i64>) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "cache-1", "namespace": "shop" },
            "spec": {
                "containers": [{ "name": "c", "image": "cache" }],
                "terminationGracePeriodSeconds": seconds,
            },
        }))
        .expect("pod")
    }

    #[test]
    fn a_deletion_gives_the_pods_own_grace_or_the_flags() {
        let secs = Duration::from_secs;
        assert_eq!(grace_of(&pod_with_grace(Some(120)), None), secs(120));
        assert_eq!(grace_of(&pod_with_grace(Some(120)), Some(10)), secs(10));
        assert_eq!(
            grace_of(&pod_with_grace(None), None),
            secs(30),
            "the API default"
        );
        assert_eq!(grace_of(&pod_with_grace(Some(0)), None), secs(0));
        assert_eq!(grace_of(&pod_with_grace(Some(120)), Some(0)), secs(0));
    }

    #[test]
    fn a_pod_is_deleted_early_enough_that_its_whole_grace_ends_by_the_deadline() {
        let secs = Duration::from_secs;
        let ladder = Ladder {
            deadline: Some(secs(60)),
            delete: vec!["shop:app=cache".parse().expect("rule")],
            ..Default::default()
        };
        let long = Blocker {
            grace: secs(20),
            ..blocker("shop/cache-1", true, Some("shop:app=cache"))
        };
        // Its 20 s grace and a second to spare.
        assert_eq!(ladder.engages_at(long.grace), Some(secs(39)));
        assert!(matches!(
            ladder.decide(vec![long.clone()], secs(38)),
            Decision::Wait
        ));
        assert_eq!(
            pods(&ladder.decide(vec![long.clone()], secs(39))),
            ["shop/cache-1"]
        );
        // A grace longer than the deadline: deleted as soon as a budget holds it.
        assert_eq!(ladder.engages_at(secs(600)), Some(Duration::ZERO));
        // No grace still gets a second.
        assert_eq!(ladder.engages_at(Duration::ZERO), Some(secs(59)));
        // A pod no rule allows is not judged before the deadline.
        let web = blocker("shop/web-1", true, None);
        assert!(matches!(ladder.decide(vec![web], secs(59)), Decision::Wait));
        assert_eq!(Ladder::default().engages_at(secs(20)), None, "no deadline");
    }

    #[test]
    fn the_drain_looks_again_at_each_pods_moment_and_at_the_deadline() {
        let secs = Duration::from_secs;
        let ladder = Ladder {
            deadline: Some(secs(60)),
            ..Default::default()
        };
        let graces = [secs(20), secs(5), secs(90)];
        assert_eq!(ladder.next_engagement(graces, secs(0)), Some(secs(39)));
        assert_eq!(ladder.next_engagement(graces, secs(39)), Some(secs(54)));
        assert_eq!(ladder.next_engagement(graces, secs(54)), Some(secs(60)));
        assert_eq!(ladder.next_engagement(graces, secs(60)), None);
        assert_eq!(Ladder::default().next_engagement(graces, secs(0)), None);
    }

    #[test]
    fn under_abandon_nothing_goes_early_while_an_unallowed_pod_blocks() {
        let secs = Duration::from_secs;
        let ladder = Ladder {
            deadline: Some(secs(60)),
            delete: vec!["shop:app=cache".parse().expect("rule")],
            then: AfterDeadline::Abandon,
            ..Default::default()
        };
        let cache = Blocker {
            grace: secs(20),
            ..blocker("shop/cache-1", true, Some("shop:app=cache"))
        };
        let web = blocker("shop/web-1", true, None);
        let both = vec![cache.clone(), web];
        assert!(matches!(
            ladder.decide(both.clone(), secs(45)),
            Decision::Wait
        ));
        assert!(matches!(
            ladder.decide(both, secs(60)),
            Decision::Abandon(_)
        ));
        assert_eq!(
            pods(&ladder.decide(vec![cache], secs(45))),
            ["shop/cache-1"]
        );
    }
}
