//! The one line a user sees when the API server goes away, and when it is back.
use std::fmt;

use crate::cluster::Reachability;

impl fmt::Display for Reachability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Lost { at } => write!(
                f,
                "lost the API server at {} UTC, retrying",
                at.strftime("%H:%M:%S")
            ),
            Self::Back { after } => write!(
                f,
                "the API server is back after {:.1}s; carrying on",
                after.as_secs_f64()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_one_plain_line_each_way() {
        let at: jiff::Timestamp = "2026-12-03T12:03:04Z".parse().expect("timestamp");
        assert_eq!(
            Reachability::Lost { at }.to_string(),
            "lost the API server at 12:03:04 UTC, retrying"
        );
        let after = std::time::Duration::from_millis(10_300);
        assert_eq!(
            Reachability::Back { after }.to_string(),
            "the API server is back after 10.3s; carrying on"
        );
    }
}
