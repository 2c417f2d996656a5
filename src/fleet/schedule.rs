//! The roll's scheduler: starts nodes while the cap's slots, the windows and the
//! pause allow, and halts or stops as failures and Ctrl-C say.
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;

use super::caps::{self, Slot};
use super::mark::Mark;
use super::node::{self, NodeResult, Outcome};
use super::others;
use super::pending::Pending;
use super::unavailable::OutNode;
use super::window::{self, Availability, Window};
use super::{Job, RollProgress, RunState, WaitReason, name_of, run};
use crate::cluster::nodes;

/// The roll's cap, shared with the other kordon actors' nodes out, and with the nodes
/// someone else has out among its own.
pub(super) struct Cap {
    pub max: usize,
    /// Nodes earlier runs under the lock left out, counted at the start (the lock lets
    /// no other roll run meanwhile).
    pub marks_elsewhere: usize,
    /// The selected nodes, when those someone else has out count (`--count-others-out`).
    pub scope: Option<BTreeSet<String>>,
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
    let mut failures = 0;
    let mut pause_until: Option<jiff::Timestamp> = None;
    let mut announced: Option<Wait> = None;
    let mut stop = job.stop.clone();
    // Nodes this roll has out of service: running, or failed and left cordoned.
    let mut out: HashMap<String, Node> = HashMap::new();
    let mut elsewhere = others::Elsewhere::watch(
        &job.ctx.view,
        cap.scope,
        job.options.spec.selector.as_deref(),
    )
    .await;
    loop {
        let stopping = stop.borrow().is_some();
        let halted = failures >= opts.max_failures;
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
        while !stopping && !halted && running.len() + failures + others < cap.max {
            // The first node in order that the per-label caps let start now.
            let per = &opts.max_unavailable_per;
            let Some(index) = next_fitting(&queue, &out, by_others, holdings, per) else {
                // Someone else's nodes hold it if it would fit without them.
                held_by_others |= next_fitting(&queue, &out, &[], holdings, per).is_some();
                break;
            };
            let (_, previous) = &queue[index];
            let now = jiff::Timestamp::now();
            if previous.is_none()
                && let Some((until, why)) = next_start(pause_until, &opts.windows, now)
            {
                if announce(&mut announced, Wait::Until(why, until)) {
                    (job.on_progress)(RollProgress::Waiting { until, why });
                }
                let wait = until.duration_since(now).unsigned_abs();
                wait_until = Some(tokio::time::Instant::now() + wait);
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
            running.push(async move { node::maintain(job, &node, previous, fresh).await });
        }
        if held_by_others {
            // Quiet while own nodes run: their end is news enough.
            if running.is_empty() {
                wait_for_others(job, &mut announced, look);
            }
            wait_until.get_or_insert(tokio::time::Instant::now() + OTHERS_AGAIN);
        }
        if running.is_empty() && (queue.is_empty() || stopping || halted) {
            break;
        }
        if running.is_empty() && wait_until.is_none() {
            // Every slot is held by a failed node: nothing can start.
            break;
        }
        let sleep = async {
            match wait_until {
                Some(t) => tokio::time::sleep_until(t).await,
                None => futures::future::pending().await,
            }
        };
        tokio::select! {
            Some(result) = running.next(), if !running.is_empty() => {
                // A failed node stays cordoned: it keeps its place in the caps.
                if result.outcome != Outcome::Failed {
                    out.remove(result.node.as_str());
                }
                pending.lift(job.conn, &result.node, elsewhere.current(&result.node)).await;
                if result.failed() {
                    failures += 1;
                } else if result.outcome == Outcome::Done {
                    let pause = jiff::SignedDuration::try_from(opts.pause_between).unwrap_or_default();
                    pause_until = jiff::Timestamp::now().checked_add(pause).ok();
                }
                results.push(result);
            }
            _ = sleep => {}
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
        .chain(queue.iter().map(|(n, _)| slot(n, false)))
        .collect();
    let first = caps::choose(&slots, usize::MAX, per).0.into_iter().next()?;
    queue.iter().position(|(n, _)| name_of(n).as_str() == first)
}

/// When the next node that has not started yet may start, if not now: after the pause
/// that follows a finished node, and inside a maintenance window.
fn next_start(
    pause_until: Option<jiff::Timestamp>,
    windows: &[Window],
    now: jiff::Timestamp,
) -> Option<(jiff::Timestamp, WaitReason)> {
    if let Some(t) = pause_until.filter(|t| *t > now) {
        return Some((t, WaitReason::Pause));
    }
    match window::availability(windows, now) {
        Some(Availability::Closed { opens }) => Some((opens, WaitReason::Window)),
        _ => None,
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
        assert_eq!(next_start(None, &[], now), None);
        assert_eq!(
            next_start(Some(later), &[], now),
            Some((later, WaitReason::Pause))
        );
        let opens: jiff::Timestamp = "2026-11-30T02:00:00Z".parse().unwrap();
        assert_eq!(
            next_start(Some(now), std::slice::from_ref(&monday), now),
            Some((opens, WaitReason::Window))
        );
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
        assert!(
            announce(&mut last, held(&["node-1", "node-2"])),
            "back to waiting on others after another reason: said again"
        );
    }
}
