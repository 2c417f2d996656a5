use super::Report;
use crate::plan::PlanReport;

impl Report for PlanReport {
    fn text(&self) -> String {
        let names: Vec<&str> = self.nodes.iter().map(|n| n.as_str()).collect();
        let mut out = format!(
            "Plan for {} ({} pod(s))\n",
            names.join(", "),
            self.pods.len()
        );
        for p in &self.pods {
            match &p.lands_on {
                Some(node) => out.push_str(&format!("  {}  {} -> {node}\n", p.pod, p.verdict)),
                None => out.push_str(&format!("  {}  {}\n", p.pod, p.verdict)),
            }
        }
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
