use std::time::Duration;

use super::error::CliError;
use clap::Args;
use kordon::context::Context;
use kordon::fleet::rate::RateBudget;
use kordon::fleet::sequence::Sequence;
use kordon::fleet::window::Window;
use kordon::fleet::{
    self, LockOptions, MaxUnavailable, Order, RollOptions, RollProgress, RunSpec, RunState,
};
use kordon::metric_gate::{AlertmanagerGate, Endpoint, Gates, Matchers, PrometheusGate, Query};
use kordon::output::Printer;

use super::drain::DrainFlags;
use super::interrupt::on_ctrl_c;
use super::maintain::WorkArgs;
use super::{GlobalArgs, NodeSelection, values};

#[derive(Debug, Args)]
pub struct RollArgs {
    #[command(flatten)]
    pub targets: NodeSelection,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Halt once this many nodes have failed.
    #[arg(long, default_value = "1", value_parser = values::at_least_one)]
    pub max_failures: usize,
    /// Count selected nodes someone else has out of service (cordoned, NotReady, tainted
    /// NoSchedule/NoExecute) against the caps, and leave them be until they are back:
    /// the fleet is as short of them as of a node kordon drains. =false counts only
    /// kordon's own, and maintains such a node in its turn.
    #[arg(
        long,
        value_name = "BOOL",
        default_value = "true",
        num_args = 0..=1,
        default_missing_value = "true",
        require_equals = true,
        value_parser = values::boolean
    )]
    pub count_others_out: bool,
    /// Taint the nodes still waiting in the roll PreferNoSchedule (kordon.dev/pending-maintenance),
    /// so the pods it evicts land on nodes that are done where they can, not on a node
    /// whose own drain would move them again. =false leaves them untainted.
    #[arg(
        long,
        value_name = "BOOL",
        default_value = "true",
        num_args = 0..=1,
        default_missing_value = "true",
        require_equals = true,
        value_parser = values::boolean
    )]
    pub taint_pending: bool,
    /// POST a JSON notification to this webhook (http:// or https://) when a node
    /// starts, a budget holds one of its pods, a node fails, no node may start for a
    /// while, and when the run ends; retried, never holding the roll up.
    #[arg(long, value_name = "URL")]
    pub notify: Option<kordon::notify::Webhook>,
    /// The Prometheus (http:// or https:// base URL) that --pause-on-query asks.
    #[arg(long, value_name = "URL")]
    pub prometheus: Option<Endpoint>,
    /// No new node starts while this PromQL query returns any series, read as an alert
    /// rule (e.g. "rate(http_errors_total[1m]) > 0.05"); asked before each start and
    /// during --pause-between, every 5s while it holds the roll. A query Prometheus
    /// cannot answer holds it too. Nodes under way go on. Repeatable.
    #[arg(long = "pause-on-query", value_name = "PROMQL")]
    pub pause_on_query: Vec<Query>,
    /// The Alertmanager (http:// or https:// base URL) that --pause-on-alerts asks.
    #[arg(long, value_name = "URL")]
    pub alertmanager: Option<Endpoint>,
    /// No new node starts while an active alert (not silenced, not inhibited) matches
    /// all these labels, e.g. severity=critical,team=shop (also !=, =~, !~); asked like
    /// --pause-on-query. Repeatable: any of them holds the roll.
    #[arg(long = "pause-on-alerts", value_name = "MATCHERS")]
    pub pause_on_alerts: Vec<Matchers>,
    /// Continue the last unfinished roll (its nodes and command, unless given again).
    #[arg(long)]
    pub resume: bool,
    #[command(flatten)]
    pub lock: LockArgs,
    /// How long to wait for another run's lock before refusing (0: refuse at once).
    #[arg(long, value_parser = values::duration, default_value = "0s")]
    pub lock_timeout: Duration,
    /// How long the lock outlives a run that stopped renewing it (a crash).
    #[arg(long, value_parser = values::lease_duration, default_value = "15s")]
    pub lock_duration: Duration,
    #[command(flatten)]
    pub drain: DrainFlags,
    #[command(flatten)]
    pub work: WorkArgs,
}

/// The metric gates of `--prometheus`/`--pause-on-query` and
/// `--alertmanager`/`--pause-on-alerts`: each URL with something to ask, and the other way
/// round.
fn metric_gates(args: &RollArgs) -> Result<Option<Gates>, CliError> {
    let pair =
        |url: &Option<Endpoint>, asked: bool, url_flag: &str, ask_flag: &str| match (url, asked) {
            (Some(_), false) => Err(CliError::Usage(format!(
                "{url_flag} needs at least one {ask_flag}"
            ))),
            (None, true) => Err(CliError::Usage(format!("{ask_flag} needs {url_flag} URL"))),
            _ => Ok(url.clone()),
        };
    let prometheus = pair(
        &args.prometheus,
        !args.pause_on_query.is_empty(),
        "--prometheus",
        "--pause-on-query",
    )?;
    let alertmanager = pair(
        &args.alertmanager,
        !args.pause_on_alerts.is_empty(),
        "--alertmanager",
        "--pause-on-alerts",
    )?;
    Ok(Gates::new(
        prometheus.map(|url| PrometheusGate {
            url,
            queries: args.pause_on_query.clone(),
        }),
        alertmanager.map(|url| AlertmanagerGate {
            url,
            alerts: args.pause_on_alerts.clone(),
        }),
    ))
}

/// When nodes may start: the caps, the order, the rate, the sequence, the windows and the
/// soak (a roll's, and `plan --fleet`'s forecast of one).
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// How many nodes may be out of service at once: a number or a percentage of the
    /// selected nodes (rounded down, at least 1). Failed nodes stay cordoned and count.
    #[arg(long, default_value = "1", value_name = "N|N%")]
    pub max_unavailable: MaxUnavailable,
    /// At most N nodes out at once per value of a node label, e.g.
    /// topology.kubernetes.io/zone=1 (never two nodes of one zone). Repeatable.
    #[arg(long = "max-unavailable-per", value_name = "LABEL=N", value_parser = per_label)]
    pub max_unavailable_per: Vec<(String, u32)>,
    /// Which nodes go first.
    #[arg(long, value_enum, default_value_t)]
    pub order: Order,
    /// At most N node starts in any PERIOD, e.g. 24h=5. Counted from the marks of every
    /// roll under the lock, so it holds across re-runs and crashes; once spent, the roll
    /// waits until the oldest start in the period ages out.
    #[arg(long, value_name = "PERIOD=N", value_parser = max_per)]
    pub max_per: Option<RateBudget>,
    /// Finish every node of one domain (a value of the label KEY) before any node of the
    /// next starts: the domains named first, in that order, then the others by name,
    /// then nodes without the label, e.g. topology.kubernetes.io/zone=b,a. A failed node
    /// counts as finished (--max-failures decides whether the roll goes on).
    #[arg(long, value_name = "KEY[=V1,V2,...]")]
    pub sequence: Option<Sequence>,
    /// Only start nodes inside this window, e.g. "Mon-Fri 02:00-05:00 Europe/Berlin"
    /// (days, HH:MM[:SS]-HH:MM[:SS], IANA time zone, default UTC), optionally with
    /// dates it does not open on: "... except 2026-12-24,2026-12-28..2027-01-01".
    /// Repeatable.
    #[arg(long = "window", value_name = "WINDOW")]
    pub windows: Vec<Window>,
    /// Soak time after a node is done before the next one starts.
    #[arg(long, value_parser = values::duration, default_value = "0s")]
    pub pause_between: Duration,
}

impl PolicyArgs {
    pub fn rules(&self) -> kordon::fleet::StartRules {
        kordon::fleet::StartRules {
            max_unavailable: self.max_unavailable,
            max_unavailable_per: self.max_unavailable_per.iter().cloned().collect(),
            order: self.order,
            max_per: self.max_per,
            sequence: self.sequence.clone(),
            windows: self.windows.clone(),
            pause_between: self.pause_between,
        }
    }
}

/// `PERIOD=N` for `--max-per`.
fn max_per(s: &str) -> Result<RateBudget, String> {
    kordon::fleet::rate::parse_flag(s, values::duration)
}

/// `LABEL=N` for `--max-unavailable-per`.
fn per_label(s: &str) -> Result<(String, u32), String> {
    let (label, n) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("\"{s}\" is not LABEL=N, e.g. topology.kubernetes.io/zone=1"))?;
    let n: u32 = n
        .parse()
        .map_err(|_| format!("\"{n}\" in \"{s}\" is not a number of nodes"))?;
    if label.is_empty() || n == 0 {
        return Err(format!("\"{s}\" needs a label and at least 1 node"));
    }
    Ok((label.to_string(), n))
}

/// Where the roll's lock (and the record of the last run) lives.
#[derive(Debug, Args)]
pub struct LockArgs {
    /// Namespace of the roll's lock, a coordination.k8s.io Lease named kordon-roll.
    #[arg(long, default_value = "kube-system", value_name = "NAMESPACE", value_parser = values::namespace)]
    pub lock_namespace: String,
}

pub async fn run(global: &GlobalArgs, args: &RollArgs) -> super::error::Result {
    if args.drain.dry_run != kordon::cluster::nodes::DryRun::None {
        return Err(CliError::Usage(
            "roll has no --dry-run: it plans the whole fleet before touching anything; `kordon plan NODE…` shows a plan alone".into(),
        ));
    }
    let metric_gates = metric_gates(args)?.map(std::sync::Arc::new);
    let drain = args.drain.options(on_ctrl_c(
        "every node's phase is recorded; re-run the roll to continue",
    ))?;
    let ctx = Context::open(&global.connection()).await?;
    let conn = &ctx.conn;
    let mut spec = RunSpec {
        nodes: args.targets.nodes.iter().map(ToString::to_string).collect(),
        selector: args.targets.selector.clone(),
        command: args.work.command.clone(),
        manual: args.work.manual,
    };
    let given = !spec.nodes.is_empty() || spec.selector.is_some();
    if args.resume && !given {
        // The last run's nodes and command.
        match fleet::run::last(conn, &args.lock.lock_namespace).await? {
            Some(record) => match record.spec {
                Some(recorded) => spec = recorded,
                None => {
                    return Err(CliError::Failed(format!(
                        "nothing to resume: the last run {} recorded no command",
                        record.run
                    )));
                }
            },
            None => {
                return Err(CliError::Failed(format!(
                    "nothing to resume: no roll has run in this cluster (or in --lock-namespace {})",
                    args.lock.lock_namespace
                )));
            }
        }
    }
    let work = super::maintain::work(spec.manual, &spec.command, "kordon roll NODE…")?;
    // A recorded run's names were checked when it started; check them again anyway,
    // as a record is only an annotation anyone could have edited.
    let nodes = spec
        .nodes
        .iter()
        .map(|n| kordon::names::NodeName::parse(n))
        .collect::<Result<Vec<_>, _>>()?;
    let selection = NodeSelection {
        nodes,
        selector: spec.selector.clone(),
    };
    let targets = selection.resolve(conn, false).await?;
    if spec.manual && !matches!(args.policy.max_unavailable, MaxUnavailable::Count(1)) {
        return Err(CliError::Usage(
            "--manual prompts for one node at a time; use it with --max-unavailable 1".into(),
        ));
    }
    let options = RollOptions {
        // The roll holds its nodes cordoned and lifts the cordon itself.
        drain: kordon::drain::DrainOptions {
            node_down: None,
            ..drain
        },
        work,
        ready: args.work.ready(),
        ready_timeout: args.work.ready_timeout,
        gates: args.work.gates(),
        detach: args.work.detach(),
        rules: args.policy.rules(),
        max_failures: args.max_failures,
        count_others_out: args.count_others_out,
        taint_pending: args.taint_pending,
        notify: args.notify.clone(),
        metric_gates,
        lock: LockOptions {
            namespace: args.lock.lock_namespace.clone(),
            wait: args.lock_timeout,
            duration: args.lock_duration,
        },
        spec,
        resume: args.resume,
    };
    let printer = Printer::new(global.output);
    let on_progress = |p: RollProgress| {
        if let Some(line) = kordon::output::roll::progress_line(&p) {
            printer.progress(line);
        }
    };
    let report = fleet::roll(&ctx, targets, &options, &on_progress).await?;
    printer.report(&report);
    match report.state {
        RunState::Done => Ok(()),
        state => Err(CliError::after_report(kordon::error::Error::RollStopped {
            state,
            why: kordon::output::roll::why_incomplete(&report),
        })),
    }
}
