use super::Report;
use crate::workflow::MaintainReport;

impl Report for MaintainReport {
    fn text(&self) -> String {
        format!("{}: maintained; now {}", self.node, self.final_state)
    }
}
