//! A NodeMaintenance's drain policy as the drain's options: the CLI's flags, as fields.
use std::time::Duration;

use crate::api::node_maintenance::DrainPolicy;
use crate::classify::Permissions;
use crate::cluster::nodes::DryRun;
use crate::drain::DrainOptions;
use crate::drain::ladder::Ladder;
use crate::plan::guards::GuardOptions;

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
        },
        pod_selector: p.pod_selector.clone(),
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
