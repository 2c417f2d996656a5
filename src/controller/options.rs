//! A NodeMaintenance's drain policy as the drain's options: the CLI's flags, as fields.
use std::time::Duration;

use crate::api::node_maintenance::{DrainOrderEntry, DrainPolicy};
use crate::classify::Permissions;
use crate::cluster::nodes::DryRun;
use crate::drain::DrainOptions;
use crate::drain::ladder::Ladder;
use crate::plan::guards::GuardOptions;
use crate::tiers::{DrainOrder, OrderRule};

/// `spec.drain.drainOrder` as the CLI's `--drain-order`: each LabelSelector is read by
/// kube's selector and said again in kubectl's syntax, which the drain matches.
fn drain_order(entries: &[DrainOrderEntry]) -> Result<DrainOrder, String> {
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let bad = |e: String| format!("spec.drain.drainOrder[{i}].podSelector: {e}");
            let selector =
                kube::core::Selector::try_from(e.pod_selector.clone()).map_err(|e| bad(e.0))?;
            let selector = selector
                .to_string()
                .parse()
                .map_err(|e| bad(format!("{e}")))?;
            Ok(OrderRule {
                selector,
                order: e.order,
            })
        })
        .collect::<Result<_, _>>()
        .map(DrainOrder)
}

/// The options, or why the spec cannot be carried out (said in the object's status).
pub fn drain_options(p: &DrainPolicy) -> Result<DrainOptions, String> {
    let duration = |field: &str, value: Option<&str>| -> Result<Option<Duration>, String> {
        value
            .map(|v| crate::api::duration::parse(v).map_err(|e| format!("spec.drain.{field}: {e}")))
            .transpose()
    };
    let timeout = duration("timeout", p.timeout.as_deref())?;
    let ladder = match &p.ladder {
        None => Ladder::default(),
        Some(l) => Ladder {
            deadline: duration("ladder.deadline", Some(&l.deadline))?,
            delete: l
                .delete_past_budget
                .iter()
                .map(|r| {
                    r.parse()
                        .map_err(|e| format!("spec.drain.ladder.deletePastBudget: {e}"))
                })
                .collect::<Result<_, _>>()?,
            unhealthy: l.delete_unhealthy_past_budget,
            then: l.on_deadline,
        },
    };
    if let Err(e) = ladder.check(timeout) {
        return Err(format!(
            "spec.drain.ladder.deadline {} is not before spec.drain.timeout {}",
            humantime::format_duration(e.deadline),
            humantime::format_duration(e.timeout)
        ));
    }
    let deregistration = duration("deregistrationDelay", Some(&p.deregistration_delay))?;
    Ok(DrainOptions {
        permissions: Permissions {
            ignore_daemonsets: p.ignore_daemon_sets,
            delete_emptydir_data: p.delete_empty_dir_data,
            force: p.force,
            ignore_do_not_disrupt: p.ignore_do_not_disrupt,
            evict_daemonsets: p.evict_daemon_sets,
        },
        pod_selector: p.pod_selector.clone(),
        drain_order: drain_order(&p.drain_order)?,
        grace_period: p.grace_period_seconds,
        disable_eviction: false,
        dry_run: DryRun::None,
        timeout,
        concurrency: 8,
        guards: GuardOptions {
            budget: p.budget,
            surge: p.surge,
            allow_disruption: p.allow_disruption,
            disable_eviction: false,
        },
        allow_pending: p.allow_pending,
        shared_budgets: Some(crate::drain::shared::LEASE),
        ladder,
        // The controller holds the cordon and lifts it by the state machine.
        node_down: None,
        interrupt: crate::interrupt::Interrupt::never(),
        // The controller fences with its own mark (`reconcile::put_node`).
        fence: false,
        load_balancers: deregistration.filter(|_| p.exclude_from_load_balancers),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(drain: serde_json::Value) -> DrainPolicy {
        serde_json::from_value(drain).expect("drain policy")
    }

    #[test]
    fn drain_order_entries_become_the_clis_rules() {
        let p = policy(json!({ "evictDaemonSets": true, "drainOrder": [
            { "podSelector": { "matchLabels": { "app": "db" } }, "order": 10 },
            { "podSelector": { "matchExpressions": [
                { "key": "tier", "operator": "In", "values": ["edge"] },
                { "key": "canary", "operator": "DoesNotExist" },
            ] }, "order": -1 },
        ] }));
        let opts = drain_options(&p).expect("options");
        assert!(opts.permissions.evict_daemonsets);
        let rules: Vec<(String, i32)> = opts
            .drain_order
            .0
            .iter()
            .map(|r| (r.selector.to_string(), r.order))
            .collect();
        assert_eq!(
            rules,
            [
                ("app=db".to_string(), 10),
                ("tier in (edge),!canary".to_string(), -1)
            ]
        );
    }

    #[test]
    fn a_selector_that_cannot_be_read_names_its_entry() {
        let p = policy(json!({ "drainOrder": [
            { "podSelector": { "matchLabels": { "app": "db" } }, "order": 1 },
            { "podSelector": { "matchExpressions": [
                { "key": "tier", "operator": "Near" },
            ] }, "order": 2 },
        ] }));
        let err = drain_options(&p).expect_err("refused");
        assert!(
            err.starts_with("spec.drain.drainOrder[1].podSelector: "),
            "{err}"
        );
    }
}
