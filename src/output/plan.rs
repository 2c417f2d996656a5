use super::Report;
use crate::placement::Misfit;
use crate::plan::{PlanReport, Unplaceable};
use crate::tiers::{PodType, Rank, Tier};

/// A tier's rank in words: "DaemonSet pods, order 0, priority 0".
pub struct Ranked<'a>(pub &'a Rank);

impl std::fmt::Display for Ranked<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.0.pod_type {
            PodType::Default => "pods",
            PodType::DaemonSet => "DaemonSet pods",
        };
        write!(
            f,
            "{kind}, order {}, priority {}",
            self.0.order, self.0.priority
        )
    }
}

/// The eviction order, a tier a line: each starts once the one before is gone.
pub fn tiers(tiers: &[Tier]) -> String {
    let mut out = String::new();
    if tiers.is_empty() {
        return out;
    }
    out.push_str("Eviction order (a tier starts once every pod of the one before is gone):\n");
    for (i, t) in tiers.iter().enumerate() {
        let pods: Vec<String> = t.pods.iter().map(ToString::to_string).collect();
        out.push_str(&format!(
            "  tier {} ({}): {}\n",
            i + 1,
            Ranked(&t.rank),
            pods.join(", ")
        ));
    }
    out
}

impl Report for PlanReport {
    fn text(&self) -> String {
        let names: Vec<&str> = self.nodes.iter().map(|n| n.as_str()).collect();
        let mut out = format!(
            "Plan for {} ({} pod(s))\n",
            names.join(", "),
            self.pods.len()
        );
        for p in &self.pods {
            let lands = p
                .lands_on
                .as_ref()
                .map(|node| format!(" -> {node}"))
                .unwrap_or_default();
            out.push_str(&format!(
                "  {}  {}{lands}\n",
                p.pod,
                super::verdict::Said(&p.verdict)
            ));
        }
        out.push_str(&tiers(&self.tiers));
        out.push_str(&forecast(self));
        out.push_str(if self.safe {
            "Verdict: safe\n"
        } else {
            "Verdict: unsafe\n"
        });
        out
    }
}

/// The plan's findings without the pod list: what `drain` and `maintain` print before
/// they change anything.
pub fn forecast(plan: &PlanReport) -> String {
    let mut out = String::new();
    for b in &plan.budgets_at_zero {
        out.push_str(&format!(
            "Budget at 0 now: PodDisruptionBudget {} ({} healthy, needs {}): its pods wait for replacements\n",
            b.budget, b.current_healthy, b.desired_healthy
        ));
    }
    for u in &plan.fits_nowhere {
        out.push_str(&format!("Fits nowhere: {} ({})\n", u.pod, u.why()));
    }
    for w in &plan.at_risk {
        out.push_str(&format!("Would lose availability: {w}\n"));
    }
    out.push_str(&format!("Eviction waves: {}\n", plan.waves));
    out
}

impl Unplaceable {
    /// Why no remaining node takes the pod's replacement, node counts first as the
    /// scheduler's FailedScheduling events put it: "1 node(s) lack the cpu, memory or
    /// pod slots it requests, 2 node(s) have a taint it does not tolerate".
    pub fn why(&self) -> String {
        if self.nodes_rejecting.is_empty() {
            return "no other node is schedulable".to_string();
        }
        self.nodes_rejecting
            .iter()
            .map(|(misfit, n)| format!("{n} node(s) {}", rejects(*misfit)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What a node that turns a pod away lacks or has, after "N node(s)".
fn rejects(misfit: Misfit) -> &'static str {
    match misfit {
        Misfit::NodeSelector => "lack a label its nodeSelector requires",
        Misfit::NodeAffinity => "do not match its required node affinity",
        Misfit::Taint => "have a taint it does not tolerate",
        Misfit::Resources => "lack the cpu, memory or pod slots it requests",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn unplaceable(nodes_rejecting: &[(Misfit, usize)]) -> Unplaceable {
        Unplaceable {
            pod: "ns/web-1".into(),
            nodes_rejecting: BTreeMap::from_iter(nodes_rejecting.iter().copied()),
        }
    }

    #[test]
    fn why_counts_the_nodes_behind_each_reason_in_words() {
        let u = unplaceable(&[(Misfit::Taint, 2), (Misfit::Resources, 3)]);
        assert_eq!(
            u.why(),
            "2 node(s) have a taint it does not tolerate, \
             3 node(s) lack the cpu, memory or pod slots it requests"
        );
    }

    #[test]
    fn every_reason_reads_as_words_not_a_type_name() {
        for misfit in [
            Misfit::NodeSelector,
            Misfit::NodeAffinity,
            Misfit::Taint,
            Misfit::Resources,
        ] {
            let why = unplaceable(&[(misfit, 1)]).why();
            assert!(why.starts_with("1 node(s) "), "{why}");
            assert!(!why.contains(&format!("{misfit:?}")), "{why}");
        }
    }

    #[test]
    fn tiers_read_first_to_last_with_their_pods() {
        let rank = |pod_type, order, priority| Rank {
            pod_type,
            order,
            priority,
        };
        let text = tiers(&[
            Tier {
                rank: rank(PodType::Default, 0, -10),
                pods: vec!["ns/batch-1".into(), "ns/batch-2".into()],
            },
            Tier {
                rank: rank(PodType::DaemonSet, 0, 0),
                pods: vec!["ns/agent-x".into()],
            },
        ]);
        assert_eq!(
            text,
            "Eviction order (a tier starts once every pod of the one before is gone):\n\
             \x20 tier 1 (pods, order 0, priority -10): ns/batch-1, ns/batch-2\n\
             \x20 tier 2 (DaemonSet pods, order 0, priority 0): ns/agent-x\n"
        );
        assert!(tiers(&[]).is_empty());
    }

    #[test]
    fn no_node_at_all_says_so() {
        assert_eq!(unplaceable(&[]).why(), "no other node is schedulable");
    }
}
