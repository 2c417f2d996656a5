//! Everything kordon prints for people and scripts goes through here: text for a
//! terminal, or stable JSON with `-o json`.
use std::io::Write;

use serde::Serialize;

pub mod drain;
mod maintain;
pub mod plan;
pub mod progress;
pub mod roll;
pub mod status;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    #[default]
    Text,
    Json,
}

/// A result a command prints: human text, or the value serialized as JSON.
pub trait Report: Serialize {
    fn text(&self) -> String;
}

#[derive(Debug, Clone, Copy)]
pub struct Printer {
    format: Format,
}

impl Printer {
    pub fn new(format: Format) -> Self {
        Self { format }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// Prints a final report to stdout.
    pub fn report(&self, report: &impl Report) {
        let text = match self.format {
            Format::Text => report.text(),
            Format::Json => serde_json::to_string_pretty(report)
                .unwrap_or_else(|e| format!("{{\"error\": \"cannot serialize report: {e}\"}}")),
        };
        let mut out = std::io::stdout().lock();
        // A closed pipe (`kordon status | head`) is not an error worth reporting.
        let _ = writeln!(out, "{}", text.trim_end());
    }

    /// A progress line for people; JSON output stays one document, so it is skipped.
    pub fn progress(&self, line: impl AsRef<str>) {
        if self.format == Format::Text {
            let _ = writeln!(std::io::stdout().lock(), "{}", line.as_ref());
        }
    }
}
