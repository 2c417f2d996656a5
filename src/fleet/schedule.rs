//! The roll's scheduler: starts nodes while the cap's slots, the windows, the pause,
//! the rate budget and the sequence of domains allow, and halts or stops as failures
//! and Ctrl-C say.
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use k8s_openapi::api::core::v1::Node;
use kube::{Api, ResourceExt};

use super::caps::{self, Slot};
use super::gate_watch::{GATE_AGAIN, GateWatch};
use super::mark::Mark;
use super::node::{self, NodeResult, Outcome};
use super::others;
use super::pending::Pending;
use super::rate::{RateBudget, Room};
use super::sequence::Domain;
use super::unavailable::OutNode;
use super::window::{self, Availability, Window};
use super::{Job, RollProgress, RunState, WaitReason, name_of, run};
use crate::cluster::nodes;
use crate::metric_gate::Hold;
use crate::names::NodeName;
use crate::phase::Phase;
use crate::workflow::gate::{self, GateError};

/// The roll's cap, shared with the other kordon actors' nodes out, and with the nodes
/// someone else has out among its own.
pub(super) struct Cap {
    pub max: usize,
    /// Nodes earlier runs under the lock left out, counted at the start (the lock lets
    /// no other roll run meanwhile).
    pub marks_elsewhere: usize,
    /// The selected nodes, when those someone else has out count (`--count-others-out`).
    pub scope: Option<BTreeSet<String>>,
    /// When the nodes under the lock started, as their marks say (`--max-per`); the
    /// scheduler adds each start it makes.
    pub started: Vec<jiff::Timestamp>,
}

/// How often a roll whose cap others fill looks again.
const OTHERS_AGAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Starts nodes while slots, windows and pauses allow; collects their results, and the
/// selected nodes someone else had out meanwhile (`counted`, with the last reason seen).
pub(super) async fn schedule(
    job: &Job<'_>,
    holdings: &HashMap<String, run::Holding>,
    mut queue: VecDeque<(Node, Option<Mark>)>,
    cap: Cap,
    results: &mut Vec<NodeResult>,
    counted: &mut Vec<OutNode>,
    pending: &mut Pending,
) -> RunState {
    let opts = job.options;
    let mut running = FuturesUnordered::new();
    let mut soaks = Soaks::default();
    let mut failures = 0;
    let mut pause_until: Option<jiff::Timestamp> = None;
    let (mut announced, mut domain): (Option<Wait>, Option<Domain>) = (None, None);
    let mut started = cap.started;
    let mut stop = job.stop.clone();
    // Nodes this roll has out of service: running, or failed and left cordoned.
    let mut out: HashMap<String, Node> = HashMap::new();
    let mut gates = gate_watch(job).await;
    let selector = job.options.spec.selector.as_deref();
    let mut elsewhere = others::Elsewhere::watch(&job.ctx.view, cap.scope, selector).await;
    loop {
        let stopping = stop.borrow().is_some();
        let halted = failures + soaks.failed >= opts.max_failures;
        // Failed nodes stay cordoned, so they keep their slot; nodes NodeMaintenances
        // hold outside this roll take theirs, and so do selected nodes someone else has
        // out (not started while they have them).
        let done = queue.is_empty();
        let look = elsewhere.look(job, &out, done).await;
        let by_others = &look.by_others;
        let others = cap.marks_elsewhere + look.count();
        let full = running.len() + failures + others >= cap.max;
        let mut wait_until = None;
        let mut held_by_others = !stopping && !halted && !done && others > 0 && full;
        // `--sequence`: the domain whose nodes may start (failed nodes are finished).
        let open = open_domain(job, &queue, &out, results);
        announce_domain(
            job,
            &mut domain,
            open.as_ref().filter(|_| !stopping && !halted),
        );
        let fits = |n: &Node, m: &Option<Mark>| in_sequence(job, open.as_ref(), n, m);
        while !stopping && !halted && running.len() + failures + others < cap.max {
            // The first node in order that the per-label caps let start now.
            let per = &opts.rules.max_unavailable_per;
            let Some(index) = next_fitting(&queue, &fits, &out, by_others, holdings, per) else {
                // Someone else's nodes hold it if it would fit without them.
                held_by_others |= next_fitting(&queue, &fits, &out, &[], holdings, per).is_some();
                break;
            };
            let (_, previous) = &queue[index];
            let now = jiff::Timestamp::now();
            let rate = opts.rules.max_per.as_ref().map(|b| (b, started.as_slice()));
            let hold = gates.as_ref().map_or(Hold::Pass, GateWatch::hold);
            if previous.is_none()
                && let Some((until, why)) =
                    next_start(pause_until, &opts.rules.windows, rate, hold.held(), now)
            {
                wait_until = Some(wait(job, &mut announced, until, why, now));
                break;
            }
            let Some((node, previous)) = queue.remove(index) else {
                break;
            };
            let node = elsewhere.latest(node);
            out.insert(name_of(&node).to_string(), node.clone());
            // The wait is over: the next one is news, even if it looks like the last.
            announced = None;
            let fresh = fresh_mark(&node, holdings, job);
            started.extend(approved(job, &mut gates, hold, &node, &previous, &fresh));
            running.push(async move { node::maintain(job, &node, previous, fresh).await });
        }
        if held_by_others {
            // Quiet while own nodes run: their end is news enough.
            if running.is_empty() {
                wait_for_others(job, &mut announced, look);
            }
            wait_until.get_or_insert(tokio::time::Instant::now() + OTHERS_AGAIN);
        }
        // Nothing runs (the soaks are waited for, unless the roll stops or halts), and
        // nothing is left, or may start, or ever could: every slot is held by a failed
        // node when there is nothing to wait for.
        let idle = running.is_empty() && (soaks.under_way.is_empty() || stopping || halted);
        if idle && (queue.is_empty() || stopping || halted || wait_until.is_none()) {
            break;
        }
        let sleep = sleep_until(wait_until);
        tokio::select! {
            Some(result) = running.next(), if !running.is_empty() => {
                // A failed node stays cordoned: it keeps its place in the caps.
                if result.outcome != Outcome::Failed {
                    out.remove(result.node.as_str());
                }
                pending.lift(job.conn, &result.node, elsewhere.current(&result.node)).await;
                failures += usize::from(result.failed());
                pause_until = pause_after(&result, opts.rules.pause_between).or(pause_until);
                soaks.start(job, &result);
                results.push(result);
            }
            Some((soaked, node)) = soaks.under_way.next(), if !soaks.under_way.is_empty() => {
                soaks.failed += usize::from(soak_failed(job, results, &node, soaked));
            }
            _ = sleep => {}
            () = gate_changed(gates.as_mut()) => {}
            _ = stop.changed() => {
                if let Some(state) = *stop.borrow() {
                    (job.on_progress)(RollProgress::Stopping { why: state });
                }
            }
        }
    }
    not_started(job, queue, results).await;
    counted.extend(elsewhere.counted());
    match *stop.borrow() {
        Some(state) => state,
        None if results.iter().any(|r| r.outcome == Outcome::NotStarted) => RunState::Halted,
        None => RunState::Done,
    }
}

/// The soaks under way (`--pause-between`): each node back in service, its pods
/// watched until the soak ends.
#[derive(Default)]
struct Soaks<'a> {
    under_way: FuturesUnordered<BoxFuture<'a, (Result<(), GateError>, NodeName)>>,
    /// Nodes that failed their soak: in service, so they take no slot, but they count
    /// toward --max-failures.
    failed: usize,
}

impl<'a> Soaks<'a> {
    fn start(&mut self, job: &'a Job<'_>, result: &NodeResult) {
        let soak = job.options.rules.pause_between;
        if result.outcome != Outcome::Done || soak.is_zero() {
            return;
        }
        let (node, view) = (result.node.clone(), &job.ctx.view);
        self.under_way.push(Box::pin(async move {
            (gate::soak(view, &node, soak).await, node)
        }));
    }
}

/// How a node's soak ended: a regression fails the node (in service still; said, and
/// in the results) and returns true; a soak that could not watch is only logged.
fn soak_failed(
    job: &Job<'_>,
    results: &mut [NodeResult],
    node: &NodeName,
    soaked: Result<(), GateError>,
) -> bool {
    match soaked {
        Ok(()) => false,
        Err(e @ GateError::Regressed { .. }) => {
            let error = e.to_string();
            (job.on_progress)(RollProgress::Failed {
                node: node.clone(),
                phase: Phase::Done,
                error: error.clone(),
            });
            if let Some(result) = results.iter_mut().find(|r| &r.node == node) {
                result.outcome = Outcome::Failed;
                result.blockers.push(error);
            }
            true
        }
        Err(e) => {
            tracing::warn!("node {node}: the soak could not watch its pods: {e}");
            false
        }
    }
}

/// `--pause-between`: when the pause after a node that is done ends.
fn pause_after(result: &NodeResult, pause: std::time::Duration) -> Option<jiff::Timestamp> {
    let pause = jiff::SignedDuration::try_from(pause).unwrap_or_default();
    (result.outcome == Outcome::Done)
        .then(|| jiff::Timestamp::now().checked_add(pause).ok())
        .flatten()
}

/// Says a wait for a fresh node once; when to look again.
fn wait(
    job: &Job<'_>,
    announced: &mut Option<Wait>,
    until: jiff::Timestamp,
    why: WaitReason,
    now: jiff::Timestamp,
) -> tokio::time::Instant {
    if announce(announced, Wait::of(&why, until)) {
        (job.on_progress)(RollProgress::Waiting { until, why });
    }
    tokio::time::Instant::now() + until.duration_since(now).unsigned_abs()
}

/// The roll's metric gates, asked in the background, with its lease for approvals.
async fn gate_watch(job: &Job<'_>) -> Option<GateWatch> {
    let opts = job.options;
    let lease = Api::namespaced(job.conn.client.clone(), &opts.lock.namespace);
    let lease = (lease, super::LOCK_NAME);
    GateWatch::start(opts.metric_gates.as_ref(), job.checker.as_ref(), lease).await
}

/// A node starts: when fresh, its start counts for `--max-per` (returned), and an
/// approval that lets it start despite a failing gate is spent, and said.
fn approved(
    job: &Job<'_>,
    gates: &mut Option<GateWatch>,
    hold: Hold,
    node: &Node,
    previous: &Option<Mark>,
    fresh: &Mark,
) -> Option<jiff::Timestamp> {
    if previous.is_some() {
        return None;
    }
    if let (Some(gates), Hold::Approved(approval)) = (gates.as_mut(), hold) {
        gates.spend(&approval);
        let node = name_of(node);
        (job.on_progress)(RollProgress::Approved { node, approval });
    }
    Some(fresh.started)
}

/// Until the gates' verdict changes (a gate that clears lets the next node start at
/// once); for ever without gates.
async fn gate_changed(gates: Option<&mut GateWatch>) {
    match gates {
        Some(g) => g.changed().await,
        None => futures::future::pending().await,
    }
}

/// Until `at`; for ever without one.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => futures::future::pending().await,
    }
}

/// Whether the sequence lets this queued node start while `open` is the domain under
/// way: a node the run continues (it has a mark) is out already and goes on.
fn in_sequence(job: &Job<'_>, open: Option<&Domain>, node: &Node, mark: &Option<Mark>) -> bool {
    let sequence = job.options.rules.sequence.as_ref();
    mark.is_some() || sequence.is_none_or(|s| s.admits(node, open))
}

/// The nodes left in the queue, as they are.
async fn not_started(
    job: &Job<'_>,
    queue: VecDeque<(Node, Option<Mark>)>,
    results: &mut Vec<NodeResult>,
) {
    for (node, previous) in queue {
        let name = name_of(&node);
        let state = crate::workflow::current_state(job.conn, &name).await;
        results.push(NodeResult::untouched(
            name,
            Outcome::NotStarted,
            previous.as_ref(),
            state,
        ));
    }
}

/// Says, once, that others fill the rest of the cap: NodeMaintenances, or nodes someone
/// else has out (the nodes tell one such wait from the next).
fn wait_for_others(job: &Job<'_>, announced: &mut Option<Wait>, look: others::Look) {
    let why = match look.by_others.is_empty() {
        true => WaitReason::Others,
        false => WaitReason::OthersOut,
    };
    let theirs = look.by_others.iter().map(|(o, _)| o.node.to_string());
    let nodes = look.held.into_iter().chain(theirs).collect();
    if announce(announced, Wait::Others(nodes)) {
        let until = jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::try_from(OTHERS_AGAIN).unwrap_or_default())
            .unwrap_or_else(|_| jiff::Timestamp::now());
        (job.on_progress)(RollProgress::Waiting { until, why });
    }
}

/// One wait of the roll, as its waiting line tells it: a window or a pause until an
/// instant, or others holding the rest of the cap (looked at again every few seconds, so
/// the nodes they hold tell one such wait from the next, not the instant of the next look).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Wait {
    Until(WaitReason, jiff::Timestamp),
    Others(BTreeSet<String>),
    /// A failing gate, by what it says (its next look is no news).
    Gate(String),
}

impl Wait {
    fn of(why: &WaitReason, until: jiff::Timestamp) -> Self {
        match why {
            WaitReason::Gate { why } => Self::Gate(why.clone()),
            why => Self::Until(why.clone(), until),
        }
    }
}

/// Whether `wait` is news, remembering it if so: each wait is said once, and again only
/// when it changes.
fn announce(last: &mut Option<Wait>, wait: Wait) -> bool {
    if last.as_ref() == Some(&wait) {
        return false;
    }
    *last = Some(wait);
    true
}

/// The index of the first queued node that the per-label caps and the workloads that
/// allow one disruption let start beside the nodes out now, this roll's and those
/// someone else has out (`None`: every queued node waits for one of those to return).
/// A queued node someone else has out takes its place in its domain and waits.
fn next_fitting(
    queue: &VecDeque<(Node, Option<Mark>)>,
    may_start: &dyn Fn(&Node, &Option<Mark>) -> bool,
    out: &HashMap<String, Node>,
    by_others: &[(OutNode, Arc<Node>)],
    holdings: &HashMap<String, run::Holding>,
    per: &BTreeMap<String, u32>,
) -> Option<usize> {
    let others: BTreeSet<&str> = by_others.iter().map(|(o, _)| o.node.as_str()).collect();
    // Someone else's node is not drained by this roll: its workloads take no turn.
    let slot = |node: &Node, own: bool| {
        let name = name_of(node).to_string();
        let theirs = others.contains(name.as_str());
        let holding = holdings.get(&name).filter(|_| !theirs);
        Slot {
            domains: per
                .keys()
                .map(|l| (l.clone(), node.labels().get(l).cloned()))
                .collect(),
            workloads: holding.map(|h| h.workloads.clone()).unwrap_or_default(),
            single: holding.map(|h| h.single.clone()).unwrap_or_default(),
            node: name,
            out: own || theirs,
            pending: !own,
        }
    };
    // Theirs that are not queued (done in this run, or under way when it resumed) are
    // out all the same.
    let queued: BTreeSet<String> = queue.iter().map(|(n, _)| name_of(n).to_string()).collect();
    let theirs = by_others
        .iter()
        .filter(|(o, _)| !queued.contains(o.node.as_str()))
        .map(|(_, n)| slot(n.as_ref(), true));
    let slots: Vec<Slot> = out
        .values()
        .map(|n| slot(n, true))
        .chain(theirs)
        .chain(
            queue
                .iter()
                .filter(|(n, m)| may_start(n, m))
                .map(|(n, _)| slot(n, false)),
        )
        .collect();
    let first = caps::choose(&slots, usize::MAX, per).0.into_iter().next()?;
    queue.iter().position(|(n, _)| name_of(n).as_str() == first)
}

/// When the next node that has not started yet may start, if not now: once the metric
/// gates pass (`gate`: why one fails, unless approved; asked during the pause too, so a soak that
/// turns bad says so at once), after the pause that follows a finished node, inside a
/// maintenance window, and within the rate budget (`rate`: the budget and the starts it
/// counts).
fn next_start(
    pause_until: Option<jiff::Timestamp>,
    windows: &[Window],
    rate: Option<(&RateBudget, &[jiff::Timestamp])>,
    gate: Option<&str>,
    now: jiff::Timestamp,
) -> Option<(jiff::Timestamp, WaitReason)> {
    if let Some(why) = gate {
        let again = jiff::SignedDuration::try_from(GATE_AGAIN).unwrap_or_default();
        let until = now.checked_add(again).unwrap_or(now);
        let why = why.to_string();
        return Some((until, WaitReason::Gate { why }));
    }
    if let Some(t) = pause_until.filter(|t| *t > now) {
        return Some((t, WaitReason::Pause));
    }
    if let Some(Availability::Closed { opens }) = window::availability(windows, now) {
        return Some((opens, WaitReason::Window));
    }
    let (budget, started) = rate?;
    match budget.room(started, now) {
        Room::Free(_) => None,
        Room::SpentUntil(t) => Some((
            t,
            WaitReason::Rate {
                starts: budget.starts(),
                period: budget.period(),
            },
        )),
    }
}

/// `--sequence`: the domain whose nodes may start now, from the nodes not finished:
/// those queued and those out that did not fail (a failed node stays cordoned, but is
/// finished for the sequence).
fn open_domain(
    job: &Job<'_>,
    queue: &VecDeque<(Node, Option<Mark>)>,
    out: &HashMap<String, Node>,
    results: &[NodeResult],
) -> Option<Domain> {
    let seq = job.options.rules.sequence.as_ref()?;
    let failed: BTreeSet<&str> = results
        .iter()
        .filter(|r| r.failed())
        .map(|r| r.node.as_str())
        .collect();
    let running = out
        .iter()
        .filter(|(name, _)| !failed.contains(name.as_str()))
        .map(|(_, n)| n);
    seq.open(queue.iter().map(|(n, _)| n).chain(running))
}

/// Says, once per domain, which domain's nodes start now.
fn announce_domain(job: &Job<'_>, last: &mut Option<Domain>, open: Option<&Domain>) {
    let (Some(seq), Some(open)) = (job.options.rules.sequence.as_ref(), open) else {
        return;
    };
    if last.as_ref() != Some(open) {
        *last = Some(open.clone());
        (job.on_progress)(RollProgress::Domain {
            domain: seq.describe(open),
        });
    }
}

/// The mark a node gets when the roll reaches it: whether it was already cordoned by
/// someone else, and which workloads it holds (the health gate waits for them).
fn fresh_mark(node: &Node, holdings: &HashMap<String, run::Holding>, job: &Job<'_>) -> Mark {
    let name = node.metadata.name.as_deref().unwrap_or_default();
    let workloads = holdings
        .get(name)
        .map(|h| h.workloads.iter().cloned().collect())
        .unwrap_or_default();
    Mark::new(
        &job.run,
        &job.options.lock.namespace,
        nodes::cordoned_by_someone_else(node),
        workloads,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_waits_for_the_pause_then_for_a_window() {
        // Tuesday 2026-11-24 12:00 UTC; the window opens on Mondays.
        let now: jiff::Timestamp = "2026-11-24T12:00:00Z".parse().unwrap();
        let monday: Window = "Mon 02:00-03:00 UTC".parse().unwrap();
        let later = now + jiff::SignedDuration::from_secs(30);
        assert_eq!(next_start(None, &[], None, None, now), None);
        assert_eq!(
            next_start(Some(later), &[], None, None, now),
            Some((later, WaitReason::Pause))
        );
        let opens: jiff::Timestamp = "2026-11-30T02:00:00Z".parse().unwrap();
        assert_eq!(
            next_start(Some(now), std::slice::from_ref(&monday), None, None, now),
            Some((opens, WaitReason::Window))
        );
    }

    #[test]
    fn a_failing_gate_holds_a_fresh_node_even_during_the_pause_and_a_passing_one_does_not() {
        let now: jiff::Timestamp = "2026-11-24T12:00:00Z".parse().unwrap();
        let later = now + jiff::SignedDuration::from_secs(30);
        let failing = "Alertmanager at http://am:9093 gives no answer (refused)";
        let (until, why) = next_start(Some(later), &[], None, Some(failing), now).unwrap();
        assert_eq!(
            why,
            WaitReason::Gate {
                why: failing.into()
            },
            "the soak says the gate"
        );
        assert_eq!(
            until,
            now + jiff::SignedDuration::from_secs(5),
            "asked again in 5s"
        );
        assert_eq!(next_start(None, &[], None, None, now), None);
        assert_eq!(
            next_start(Some(later), &[], None, None, now),
            Some((later, WaitReason::Pause))
        );
    }

    #[test]
    fn a_spent_rate_budget_holds_fresh_nodes_until_the_oldest_start_ages_out() {
        let now: jiff::Timestamp = "2026-11-24T12:00:00Z".parse().unwrap();
        let ago = |s: i64| now - jiff::SignedDuration::from_secs(s);
        let two_per_minute = RateBudget::new(std::time::Duration::from_secs(60), 2).unwrap();
        let rate = |started: &'static [i64]| {
            let times: Vec<jiff::Timestamp> = started.iter().map(|s| ago(*s)).collect();
            next_start(None, &[], Some((&two_per_minute, &times)), None, now)
        };
        assert_eq!(rate(&[10]), None);
        assert_eq!(
            rate(&[90, 70, 10]),
            None,
            "starts older than a minute age out"
        );
        let why = WaitReason::Rate {
            starts: 2,
            period: std::time::Duration::from_secs(60),
        };
        assert_eq!(
            rate(&[40, 10]),
            Some((ago(40) + jiff::SignedDuration::from_secs(60), why))
        );
    }

    fn later(t: jiff::Timestamp) -> jiff::Timestamp {
        t + jiff::SignedDuration::from_secs(5)
    }

    #[test]
    fn a_wait_is_said_once_and_again_when_it_changes() {
        let held = |nodes: &[&str]| Wait::Others(nodes.iter().map(|n| n.to_string()).collect());
        let opens: jiff::Timestamp = "2026-11-30T02:00:00Z".parse().unwrap();
        let mut last = None;
        assert!(announce(&mut last, held(&["node-1"])));
        assert!(
            !announce(&mut last, held(&["node-1"])),
            "the same nodes still hold the cap at the next look: nothing new to say"
        );
        assert!(announce(&mut last, held(&["node-1", "node-2"])));
        assert!(announce(&mut last, Wait::Until(WaitReason::Window, opens)));
        assert!(!announce(&mut last, Wait::Until(WaitReason::Window, opens)));
        assert!(announce(&mut last, Wait::Until(WaitReason::Pause, opens)));
        let gate = |why: &str| WaitReason::Gate { why: why.into() };
        assert!(announce(
            &mut last,
            Wait::of(&gate("query `x` returns 1 series"), opens)
        ));
        assert!(
            !announce(
                &mut last,
                Wait::of(&gate("query `x` returns 1 series"), later(opens))
            ),
            "the gate's next look is no news"
        );
        assert!(announce(
            &mut last,
            Wait::of(&gate("query `x` returns 2 series"), opens)
        ));
        assert!(
            announce(&mut last, held(&["node-1", "node-2"])),
            "back to waiting on others after another reason: said again"
        );
    }
}
