//! A roll for people: its progress lines as they happen, and at the end one row per
//! node and why a roll that stopped early stopped.
use std::time::Duration;

use super::Report;
use crate::flag::Flag;
use crate::fleet::unavailable::OutNode;
use crate::fleet::{Outcome, RollProgress, RollReport, RunState, WaitReason};
use crate::names::NodeName;
use crate::phase::Phase;

impl Report for RollReport {
    fn text(&self) -> String {
        let rows = self.nodes.iter().map(|n| {
            [
                n.node.to_string(),
                outcome(n.outcome).into(),
                n.phase.map_or("-".into(), |p| p.to_string()),
                n.evicted.to_string(),
                humantime::format_duration(Duration::from_secs(n.duration_seconds.round() as u64))
                    .to_string(),
                n.state.to_string(),
                if n.blockers.is_empty() {
                    "-".into()
                } else {
                    n.blockers.join("; ")
                },
            ]
        });
        let table = super::table::plain(
            &[
                "NODE", "RESULT", "PHASE", "EVICTED", "DURATION", "STATE", "BLOCKERS",
            ],
            rows,
        );
        let others = match self.out_by_others.as_slice() {
            [] => String::new(),
            nodes => format!(
                "out of service by someone else, counted against the cap: {}\n",
                out_nodes(nodes)
            ),
        };
        let notified = match self.notifications {
            Some(d) if d.failed > 0 => format!(
                "notifications: {} delivered, {} not taken by the webhook (see the log)\n",
                d.delivered, d.failed
            ),
            Some(d) => format!("notifications: {} delivered\n", d.delivered),
            None => String::new(),
        };
        format!(
            "run {}: {} ({} node(s), at most {} at a time)\n{table}\n{others}{notified}",
            self.run,
            self.state.as_str(),
            self.nodes.len(),
            self.max_unavailable
        )
    }
}

/// One line for a step of the roll as it happens; `None` when there is nothing to say.
pub fn progress_line(p: &RollProgress) -> Option<String> {
    Some(match p {
        RollProgress::Started {
            run,
            resumed,
            slots,
            out_elsewhere,
            order,
            domains,
        } => {
            let names: Vec<&str> = order.iter().map(|n| n.as_str()).collect();
            let taken = if out_elsewhere.is_empty() {
                String::new()
            } else {
                format!(
                    " (other runs left {} out of service: {})",
                    out_elsewhere.len(),
                    out_elsewhere.join("; ")
                )
            };
            let domains = match domains {
                Some(d) if !d.is_empty() => format!(" (domain by domain: {d})"),
                _ => String::new(),
            };
            format!(
                "{} run {run}: {} node(s), at most {slots} at a time{taken}, in this order: {}{domains}",
                if *resumed { "resuming" } else { "starting" },
                order.len(),
                names.join(", ")
            )
        }
        RollProgress::Domain { domain } => format!(
            "sequence: the nodes of {domain} start now; the next domain waits until each of them is done or failed"
        ),
        RollProgress::Planned { wave, report } => {
            let names: Vec<&str> = wave.iter().map(|n| n.as_str()).collect();
            if report.safe {
                format!(
                    "plan with {} down: {} pod(s) to move, about {} wave(s) of evictions; safe",
                    names.join(" and "),
                    report.pods.len(),
                    report.waves
                )
            } else {
                super::plan::forecast(report).trim_end().to_string()
            }
        }
        RollProgress::Waiting { until, why } => match why {
            WaitReason::Gate { why } => format!(
                "a metric gate fails: {why}; no new node starts until it passes (nodes under way go on)"
            ),
            WaitReason::Window => format!(
                "outside every maintenance window: no new node starts until {}",
                when(*until)
            ),
            WaitReason::Pause => format!("pausing: the next node starts at {}", when(*until)),
            WaitReason::Rate { starts, period } => {
                let period = format!("{:#}", jiff::SignedDuration::try_from(*period).unwrap_or_default());
                format!(
                    "{starts} node(s) started in the last {period} ({} {period}={starts}): the next node starts at {}",
                    Flag::MaxPer.cli(),
                    when(*until)
                )
            }
            WaitReason::Others => "NodeMaintenances (a MaintenancePlan's, the controller's) have the rest of the cap out: waiting for one to finish".to_string(),
            WaitReason::OthersOut => format!(
                "nodes out of service by someone else take the rest of the cap: no new node starts until one is back ({}=false not to count them)",
                Flag::CountOthersOut.cli()
            ),
        },
        RollProgress::OutByOthers { nodes } => match nodes.as_slice() {
            [] => "no selected node is out of service by someone else any more".into(),
            nodes => format!(
                "out of service by someone else, counted against the cap (not started while so): {}",
                out_nodes(nodes)
            ),
        },
        RollProgress::Phase { node, phase } => format!("[{node}] {phase}"),
        RollProgress::Approved { node, approval } => format!(
            "[{node}] starts despite a failing metric gate: approved (kordon approve, {approval})"
        ),
        RollProgress::Drain { node, event } => {
            format!("[{node}] {}", super::drain::event_line(event))
        }
        RollProgress::Failed { node, phase, error } => failed_line(node, *phase, error),
        RollProgress::Prompt { node, text } => format!("[{node}] {text}"),
        RollProgress::Volumes { node, outcome } => {
            format!("[{node}] {}", super::maintain::volumes(node, outcome))
        }
        RollProgress::Recordoned { node } => format!(
            "[{node}] was uncordoned by someone else while out for maintenance: cordoned again"
        ),
        RollProgress::Stopping { why } => match why {
            RunState::LockLost => "the lock was lost: no new node starts; nodes in progress stop at their next safe point".into(),
            _ => "interrupted: no new node starts; nodes in progress stop at their next safe point (Ctrl-C again exits at once)".into(),
        },
    })
    .filter(|l| !l.is_empty())
}

/// `node-2 (cordoned), node-5 (NotReady)`.
fn out_nodes(nodes: &[OutNode]) -> String {
    let each: Vec<String> = nodes
        .iter()
        .map(|o| format!("{} ({})", o.node, o.reason))
        .collect();
    each.join(", ")
}

fn outcome(o: Outcome) -> &'static str {
    match o {
        Outcome::Done => "done",
        Outcome::AlreadyDone => "done earlier",
        Outcome::Failed => "FAILED",
        Outcome::Abandoned => "ABANDONED",
        Outcome::Stopped => "stopped",
        Outcome::NotStarted => "not started",
    }
}

fn failed_line(node: &NodeName, phase: Phase, error: &str) -> String {
    match phase {
        // Done, then failed: its soak found a pod on it crashing; it is in service.
        Phase::Done => format!("[{node}] FAILED after it was back: {error}"),
        _ => format!("[{node}] FAILED in {phase}: {error}; it stays cordoned"),
    }
}

/// One sentence for a roll that did not finish every node.
pub fn why_incomplete(report: &RollReport) -> String {
    let failed: Vec<String> = report
        .nodes
        .iter()
        .filter(|n| matches!(n.outcome, Outcome::Failed | Outcome::Abandoned))
        .map(|n| {
            if n.outcome == Outcome::Abandoned {
                return format!("{} abandoned at its drain deadline and put back", n.node);
            }
            if n.phase == Some(Phase::Done) {
                return format!("{} failed its soak (it is in service)", n.node);
            }
            format!(
                "{} failed in {} and stays cordoned",
                n.node,
                n.phase.map_or("-".into(), |p| p.to_string())
            )
        })
        .collect();
    let not_done = report
        .nodes
        .iter()
        .filter(|n| matches!(n.outcome, Outcome::Stopped | Outcome::NotStarted))
        .count();
    let mut parts = vec![format!("roll {} {}", report.run, report.state.as_str())];
    parts.extend(failed);
    if not_done > 0 {
        parts.push(format!(
            "{not_done} node(s) not finished; re-run the same command (or `kordon roll --resume`) to continue"
        ));
    }
    parts.join(": ")
}

/// An instant for people: UTC, and how far away it is.
pub fn when(t: jiff::Timestamp) -> String {
    let now = jiff::Timestamp::now();
    let wait = t.duration_since(now).as_secs().max(0) as u64;
    format!(
        "{} (in {})",
        t.strftime("%Y-%m-%d %H:%M:%S UTC"),
        humantime::format_duration(Duration::from_secs(wait))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::NodeResult;
    use crate::node_state::{LeftAs, NodeState, Readiness};

    fn node(name: &str, outcome: Outcome, phase: Option<Phase>, seconds: f64) -> NodeResult {
        NodeResult {
            node: NodeName::from(name),
            outcome,
            phase,
            evicted: 2,
            started_at: None,
            duration_seconds: seconds,
            phases: Vec::new(),
            blockers: Vec::new(),
            state: LeftAs::Is(NodeState {
                readiness: Readiness::Ready,
                cordoned: false,
            }),
        }
    }

    fn report(nodes: Vec<NodeResult>) -> RollReport {
        RollReport {
            run: "roll-1".into(),
            resumed: false,
            state: RunState::Halted,
            max_unavailable: 1,
            nodes,
            out_by_others: Vec::new(),
            notifications: None,
        }
    }

    #[test]
    fn the_report_is_a_table_under_one_line_about_the_run() {
        let mut failed = node("node-10", Outcome::Failed, Some(Phase::Maintaining), 61.4);
        failed.blockers = vec!["command exited with 7".into()];
        failed.state = LeftAs::Is(NodeState {
            readiness: Readiness::Ready,
            cordoned: true,
        });
        let text = report(vec![
            node("node-1", Outcome::Done, Some(Phase::Done), 125.0),
            failed,
            node("node-2", Outcome::NotStarted, None, 0.0),
        ])
        .text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "run roll-1: halted (3 node(s), at most 1 at a time)"
        );
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            [
                "NODE", "RESULT", "PHASE", "EVICTED", "DURATION", "STATE", "BLOCKERS"
            ]
        );
        assert!(lines[2].starts_with("node-1   done  "), "{text}");
        assert!(lines[2].contains("  2m 5s  "), "{text}");
        assert!(lines[3].contains("FAILED"), "{text}");
        assert!(lines[3].ends_with("  command exited with 7"), "{text}");
        assert!(lines[4].contains("not started"), "{text}");
        // Every column starts where its header does.
        let column = |line: &str, cell: &str| line.find(cell).expect(cell);
        assert_eq!(column(lines[1], "STATE"), column(lines[3], "Ready,"));
        assert!(lines.iter().all(|l| l == &l.trim_end()), "{text:?}");
        assert!(!text.contains('\u{1b}'), "{text:?}");
    }

    #[test]
    fn nodes_someone_else_has_out_are_named_with_why() {
        use crate::fleet::unavailable::OutOfService;
        let out = vec![
            OutNode {
                node: NodeName::from("node-2"),
                reason: OutOfService::Cordoned,
            },
            OutNode {
                node: NodeName::from("node-3"),
                reason: OutOfService::Tainted {
                    key: "example.com/x".into(),
                    effect: "NoSchedule".into(),
                },
            },
        ];
        let line = progress_line(&RollProgress::OutByOthers { nodes: out.clone() });
        assert_eq!(
            line.as_deref(),
            Some(
                "out of service by someone else, counted against the cap (not started while so): node-2 (cordoned), node-3 (tainted example.com/x:NoSchedule)"
            )
        );
        let mut done = report(vec![node("node-1", Outcome::Done, Some(Phase::Done), 1.0)]);
        done.out_by_others = out;
        assert!(
            done.text().ends_with(
                "out of service by someone else, counted against the cap: node-2 (cordoned), node-3 (tainted example.com/x:NoSchedule)\n"
            ),
            "{}",
            done.text()
        );
    }

    #[test]
    fn a_stopping_roll_says_what_happens_next() {
        let line = progress_line(&RollProgress::Stopping {
            why: RunState::Interrupted,
        });
        assert_eq!(
            line.as_deref(),
            Some(
                "interrupted: no new node starts; nodes in progress stop at their next safe point (Ctrl-C again exits at once)"
            )
        );
    }
}
