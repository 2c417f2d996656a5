//! Everything kordon prints for people and scripts goes through here: text for a
//! terminal, or one stable document with `-o json` or `-o yaml`.
use std::io::Write;

use serde::Serialize;

pub mod approve;
pub mod cordon;
pub mod drain;
mod forecast;
pub mod maintain;
mod outage;
pub mod plan;
pub mod progress;
pub mod roll;
pub mod status;
mod table;
mod verdict;
pub mod version;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    #[default]
    Text,
    Json,
    /// The JSON document, written as YAML (as `kubectl -o yaml` is to `-o json`).
    Yaml,
}

impl Format {
    /// Machine output: one document on stdout, no progress lines.
    pub fn is_document(self) -> bool {
        self != Format::Text
    }
}

/// A result a command prints: human text, or the value serialized as JSON or YAML.
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
            Format::Yaml => {
                yaml(report).unwrap_or_else(|e| format!("error: \"cannot serialize report: {e}\""))
            }
        };
        let mut out = std::io::stdout().lock();
        // A closed pipe (`kordon status | head`) is not an error worth reporting.
        let _ = writeln!(out, "{}", text.trim_end());
    }

    /// A progress line for people; JSON and YAML output stay one document, so it is
    /// skipped.
    pub fn progress(&self, line: impl AsRef<str>) {
        if self.format == Format::Text {
            let _ = writeln!(std::io::stdout().lock(), "{}", line.as_ref());
        }
    }
}

/// The JSON document as YAML: going through `serde_json::Value` makes the two
/// formats hold the same document whatever serde attributes a report uses. Keys come
/// out sorted, as in `kubectl -o yaml` (which converts its JSON the same way).
fn yaml(report: &impl Serialize) -> Result<String, String> {
    let value = serde_json::to_value(report).map_err(|e| e.to_string())?;
    serde_saphyr::to_string(&value).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn yaml_holds_the_json_document() {
        let doc = json!({
            "nodes": [{ "node": "node-2", "before": "Ready", "changed": true, "pods": null }],
            "dry_run": false,
            "odd": "yes: no # not a comment",
            "empty": [],
        });
        let text = super::yaml(&doc).expect("yaml");
        let back: serde_json::Value = serde_saphyr::from_str(&text).expect("parse yaml");
        assert_eq!(back, doc, "{text}");
    }
}
