//! `kordon approve`: what was approved, and the approval's value.
use serde::Serialize;

use super::Report;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Approved {
    /// `roll RUN` or `MaintenancePlan NAME`.
    pub target: String,
    /// The value of `kordon.dev/approve` written.
    pub approval: String,
}

impl Report for Approved {
    fn text(&self) -> String {
        format!(
            "approved: {} may start one node despite a failing metric gate (kordon.dev/approve={})",
            self.target, self.approval
        )
    }
}
