//! `kordon plan --fleet`: when each node of a roll would start and end, what it would
//! wait for first, and how long the round would take. The roll's own rules (the caps,
//! the sequence, the rate budget, the windows, the soak) are run forward in time over an
//! expected time per node; nothing is read or written here.
use std::collections::BTreeMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Node;
use serde::Serialize;

use super::caps::{Caps, Slot};
use super::rate::{RateBudget, Room};
use super::sequence::Sequence;
use super::window::{self, Availability, Window};

/// The roll's rules over when a node may start.
pub struct Policies<'a> {
    pub cap: usize,
    pub per: &'a BTreeMap<String, u32>,
    pub windows: &'a [Window],
    pub pause_between: Duration,
    pub max_per: Option<&'a RateBudget>,
    pub sequence: Option<&'a Sequence>,
}

/// One node's place in the forecast.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub node: String,
    /// Nodes that start at the same moment share a batch (1, 2, …).
    pub batch: usize,
    pub starts: Timestamp,
    pub ends: Timestamp,
    /// What holds its start back, each said once, in the order met.
    pub waits_for: Vec<String>,
}

/// The whole round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Forecast {
    pub nodes: Vec<Entry>,
    /// Nodes that would never start (no window opens again), with why.
    pub never: Vec<String>,
    /// When the last node would be done.
    pub ends: Option<Timestamp>,
    /// The time each node is expected to take, and where that comes from.
    pub node_seconds: u64,
    pub node_time_from: String,
}

/// The simulation's bound: more steps than any real round takes.
const STEPS: usize = 100_000;
const YEAR: Duration = Duration::from_secs(366 * 24 * 3600);

/// Runs the rules forward from `now` over `queue` (the roll's order), each node taking
/// `per_node`, with `started` the starts the rate budget already counts.
pub fn simulate(
    queue: &[(&Node, Slot)],
    rules: &Policies<'_>,
    per_node: Duration,
    now: Timestamp,
    started: &[Timestamp],
) -> (Vec<Entry>, Vec<String>) {
    // A year at most: any longer says nothing more, and keeps the sums in range.
    let per_node = SignedDuration::try_from(per_node.min(YEAR)).unwrap_or(SignedDuration::ZERO);
    let pause =
        SignedDuration::try_from(rules.pause_between.min(YEAR)).unwrap_or(SignedDuration::ZERO);
    let mut pending: Vec<usize> = (0..queue.len()).collect();
    let mut running: Vec<(Timestamp, usize)> = Vec::new();
    let mut starts = started.to_vec();
    let mut last_finish: Option<Timestamp> = None;
    let mut waits: Vec<Vec<String>> = vec![Vec::new(); queue.len()];
    let mut entries: Vec<Entry> = Vec::new();
    let mut t = now;
    for _ in 0..STEPS {
        let (done, going): (Vec<_>, Vec<_>) = running.iter().partition(|(end, _)| *end <= t);
        running = going;
        last_finish = done.iter().map(|(end, _)| *end).chain(last_finish).max();
        if pending.is_empty() {
            break;
        }
        let mut next: Vec<Timestamp> = running.iter().map(|(end, _)| *end).collect();
        let held = match held_back(rules, last_finish, pause, &starts, t) {
            Held::No(free) => free,
            Held::Until(why, until) => {
                note(&mut waits, &pending, &why);
                next.push(until);
                0
            }
            Held::Never(why) => {
                let never = pending
                    .iter()
                    .map(|&i| format!("{}: {why}", queue[i].1.node))
                    .collect();
                return (entries, never);
            }
        };
        let chosen = choose(queue, rules, &pending, &running, held, &mut waits);
        if !chosen.is_empty() {
            let batch = entries.last().map_or(1, |e| e.batch + 1);
            for &i in &chosen {
                entries.push(Entry {
                    node: queue[i].1.node.clone(),
                    batch,
                    starts: t,
                    ends: t + per_node,
                    waits_for: std::mem::take(&mut waits[i]),
                });
                running.push((t + per_node, i));
                starts.push(t);
            }
            pending.retain(|i| !chosen.contains(i));
            continue;
        }
        match next.into_iter().filter(|n| *n > t).min() {
            Some(n) => t = n,
            None => {
                let never = pending
                    .iter()
                    .map(|&i| format!("{}: {}", queue[i].1.node, waits[i].join("; ")))
                    .collect();
                return (entries, never);
            }
        }
    }
    (entries, Vec::new())
}

/// Whether time alone holds every start back at `t`, and until when.
enum Held {
    /// This many may start, as far as time goes.
    No(usize),
    Until(String, Timestamp),
    Never(String),
}

fn held_back(
    rules: &Policies<'_>,
    last_finish: Option<Timestamp>,
    pause: SignedDuration,
    starts: &[Timestamp],
    t: Timestamp,
) -> Held {
    if let Some(last) = last_finish
        && !pause.is_zero()
        && last + pause > t
    {
        return Held::Until(
            "the soak after the node before (--pause-between)".into(),
            last + pause,
        );
    }
    if !rules.windows.is_empty() {
        match window::availability(rules.windows, t) {
            Some(Availability::Open { .. }) => {}
            Some(Availability::Closed { opens }) => {
                return Held::Until("a maintenance window to open".into(), opens);
            }
            None => return Held::Never("no maintenance window opens again".into()),
        }
    }
    match rules.max_per.map(|r| (r, r.room(starts, t))) {
        Some((rate, Room::SpentUntil(until))) => Held::Until(rate.describe(), until),
        Some((_, Room::Free(n))) => Held::No(n.get() as usize),
        None => Held::No(usize::MAX),
    }
}

/// The pending nodes that start at this moment, in order, under the caps and the
/// sequence, at most `free` of them; what holds each other back is noted.
fn choose(
    queue: &[(&Node, Slot)],
    rules: &Policies<'_>,
    pending: &[usize],
    running: &[(Timestamp, usize)],
    free: usize,
    waits: &mut [Vec<String>],
) -> Vec<usize> {
    let out: Vec<Slot> = running
        .iter()
        .map(|(_, i)| Slot {
            out: true,
            ..queue[*i].1.clone()
        })
        .collect();
    let mut caps = Caps::new(&out, rules.cap, rules.per);
    let unfinished = pending.iter().chain(running.iter().map(|(_, i)| i));
    let open = rules
        .sequence
        .and_then(|s| s.open(unfinished.map(|&i| queue[i].0)));
    let mut chosen = Vec::new();
    for &i in pending {
        let (node, slot) = &queue[i];
        let why = if chosen.len() >= free {
            rules.max_per.map(RateBudget::describe)
        } else if let Some(seq) = rules.sequence
            && !seq.admits(node, open.as_ref())
        {
            open.as_ref().map(|d| format!("{} first", seq.describe(d)))
        } else {
            caps.admits(slot).err().map(|c| c.to_string())
        };
        match why {
            Some(why) => note(waits, &[i], &why),
            None => {
                caps.take(slot);
                chosen.push(i);
            }
        }
    }
    chosen
}

fn note(waits: &mut [Vec<String>], nodes: &[usize], why: &str) {
    for &i in nodes {
        if !waits[i].iter().any(|w| w == why) {
            waits[i].push(why.to_string());
        }
    }
}

/// The median of what nodes done under `lock_namespace` took (started to done), and
/// how many there were; `None` with none.
pub fn observed(
    nodes: &[impl std::borrow::Borrow<Node>],
    lock_namespace: &str,
) -> Option<(Duration, usize)> {
    let mut took: Vec<Duration> = nodes
        .iter()
        .filter_map(|n| super::mark::Mark::of(n.borrow()))
        .filter(|m| m.lock_namespace == lock_namespace && m.phase == super::mark::Phase::Done)
        .filter_map(|m| Duration::try_from(m.phase_since.duration_since(m.started)).ok())
        .collect();
    took.sort_unstable();
    let median = *took.get(took.len() / 2)?;
    Some((median, took.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, zone: &str) -> (Node, Slot) {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "labels": { "zone": zone } }
        }))
        .expect("node");
        let slot = Slot {
            node: name.into(),
            pending: true,
            domains: BTreeMap::from([("zone".to_string(), Some(zone.to_string()))]),
            ..Default::default()
        };
        (node, slot)
    }

    fn at(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn run(
        nodes: &[(Node, Slot)],
        rules: &Policies<'_>,
        started: &[Timestamp],
    ) -> (Vec<Entry>, Vec<String>) {
        let queue: Vec<(&Node, Slot)> = nodes.iter().map(|(n, s)| (n, s.clone())).collect();
        simulate(
            &queue,
            rules,
            Duration::from_secs(600),
            at("2026-12-07T01:00:00Z"),
            started,
        )
    }

    fn rules<'a>(cap: usize, per: &'a BTreeMap<String, u32>) -> Policies<'a> {
        Policies {
            cap,
            per,
            windows: &[],
            pause_between: Duration::ZERO,
            max_per: None,
            sequence: None,
        }
    }

    fn starts(entries: &[Entry]) -> Vec<(&str, usize, String)> {
        entries
            .iter()
            .map(|e| (e.node.as_str(), e.batch, e.starts.to_string()))
            .collect()
    }

    #[test]
    fn batches_of_the_cap_each_after_the_last() {
        let nodes: Vec<_> = ["a", "b", "c"].iter().map(|n| node(n, "z1")).collect();
        let none = BTreeMap::new();
        let (entries, never) = run(&nodes, &rules(2, &none), &[]);
        assert!(never.is_empty());
        assert_eq!(
            starts(&entries),
            [
                ("a", 1, "2026-12-07T01:00:00Z".into()),
                ("b", 1, "2026-12-07T01:00:00Z".into()),
                ("c", 2, "2026-12-07T01:10:00Z".into()),
            ]
        );
        assert_eq!(entries[2].waits_for, ["the cap is reached"]);
    }

    #[test]
    fn the_soak_the_rate_and_a_window_each_push_starts_later() {
        let nodes: Vec<_> = ["a", "b", "c"].iter().map(|n| node(n, "z1")).collect();
        let none = BTreeMap::new();
        let rate = RateBudget::new(Duration::from_secs(3600), 2).expect("rate");
        let windows = ["daily 01:00-02:00".parse::<Window>().expect("window")];
        let rules = Policies {
            pause_between: Duration::from_secs(300),
            max_per: Some(&rate),
            windows: &windows,
            ..rules(1, &none)
        };
        let (entries, never) = run(&nodes, &rules, &[]);
        assert!(never.is_empty(), "{never:?}");
        // a at 01:00; b after a's 10 min and the 5 min soak; c's start is the third in an
        // hour, so it waits until a's ages out (02:00), and the window has closed by then:
        // the next day's 01:00.
        assert_eq!(
            starts(&entries),
            [
                ("a", 1, "2026-12-07T01:00:00Z".into()),
                ("b", 2, "2026-12-07T01:15:00Z".into()),
                ("c", 3, "2026-12-08T01:00:00Z".into()),
            ]
        );
        assert!(
            entries[2].waits_for.iter().any(|w| w.contains("per 1h")),
            "{:?}",
            entries[2].waits_for
        );
        assert!(
            entries[2].waits_for.iter().any(|w| w.contains("window")),
            "{:?}",
            entries[2].waits_for
        );
    }

    #[test]
    fn a_sequence_finishes_a_domain_before_the_next_and_zone_caps_hold() {
        let nodes = vec![
            node("b1", "b"),
            node("b2", "b"),
            node("a1", "a"),
            node("a2", "a"),
        ];
        let per = BTreeMap::from([("zone".to_string(), 1)]);
        let seq: Sequence = "zone=b".parse().expect("sequence");
        let rules = Policies {
            sequence: Some(&seq),
            ..rules(2, &per)
        };
        let (entries, _) = run(&nodes, &rules, &[]);
        let order: Vec<(&str, usize)> =
            entries.iter().map(|e| (e.node.as_str(), e.batch)).collect();
        assert_eq!(order, [("b1", 1), ("b2", 2), ("a1", 3), ("a2", 4)]);
        assert!(
            entries[2].waits_for.iter().any(|w| w.ends_with("first")),
            "{:?}",
            entries[2].waits_for
        );
    }

    #[test]
    fn starts_already_counted_by_the_rate_budget_delay_the_first() {
        let nodes = vec![node("a", "z1")];
        let none = BTreeMap::new();
        let rate = RateBudget::new(Duration::from_secs(3600), 1).expect("rate");
        let rules = Policies {
            max_per: Some(&rate),
            ..rules(1, &none)
        };
        let (entries, _) = run(&nodes, &rules, &[at("2026-12-07T00:30:00Z")]);
        assert_eq!(entries[0].starts, at("2026-12-07T01:30:00Z"));
    }
}
