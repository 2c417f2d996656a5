//! How a drain reads to people.
use serde::Serialize;

use super::Report;
use crate::classify::Verdict;
use crate::drain::{DrainReport, Event, PodVerdict};
use crate::names::NodeName;
use crate::pod::Lifecycle;

/// A node's pods and their verdicts, before anything changes; refused ones name the
/// flag that would change them. Shown before a drain; under `-o json` a refusal is
/// the error document instead, with each refused pod's flags.
#[derive(Serialize)]
pub struct PodVerdicts {
    pub node: NodeName,
    pub pods: Vec<PodVerdict>,
}

impl Report for PodVerdicts {
    fn text(&self) -> String {
        let mut lines = vec![format!("{}: {} pod(s)", self.node, self.pods.len())];
        lines.extend(
            self.pods
                .iter()
                .map(|p| format!("  {}  {}", p.pod, super::verdict::Said(&p.verdict))),
        );
        lines.join("\n")
    }
}

/// The reports of a multi-node drain, one JSON document.
#[derive(Serialize)]
#[serde(transparent)]
pub struct DrainReports(pub Vec<DrainReport>);

impl Report for DrainReports {
    fn text(&self) -> String {
        self.0
            .iter()
            .map(Report::text)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Report for DrainReport {
    fn text(&self) -> String {
        let evicted = self.evicted.len();
        let skipped = self
            .pods
            .iter()
            .filter(|p| matches!(p.verdict, Verdict::Skip { .. }))
            .count();
        if self.dry_run {
            return format!(
                "{}: dry run, nothing changed: {} pod(s) would be evicted, {skipped} skipped",
                self.node,
                self.pods
                    .iter()
                    .filter(|p| matches!(p.verdict, Verdict::Evict(_)))
                    .count()
            );
        }
        let ready = self
            .replacements
            .iter()
            .filter(|r| r.stage == Some(Lifecycle::Ready))
            .count();
        let mut text = format!(
            "{}: drained in {:.1}s: {evicted} evicted, {skipped} skipped, replacements Ready {ready}/{}",
            self.node,
            self.elapsed_seconds,
            self.replacements.len()
        );
        let short: Vec<String> = self
            .workloads
            .iter()
            .filter(|w| w.is_short())
            .map(|w| w.workload.to_string())
            .collect();
        if short.is_empty() {
            text.push_str(", every workload at its budget");
        } else {
            text.push_str(&format!(
                "\n  below their budget, replacements Pending (--allow-pending): {}",
                short.join(", ")
            ));
        }
        for e in &self.deleted_past_budget {
            text.push_str(&format!("\n  {}", e.describe()));
        }
        if !self.stopped_early.is_empty() {
            let pods: Vec<String> = self
                .stopped_early
                .iter()
                .map(|s| format!("{} ({:.1}s)", s.pod, s.after_seconds))
                .collect();
            text.push_str(&format!(
                "\n  stopped while their Services still routed to them, so requests to them failed: {}; \
                 give them a preStop hook (e.g. sleep 5) or keep serving for a few seconds after SIGTERM",
                pods.join(", ")
            ));
        }
        text
    }
}

/// One progress line for a drain event.
pub fn event_line(event: &Event) -> String {
    match event {
        Event::Cordoned {
            node,
            before,
            after,
        } => format!("{node}: {before} -> {after}"),
        Event::Evicting { pod } => format!("evicting {pod}"),
        Event::OutOfService { node } => format!(
            "{node}: down; tainted {} so the control plane deletes its pods (non-graceful shutdown)",
            crate::cluster::nodes::OUT_OF_SERVICE_TAINT
        ),
        Event::ExcludedFromLoadBalancers {
            node,
            deregistration,
        } => format!("{node}: {deregistration}"),
        Event::Tainted { node } => format!(
            "{node}: tainted {}:NoSchedule so the DaemonSet pods it evicts stay off until the uncordon",
            crate::fence::DRAINING_TAINT
        ),
        Event::Tier { number, of, tier } => format!(
            "tier {number}/{of} ({}): {} pod(s)",
            super::plan::Ranked(&tier.rank),
            tier.pods.len()
        ),
        Event::Blocked {
            pod,
            blocked,
            waited,
        } => {
            let waited = if waited.as_secs() > 0 {
                format!(" (waiting {}s)", waited.as_secs())
            } else {
                String::new()
            };
            match &blocked.budget {
                Some(budget) => format!(
                    "{pod}: waiting for PodDisruptionBudget {budget}: {}{waited}",
                    blocked.detail
                ),
                None => format!("{pod}: waiting: {}{waited}", blocked.detail),
            }
        }
        Event::Gone { pod } => format!("{pod}: gone"),
        Event::Surged { workload } => {
            format!(
                "{workload}: rollout restarted (--surge) so a replacement is Ready before the old pod goes"
            )
        }
        Event::DeletedPastBudget(e) => format!("deadline ladder: {}", e.describe()),
        Event::Replacement {
            replaces,
            pod,
            stage,
            node,
        } => match node {
            Some(node) => format!("  {pod} (replaces {replaces}): {stage} on {node}"),
            None => format!("  {pod} (replaces {replaces}): {stage}"),
        },
        Event::StoppedEarly(s) => format!(
            "{}: stopped {:.1}s after its eviction while Service {} still routed to it",
            s.pod,
            s.after_seconds,
            s.services.join(", ")
        ),
    }
}
