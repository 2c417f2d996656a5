//! Rolling maintenance over many nodes (`kordon roll`): plan the whole fleet first,
//! take a cluster-wide lock, then run the four steps on up to N nodes at a time, each
//! behind health gates, inside maintenance windows, recording every phase on its node
//! so that a re-run after a crash continues where the last one stopped.
pub mod approve;
pub mod caps;
pub mod forecast;
mod gate_watch;
mod hold;
pub mod mark;
mod node;
mod notices;
mod others;
pub mod pending;
mod preflight;
pub mod rate;
pub mod run;
mod schedule;
pub mod sequence;
pub mod unavailable;
pub mod window;

use std::collections::VecDeque;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use serde::Serialize;
use tokio::sync::watch;

use crate::advice::Advice;
use crate::cluster::access::Permission;
use crate::cluster::events::Events;
use crate::cluster::lease::{self, LockError, LockSpec};
use crate::cluster::{ClusterError, Connection};
use crate::context::Context;
use crate::drain::{DrainOptions, Event};
use crate::flag::Flag;
use crate::interrupt::Interrupt;
use crate::names::NodeName;
use crate::node_state::{LeftAs, NodeState};
use crate::plan::PlanReport;
use crate::snapshot::{Reach, Snapshot, Then};
use crate::workflow::{ReadyCriteria, Work};
use mark::{Mark, Phase};
pub use node::{NodeResult, Outcome};
use preflight::{continued, out_of_service, plan_fleet};
pub use run::{MaxUnavailable, Order, RunRecord, RunSpec, RunState};
use window::Window;

/// When a roll's nodes may start: the caps, the order, the rate, the sequence, the
/// windows and the soak. `roll` follows them; `plan --fleet` runs them forward in time.
#[derive(Debug, Clone)]
pub struct StartRules {
    pub max_unavailable: MaxUnavailable,
    /// At most this many nodes out at once per value of a node label (e.g. one per
    /// `topology.kubernetes.io/zone`); see [`caps`].
    pub max_unavailable_per: std::collections::BTreeMap<String, u32>,
    pub order: Order,
    /// `--max-per`: at most N node starts per period, counted from the marks of every
    /// run under the lock (see [`rate`]).
    pub max_per: Option<rate::RateBudget>,
    /// `--sequence`: every node of one domain finished before the next domain starts
    /// (see [`sequence`]).
    pub sequence: Option<sequence::Sequence>,
    pub windows: Vec<Window>,
    /// Soak time after a node is done before the next one starts.
    pub pause_between: Duration,
}

#[derive(Debug, Clone)]
pub struct RollOptions {
    pub drain: DrainOptions,
    pub work: Work,
    pub ready: ReadyCriteria,
    pub ready_timeout: Duration,
    /// The health gates each node passes, and how long each may take.
    pub gates: crate::workflow::gate::Gates,
    /// The wait for each node's volumes to detach before its work.
    pub detach: crate::policy::Detach,
    /// When nodes may start.
    pub rules: StartRules,
    /// The roll halts once this many nodes failed.
    pub max_failures: usize,
    /// Selected nodes someone else has out of service take places in the caps, and
    /// wait until they are back (see [`unavailable`]); `false`: only kordon's count.
    pub count_others_out: bool,
    /// The nodes waiting in the run carry a `PreferNoSchedule` taint (see [`pending`]).
    pub taint_pending: bool,
    /// `--notify`: the webhook told of each start, block, pause, failure and the end.
    pub notify: Option<crate::notify::Webhook>,
    /// `--prometheus`/`--pause-on-query`, `--alertmanager`/`--pause-on-alerts`: no new
    /// node starts while one fails (see [`crate::metric_gate`]).
    pub metric_gates: Option<std::sync::Arc<crate::metric_gate::Gates>>,
    pub lock: LockOptions,
    /// What the run was asked to do, kept in the lease to recognise a re-run.
    pub spec: RunSpec,
    /// `--resume`: continue the last unfinished run (which must exist).
    pub resume: bool,
}

#[derive(Debug, Clone)]
pub struct LockOptions {
    pub namespace: String,
    /// How long to wait for another run's lock before refusing.
    pub wait: Duration,
    /// The lease duration: how soon a crashed run's lock can be taken over.
    pub duration: Duration,
}

/// The lease every roll takes, in the lock namespace.
pub const LOCK_NAME: &str = "kordon-roll";

/// Progress as it happens, for the output layer.
#[derive(Debug, Clone)]
pub enum RollProgress {
    Started {
        run: String,
        resumed: bool,
        /// How many nodes of this run may be out at once: the cap less the nodes
        /// other runs sharing the lock left out of service (`out_elsewhere`).
        slots: usize,
        out_elsewhere: Vec<String>,
        order: Vec<NodeName>,
        /// `--sequence`: the domains in the order they go ("zone=b, zone=a, no zone").
        domains: Option<String>,
    },
    /// `--sequence`: the nodes of this domain start now; the next domain waits until
    /// each of them is done or failed.
    Domain {
        domain: String,
    },
    /// The pre-flight plan of one wave: nodes that may be down together.
    Planned {
        wave: Vec<NodeName>,
        report: PlanReport,
    },
    /// No new node starts before `until`.
    Waiting {
        until: jiff::Timestamp,
        why: WaitReason,
    },
    Phase {
        node: NodeName,
        phase: Phase,
    },
    Drain {
        node: NodeName,
        event: Event,
    },
    Failed {
        node: NodeName,
        phase: Phase,
        error: String,
    },
    /// `--manual`: asking the person at the terminal to do the work.
    Prompt {
        node: NodeName,
        text: String,
    },
    /// The selected nodes someone else has out of service changed: these take places
    /// in the caps now (none: every one of them is back).
    OutByOthers {
        nodes: Vec<unavailable::OutNode>,
    },
    /// Someone uncordoned a node this run has out; it was cordoned again.
    Recordoned {
        node: NodeName,
    },
    /// How the wait for a node's volumes ended before its work.
    Volumes {
        node: NodeName,
        outcome: crate::workflow::detach::Outcome,
    },
    /// A failing metric gate held the roll; `kordon approve` (the lease's
    /// `kordon.dev/approve`, valued `approval`) lets this node start.
    Approved {
        node: NodeName,
        approval: String,
    },
    /// Ctrl-C or a lost lock: nodes in progress stop at their next safe point.
    Stopping {
        why: RunState,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitReason {
    /// Outside every maintenance window: the next one opens then.
    Window,
    /// `--pause-between` after the last node.
    Pause,
    /// `--max-per`: this many nodes started within the period; the next may start
    /// once the oldest of those starts is a period old.
    Rate { starts: u32, period: Duration },
    /// NodeMaintenances (a MaintenancePlan's, the controller's) have the rest of the
    /// cap out; looked at again then.
    Others,
    /// Selected nodes someone else has out of service take the rest of the caps (or
    /// are all that is left to start); looked at again then.
    OthersOut,
    /// A metric gate fails (`why`: the query and its series, the alert and its labels,
    /// or the gate that cannot answer); asked again then, and at once when it clears.
    Gate { why: String },
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RollReport {
    pub run: String,
    pub resumed: bool,
    pub state: RunState,
    pub max_unavailable: usize,
    pub nodes: Vec<NodeResult>,
    /// Selected nodes someone else had out of service during the run, each with the
    /// last reason seen: they took places in the caps (`--count-others-out`).
    pub out_by_others: Vec<unavailable::OutNode>,
    /// How the notifications to `--notify`'s webhook went.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notifications: Option<crate::notify::Delivery>,
}

#[derive(Debug, thiserror::Error)]
pub enum RollError {
    #[error("{0}")]
    MaxUnavailable(String),
    #[error("nothing to resume: {0}")]
    NothingToResume(String),
    #[error(
        "{} is still in the middle of another run ({}); resume that run, or finish those nodes by hand (uncordon, remove their kordon.dev/ annotations); nothing was changed",
        plural(.nodes.len(), "node"), .nodes.join("; ")
    )]
    Unfinished { nodes: Vec<String> },
    #[error(
        "the controller carries out a NodeMaintenance on {}; leave those nodes out of the roll, or delete their NodeMaintenance first; nothing was changed",
        .nodes.join("; ")
    )]
    Held { nodes: Vec<String> },
    #[error(
        "at most {max_unavailable} node(s) out at a time leaves no room: {} still out of service from another run ({}); finish that run first (resume it, or re-run it); nothing was changed",
        plural(.nodes.len(), "node"), .nodes.join("; ")
    )]
    NoRoom {
        max_unavailable: usize,
        nodes: Vec<String>,
    },
    #[error(
        "the fleet plan is unsafe: {}; nothing was changed",
        .waves.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    Unsafe { waves: Vec<run::UnsafeWave> },
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Notify(#[from] crate::notify::NotifyError),
    #[error("the metric gates' HTTP client: {0}")]
    Http(#[from] crate::http::HttpError),
}

impl RollError {
    pub fn advice(&self) -> Vec<Advice> {
        match self {
            Self::Unfinished { .. } => vec![Advice::Give(Flag::Resume, "resume that run")],
            Self::NoRoom { .. } => vec![
                Advice::Give(Flag::Resume, "resume that run"),
                Advice::Raise(Flag::MaxUnavailable),
            ],
            Self::Unsafe { waves } => {
                let mut refused: Vec<_> = waves.iter().flat_map(|w| w.refused.clone()).collect();
                refused.sort_by(|a, b| a.0.cmp(&b.0));
                refused.dedup_by(|a, b| a.0 == b.0);
                if refused.is_empty() {
                    Vec::new()
                } else {
                    vec![crate::advice::decide(&refused)]
                }
            }
            Self::Lock(e) => e.advice(),
            Self::Cluster(e) => e.advice(),
            _ => Vec::new(),
        }
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// What the node tasks share.
pub(crate) struct Job<'a> {
    ctx: &'a Context,
    conn: &'a Connection,
    options: &'a RollOptions,
    run: String,
    events: Events,
    /// Set when the roll must stop at the next safe point, with why.
    stop: watch::Receiver<Option<RunState>>,
    /// Asks the metric gates, when there are any.
    checker: Option<crate::metric_gate::Checker>,
    on_progress: &'a (dyn Fn(RollProgress) + Sync),
}

pub async fn roll(
    ctx: &Context,
    targets: Vec<Node>,
    opts: &RollOptions,
    on_progress: &(dyn Fn(RollProgress) + Sync),
) -> Result<RollReport, RollError> {
    let conn = &ctx.conn;
    let cap = (opts.rules.max_unavailable)
        .resolve(targets.len())
        .map_err(RollError::MaxUnavailable)?;
    // Another run holding the lock is the first thing to say (or to wait for): what
    // this run decides below must be read after that run has let go.
    let lease = lease::wait_free(conn, &opts.lock.namespace, LOCK_NAME, opts.lock.wait).await?;
    let last = lease.as_ref().and_then(run::of_lease);
    let (run_id, resumed) =
        run::decide(last.as_ref(), &opts.spec, opts.resume).map_err(RollError::NothingToResume)?;

    // One read of the cluster: marks, pods to plan with, the workloads each node holds.
    let names: Vec<NodeName> = targets.iter().map(name_of).collect();
    let mut snapshot = Snapshot::live(&ctx.view, &names, Reach::Placement, Then::Look).await?;
    let out = out_of_service(&snapshot.nodes, &targets, &run_id, &opts.lock.namespace);
    let (slots, marks_elsewhere) = room(&out, cap)?;
    // Read before this run writes a mark: what `--max-per` counts from the cluster.
    let started = mark::starts(&snapshot.nodes, &opts.lock.namespace);
    let mut results = Vec::new();
    let holdings = run::holdings(&snapshot);
    let selected = targets.clone();
    let queue = queue(targets, &run_id, opts, &holdings, &mut results);
    let order: Vec<NodeName> = queue.iter().map(|(n, _)| name_of(n)).collect();
    let checker = checker(opts)?;
    let told = (opts.notify.as_ref())
        .map(|webhook| notices::Told::start(webhook, &run_id))
        .transpose()?;
    let on_progress = &|p: RollProgress| {
        if let Some(told) = &told {
            told.tell(&p);
        }
        on_progress(p);
    };
    on_progress(RollProgress::Started {
        run: run_id.clone(),
        resumed,
        slots,
        out_elsewhere: out.elsewhere,
        order: order.clone(),
        domains: domains(opts, &queue),
    });

    plan_fleet(&mut snapshot, &queue, slots, opts, on_progress)?;
    ctx.require("roll nodes", &needed_permissions(opts)).await?;

    let holder = run::holder(&run_id);
    let lock = take_lock(conn, opts, &holder, &run_id, &order).await?;

    let mut pending = pending::Pending::new(opts.taint_pending.then_some(run_id.as_str()));
    pending
        .put_on(conn, queue.iter().map(|(n, _)| n), &selected)
        .await;
    let (stop_tx, stop_rx) = watch::channel(None);
    let watcher = spawn_stop_watch(stop_tx, opts.drain.interrupt.clone(), lock.lost());
    let job = Job {
        ctx,
        conn,
        options: opts,
        run: run_id.clone(),
        events: Events::new(conn, &holder),
        stop: stop_rx,
        checker,
        on_progress,
    };
    let scope = opts
        .count_others_out
        .then(|| names.iter().map(ToString::to_string).collect());
    let mut out_by_others = Vec::new();
    let state = schedule::schedule(
        &job,
        &holdings,
        queue,
        schedule::Cap {
            max: cap,
            marks_elsewhere,
            scope,
            started,
        },
        &mut results,
        &mut out_by_others,
        &mut pending,
    )
    .await;
    pending.lift_all(conn).await;
    watcher.abort();
    let state = match state {
        RunState::Done if results.iter().any(NodeResult::failed) => RunState::Failed,
        state => state,
    };
    release(lock, run::record(&run_id, &opts.spec, state, &order)).await;
    results.sort_by_key(|r| order.iter().position(|n| *n == r.node));
    let mut report = RollReport {
        run: run_id,
        resumed,
        state,
        max_unavailable: cap,
        nodes: results,
        out_by_others,
        notifications: None,
    };
    if let Some(told) = told {
        report.notifications = Some(told.end(&report).await);
    }
    Ok(report)
}

/// What asks the metric gates, when there are any (built before anything changes).
fn checker(
    opts: &RollOptions,
) -> Result<Option<crate::metric_gate::Checker>, crate::http::HttpError> {
    (opts.metric_gates.as_ref())
        .map(|_| crate::metric_gate::Checker::new())
        .transpose()
}

/// The roll's lock, its record saying the run is under way.
async fn take_lock(
    conn: &crate::cluster::Connection,
    opts: &RollOptions,
    holder: &str,
    run_id: &str,
    order: &[NodeName],
) -> Result<lease::HeldLock, LockError> {
    let spec = LockSpec {
        namespace: opts.lock.namespace.clone(),
        name: LOCK_NAME.into(),
        holder: holder.to_string(),
        duration: opts.lock.duration,
    };
    lease::acquire(
        conn,
        &spec,
        run::record(run_id, &opts.spec, RunState::Running, order),
    )
    .await
}

/// What `plan --fleet` forecasts with.
#[derive(Debug, Clone)]
pub struct ForecastOptions {
    pub rules: StartRules,
    /// Whose earlier starts the rate budget counts, and whose finished nodes say how
    /// long a node takes.
    pub lock_namespace: String,
    /// The time a node takes; `None`: the median of the nodes done under the lock.
    pub node_time: Option<Duration>,
}

/// How long a node is assumed to take when nothing says otherwise.
const ASSUMED_NODE_TIME: Duration = Duration::from_secs(600);

/// `kordon plan --fleet`: when each selected node would start and end under the roll's
/// rules, from one read of the cluster; nothing is changed.
pub async fn forecast(
    ctx: &Context,
    targets: Vec<Node>,
    opts: &ForecastOptions,
) -> Result<forecast::Forecast, RollError> {
    let cap = (opts.rules.max_unavailable)
        .resolve(targets.len())
        .map_err(RollError::MaxUnavailable)?;
    let names: Vec<NodeName> = targets.iter().map(name_of).collect();
    let snapshot = Snapshot::live(&ctx.view, &names, Reach::Placement, Then::Look).await?;
    let holdings = run::holdings(&snapshot);
    let mut queue: Vec<(Node, Option<Mark>)> = targets.into_iter().map(|n| (n, None)).collect();
    run::order(&mut queue, opts.rules.order, &holdings);
    if let Some(seq) = &opts.rules.sequence {
        queue.sort_by_cached_key(|(n, _)| seq.domain(n));
    }
    let slots: Vec<(&Node, caps::Slot)> = queue
        .iter()
        .map(|(node, _)| {
            let holding = holdings.get(name_of(node).as_str());
            let slot = caps::Slot {
                node: name_of(node).to_string(),
                pending: true,
                domains: (opts.rules.max_unavailable_per.keys())
                    .map(|l| (l.clone(), kube::ResourceExt::labels(node).get(l).cloned()))
                    .collect(),
                workloads: holding.map(|h| h.workloads.clone()).unwrap_or_default(),
                single: holding.map(|h| h.single.clone()).unwrap_or_default(),
                out: false,
            };
            (node, slot)
        })
        .collect();
    let observed = forecast::observed(&snapshot.nodes, &opts.lock_namespace);
    let (node_time, from) = match (opts.node_time, observed) {
        (Some(t), _) => (t, "given (--expect-node-time)".to_string()),
        (None, Some((t, n))) => (t, format!("the median of {n} node(s) done under this lock")),
        (None, None) => (
            ASSUMED_NODE_TIME,
            "assumed: no node done under this lock yet (--expect-node-time sets it)".into(),
        ),
    };
    let rules = forecast::Policies {
        cap,
        per: &opts.rules.max_unavailable_per,
        windows: &opts.rules.windows,
        pause_between: opts.rules.pause_between,
        max_per: opts.rules.max_per.as_ref(),
        sequence: opts.rules.sequence.as_ref(),
    };
    let started = mark::starts(&snapshot.nodes, &opts.lock_namespace);
    let (nodes, never) =
        forecast::simulate(&slots, &rules, node_time, jiff::Timestamp::now(), &started);
    Ok(forecast::Forecast {
        ends: nodes.iter().map(|e| e.ends).max(),
        nodes,
        never,
        node_seconds: node_time.as_secs(),
        node_time_from: from,
    })
}

/// Lets the lock go with the run's last record; a lock that cannot be released expires.
async fn release(lock: lease::HeldLock, record: std::collections::BTreeMap<String, String>) {
    if let Err(e) = lock.release(record).await {
        tracing::warn!("cannot release the lock: {e}; it expires on its own");
    }
}

/// The cap's places this run has: those other runs' and NodeMaintenances' nodes do not
/// take, and how many of those are roll marks; refused when a node is held by a
/// NodeMaintenance, left unfinished by this run's predecessor, or the cap is full.
fn room(out: &preflight::OutOfService, cap: usize) -> Result<(usize, usize), RollError> {
    if !out.held.is_empty() {
        return Err(RollError::Held {
            nodes: out.held.clone(),
        });
    }
    if !out.unfinished.is_empty() {
        return Err(RollError::Unfinished {
            nodes: out.unfinished.clone(),
        });
    }
    if out.elsewhere.len() >= cap {
        return Err(RollError::NoRoom {
            max_unavailable: cap,
            nodes: out.elsewhere.clone(),
        });
    }
    Ok((
        cap - out.elsewhere.len(),
        out.elsewhere.len() - out.by_maintenances,
    ))
}

/// The nodes in the order they start: those this run left under way first, then the
/// fresh ones in the asked order. Nodes it finished already go straight to `results`.
fn queue(
    targets: Vec<Node>,
    run_id: &str,
    opts: &RollOptions,
    holdings: &std::collections::HashMap<String, run::Holding>,
    results: &mut Vec<NodeResult>,
) -> VecDeque<(Node, Option<Mark>)> {
    let mut in_progress = Vec::new();
    let mut fresh = Vec::new();
    for node in targets {
        let name = name_of(&node);
        match continued(&node, run_id, &opts.lock.namespace) {
            Some(m) if m.phase == Phase::Done => results.push(NodeResult::untouched(
                name,
                Outcome::AlreadyDone,
                Some(&m),
                LeftAs::Is(NodeState::of(&node)),
            )),
            Some(m) => in_progress.push((node, Some(m))),
            None => fresh.push((node, None)),
        }
    }
    run::order(&mut fresh, opts.rules.order, holdings);
    // Domain by domain, each in the asked order (the sort is stable).
    if let Some(seq) = &opts.rules.sequence {
        fresh.sort_by_cached_key(|(n, _)| seq.domain(n));
    }
    in_progress.into_iter().chain(fresh).collect()
}

/// `--sequence`: the domains of the queued nodes, in the order they go.
fn domains(opts: &RollOptions, queue: &VecDeque<(Node, Option<Mark>)>) -> Option<String> {
    let sequence = opts.rules.sequence.as_ref()?;
    Some(sequence.describe_all(queue.iter().map(|(n, _)| n)))
}

fn name_of(node: &Node) -> NodeName {
    NodeName::new(node.metadata.name.as_deref().unwrap_or_default())
}

/// Beyond what each drain checks itself: the lock, the node records, the events.
fn needed_permissions(opts: &RollOptions) -> Vec<Permission> {
    let lock_namespace = opts.lock.namespace.as_str();
    let mut needed = vec![
        Permission::cluster("patch", "", "nodes"),
        // Keeping each node cordoned, and waiting for it to be Ready.
        Permission::cluster("watch", "", "nodes"),
        // The nodes NodeMaintenances hold share the cap (see `others`).
        Permission::cluster("list", "kordon.dev", "nodemaintenances"),
        Permission::cluster("watch", "kordon.dev", "nodemaintenances"),
        Permission::namespaced("get", "coordination.k8s.io", "leases", None, lock_namespace),
        Permission::namespaced(
            "create",
            "coordination.k8s.io",
            "leases",
            None,
            lock_namespace,
        ),
        Permission::namespaced(
            "update",
            "coordination.k8s.io",
            "leases",
            None,
            lock_namespace,
        ),
        Permission::namespaced("create", "events.k8s.io", "events", None, "default"),
    ];
    // Each node's volumes detached before its work (`--volume-detach-timeout`).
    if !opts.detach.timeout.is_zero() {
        needed.extend([
            Permission::cluster("list", "storage.k8s.io", "volumeattachments"),
            Permission::cluster("watch", "storage.k8s.io", "volumeattachments"),
        ]);
    }
    needed
}

/// An interrupt (Ctrl-C at the edge) or losing the lock asks every node to stop at its
/// next safe point.
fn spawn_stop_watch(
    stop: watch::Sender<Option<RunState>>,
    interrupt: Interrupt,
    mut lost: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    interrupt.arm();
    tokio::spawn(async move {
        let state = tokio::select! {
            _ = interrupt.requested() => RunState::Interrupted,
            _ = lost.wait_for(|l| *l) => RunState::LockLost,
        };
        let _ = stop.send(Some(state));
    })
}
