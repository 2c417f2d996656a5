use std::time::Duration;

use clap::Args;
use kordon::classify::Permissions;
use kordon::cluster::nodes::DryRun;
use kordon::context::Context;
use kordon::drain::ladder::{DeleteRule, Ladder};
use kordon::drain::{self, DrainError, DrainOptions, DrainReport};
use kordon::interrupt::Interrupt;
use kordon::names::NodeName;
use kordon::output::progress::DrainProgress;
use kordon::output::{Printer, Report};
use kordon::plan::guards::GuardOptions;
use kordon::policy::{AfterDeadline, BudgetMode};
use kordon::snapshot::Reach;
use kordon::tiers::{DrainOrder, OrderRule};

use super::interrupt::on_ctrl_c;
use super::{GlobalArgs, values};

#[derive(Debug, Args)]
pub struct DrainArgs {
    #[command(flatten)]
    pub targets: super::NodeSelection,
    #[command(flatten)]
    pub drain: DrainFlags,
    /// The node is down (the article's NotReady): once it has been not Ready and its
    /// kubelet silent for --node-down-after, taint it out of service
    /// (node.kubernetes.io/out-of-service, Kubernetes' non-graceful shutdown) so the
    /// control plane deletes its pods and releases their volumes, and follow their
    /// replacements to Ready. `uncordon` lifts the taint once the node is back.
    #[arg(long)]
    pub node_down: bool,
    /// How long a node must have been silent for --node-down to take it as down.
    #[arg(long, value_parser = values::positive_duration, default_value = "5m", requires = "node_down")]
    pub node_down_after: Duration,
}

/// The decisions a drain needs from the user, shared by `drain`, `maintain` and `plan`.
#[derive(Debug, Args)]
pub struct PolicyFlags {
    /// Leave DaemonSet pods in place instead of refusing to drain.
    #[arg(long)]
    pub ignore_daemonsets: bool,
    /// Evict pods with emptyDir volumes; their data is lost.
    #[arg(long)]
    pub delete_emptydir_data: bool,
    /// Evict pods that no controller manages; they are gone for good.
    #[arg(long)]
    pub force: bool,
    /// Evict pods marked never to be disrupted by other tools' annotations
    /// (karpenter.sh/do-not-disrupt=true, cluster-autoscaler.kubernetes.io/safe-to-evict=false).
    #[arg(long)]
    pub ignore_do_not_disrupt: bool,
    /// Which budgets pace evictions: PodDisruptionBudgets plus an implicit budget for
    /// workloads without one (implicit), or PodDisruptionBudgets only (pdb-only, as
    /// kubectl drain).
    #[arg(long, value_enum, default_value_t)]
    pub budget: BudgetMode,
    /// For a pod that cannot go without an outage (a lone replica, a budget that never
    /// allows), restart its Deployment so a replacement is Ready first.
    #[arg(long)]
    pub surge: bool,
    /// Accept that a workload may drop to zero Ready pods (lone replicas).
    #[arg(long)]
    pub allow_disruption: bool,
    /// Evict DaemonSet pods too, after every other pod, with the node tainted
    /// kordon.dev/draining:NoSchedule so their DaemonSets do not put them back until
    /// the uncordon. A pod whose DaemonSet tolerates that taint stays.
    #[arg(long)]
    pub evict_daemonsets: bool,
    /// Evict pods matching the label selector in the tier N (default 0; lower goes
    /// first, negative before unlisted pods), e.g. app=db=10. Repeatable; a pod matching
    /// several takes the largest N. Within one N, lower priority goes first.
    #[arg(long = "drain-order", value_name = "SELECTOR=N", value_parser = values::drain_order)]
    pub drain_order: Vec<OrderRule>,
}

impl PolicyFlags {
    pub fn permissions(&self) -> Permissions {
        Permissions {
            ignore_daemonsets: self.ignore_daemonsets,
            delete_emptydir_data: self.delete_emptydir_data,
            force: self.force,
            ignore_do_not_disrupt: self.ignore_do_not_disrupt,
            evict_daemonsets: self.evict_daemonsets,
        }
    }

    pub fn drain_order(&self) -> DrainOrder {
        DrainOrder(self.drain_order.clone())
    }

    pub fn guards(&self, disable_eviction: bool) -> GuardOptions {
        GuardOptions {
            budget: self.budget,
            surge: self.surge,
            allow_disruption: self.allow_disruption,
            disable_eviction,
        }
    }
}

/// The flags that say how to drain, shared by `drain` and `maintain`.
#[derive(Debug, Args)]
pub struct DrainFlags {
    #[command(flatten)]
    pub policy: PolicyFlags,
    /// Only drain pods matching this label selector.
    #[arg(long, value_name = "SELECTOR")]
    pub pod_selector: Option<String>,
    /// Seconds each pod gets to terminate; -1 uses the pod's own.
    #[arg(long, default_value = "-1", allow_negative_numbers = true, value_parser = values::grace_period)]
    pub grace_period: i64,
    /// Give up after this long (e.g. 90s, 5m); 0 waits forever.
    #[arg(long, value_parser = values::duration, default_value = "0s")]
    pub timeout: Duration,
    /// Delete pods instead of evicting them: bypasses every PodDisruptionBudget.
    #[arg(long)]
    pub disable_eviction: bool,
    /// Evictions in flight at once.
    #[arg(long, default_value = "8", value_parser = values::at_least_one)]
    pub concurrency: usize,
    /// Drain even when the plan finds pods whose replacements no other node can take:
    /// they stay Pending and their workloads lose availability.
    #[arg(long)]
    pub allow_pending: bool,
    /// Keep implicit budgets inside this process instead of making them
    /// PodDisruptionBudgets that every other evictor honours while the drain runs.
    #[arg(long)]
    pub no_shared_budgets: bool,
    /// How long the shared budgets outlive a drain that was killed: their Lease
    /// expires this long after its last renewal, and the next drain clears them.
    #[arg(long, value_parser = values::lease_duration, default_value = "15s", conflicts_with = "no_shared_budgets")]
    pub shared_budget_lease: Duration,
    #[command(flatten)]
    pub ladder: LadderFlags,
    /// Take the node out of external load balancers with the cordon
    /// (node.kubernetes.io/exclude-from-external-load-balancers), back at uncordon.
    #[arg(long)]
    pub exclude_from_load_balancers: bool,
    /// How long load balancers get to deregister the node before the first eviction,
    /// when a Service of type LoadBalancer exists.
    #[arg(long, value_parser = values::duration, default_value = "30s", value_name = "DURATION", requires = "exclude_from_load_balancers")]
    pub deregistration_delay: Duration,
    /// Only print what would happen (client), or let the server check it (server).
    #[arg(long, value_enum, default_value_t, num_args = 0..=1, default_missing_value = "client", require_equals = true)]
    pub dry_run: DryRun,
}

/// The escalation ladder: what happens to pods a budget still holds at a deadline.
#[derive(Debug, Args)]
pub struct LadderFlags {
    /// After this long (e.g. 10m), pods a budget still holds are handled by
    /// --delete-past-budget, --delete-unhealthy-past-budget and --on-deadline instead of
    /// waited on.
    #[arg(long, value_parser = values::duration, value_name = "DURATION")]
    pub deadline: Option<Duration>,
    /// After --deadline, delete the held pods this rule names past their budgets:
    /// NAMESPACE, NAMESPACE:SELECTOR, or *:SELECTOR. Repeatable. Each deletion leaves a
    /// Warning Event on the pod and the node and is listed on the node.
    #[arg(
        long = "delete-past-budget",
        value_name = "NAMESPACE[:SELECTOR]",
        value_parser = values::delete_rule,
        requires = "deadline"
    )]
    pub delete: Vec<DeleteRule>,
    /// After --deadline, delete held pods that are not Ready past their budgets: they
    /// serve nothing (a budget's unhealthyPodEvictionPolicy: AlwaysAllow).
    #[arg(long, requires = "deadline")]
    pub delete_unhealthy_past_budget: bool,
    /// After --deadline, what happens to held pods no rule allows: wait (until
    /// --timeout), or abandon (stop, uncordon the node if kordon cordoned it, report).
    #[arg(long, value_enum, requires = "deadline")]
    pub on_deadline: Option<AfterDeadline>,
}

impl LadderFlags {
    fn ladder(&self) -> Ladder {
        Ladder {
            deadline: self.deadline,
            delete: self.delete.clone(),
            unhealthy: self.delete_unhealthy_past_budget,
            then: self.on_deadline.unwrap_or_default(),
        }
    }
}

impl DrainFlags {
    /// The drain's options; a deadline that could never come before the timeout is
    /// refused.
    pub fn options(&self, interrupt: Interrupt) -> super::error::Result<DrainOptions> {
        let ladder = self.ladder.ladder();
        let timeout = (!self.timeout.is_zero()).then_some(self.timeout);
        if let Err(e) = ladder.check(timeout) {
            return Err(super::error::CliError::Usage(format!(
                "--deadline {} is not before --timeout {}: the drain would time out before its ladder engages; shorten --deadline or lengthen --timeout",
                humantime::format_duration(e.deadline),
                humantime::format_duration(e.timeout)
            )));
        }
        Ok(DrainOptions {
            permissions: self.policy.permissions(),
            pod_selector: self.pod_selector.clone(),
            drain_order: self.policy.drain_order(),
            grace_period: u32::try_from(self.grace_period).ok(),
            disable_eviction: self.disable_eviction,
            dry_run: self.dry_run,
            timeout: (!self.timeout.is_zero()).then_some(self.timeout),
            concurrency: self.concurrency,
            guards: self.policy.guards(self.disable_eviction),
            allow_pending: self.allow_pending,
            shared_budgets: (!self.no_shared_budgets).then_some(self.shared_budget_lease),
            ladder,
            node_down: None,
            interrupt,
            // `maintain`'s drain fences; a drain alone does not (docs/cli.md).
            fence: false,
            load_balancers: self
                .exclude_from_load_balancers
                .then_some(self.deregistration_delay),
        })
    }
}

/// Drains one node, printing its plan first.
pub async fn drain_node(
    ctx: &Context,
    printer: &Printer,
    node: &NodeName,
    options: &DrainOptions,
) -> Result<DrainReport, DrainError> {
    let plan = drain::plan(ctx, node, options, Reach::Room).await?;
    let plan_report = kordon::output::drain::PodVerdicts {
        node: node.clone(),
        pods: plan.verdicts(),
    };
    printer.progress(plan_report.text());
    if let Some(forecast) = &plan.forecast {
        printer.progress(kordon::output::plan::forecast(forecast).trim_end());
    }
    let progress = DrainProgress::new(*printer, plan.evictable());
    let theirs = plan.cordoned_by_someone_else;
    let result = drain::execute(ctx, plan, options, &|e| progress.event(&e)).await;
    progress.finish();
    match result {
        Err(e @ DrainError::Abandoned { .. }) => {
            Err(kordon::workflow::abandoned_drain(&ctx.conn, theirs, e).await)
        }
        other => other,
    }
}

pub async fn run(global: &GlobalArgs, args: &DrainArgs) -> super::error::Result {
    let options = DrainOptions {
        node_down: args.node_down.then_some(args.node_down_after),
        ..args.drain.options(on_ctrl_c(
            "`kordon status NODE` shows where the node was left",
        ))?
    };
    let ctx = Context::open(&global.connection()).await?;
    let printer = Printer::new(global.output);
    let targets: Vec<NodeName> = args
        .targets
        .resolve(&ctx.conn, false)
        .await?
        .iter()
        .filter_map(|n| n.metadata.name.as_deref().map(NodeName::from))
        .collect();
    if args.drain.disable_eviction {
        tracing::warn!(
            "--disable-eviction deletes pods directly: PodDisruptionBudgets are NOT honoured"
        );
        eprintln!(
            "warning: --disable-eviction deletes pods directly: PodDisruptionBudgets are NOT honoured"
        );
    }
    let mut reports = Vec::new();
    for node in &targets {
        let report = drain_node(&ctx, &printer, node, &options).await?;
        printer.progress(report.text());
        reports.push(report);
    }
    if printer.format().is_document() {
        printer.report(&kordon::output::drain::DrainReports(reports));
    }
    Ok(())
}
