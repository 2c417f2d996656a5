//! The escalation ladder: what a drain does with the pods a budget still holds once its
//! `--deadline` has passed. Waiting forever and forcing everything are the only answers
//! other drain tools give; here the operator names which pods may be deleted past their
//! budget (by namespace and labels, or because they are not Ready and so serve nothing)
//! and whether the rest is waited for or the drain abandoned. Pure: the drain observes
//! and carries out.
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

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

    pub fn decide(&self, blockers: Vec<Blocker>) -> Decision {
        let (allowed, unallowed): (Vec<_>, Vec<_>) = blockers
            .into_iter()
            .map(|b| {
                let allowance = self.allowance(&b);
                (b, allowance)
            })
            .partition(|(_, a)| a.is_some());
        if self.then == AfterDeadline::Abandon && !unallowed.is_empty() {
            return Decision::Abandon(unallowed.into_iter().map(|(b, _)| b).collect());
        }
        if allowed.is_empty() {
            return Decision::Wait;
        }
        Decision::Delete(
            allowed
                .into_iter()
                .filter_map(|(b, a)| Some((b, a?)))
                .collect(),
        )
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
        }
    }

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
        let d = ladder.decide(vec![
            blocker("shop/cache-1", true, Some("shop:app=cache")),
            blocker("shop/web-1", true, None),
        ]);
        assert_eq!(pods(&d), ["shop/cache-1"]);
        assert!(matches!(
            ladder.decide(vec![blocker("shop/web-1", true, None)]),
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
            ladder.decide(vec![unready.clone()]),
            Decision::Wait
        ));
        ladder.unhealthy = true;
        match ladder.decide(vec![unready.clone(), blocker("shop/web-1", true, None)]) {
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
        assert!(matches!(ladder.decide(vec![implicit]), Decision::Wait));
    }

    #[test]
    fn abandon_deletes_nothing_when_something_unallowed_still_blocks() {
        let ladder = Ladder {
            deadline: Some(Duration::ZERO),
            delete: vec!["shop:app=cache".parse().expect("rule")],
            then: AfterDeadline::Abandon,
            ..Default::default()
        };
        let d = ladder.decide(vec![
            blocker("shop/cache-1", true, Some("shop:app=cache")),
            blocker("shop/web-1", true, None),
        ]);
        assert!(matches!(d, Decision::Abandon(_)));
        assert_eq!(pods(&d), ["shop/web-1"]);
        // When every blocker is allowed, the allowed ones go instead.
        let d = ladder.decide(vec![blocker("shop/cache-1", true, Some("shop:app=cache"))]);
        assert!(matches!(d, Decision::Delete(_)));
        assert!(matches!(ladder.decide(Vec::new()), Decision::Wait));
    }
}
