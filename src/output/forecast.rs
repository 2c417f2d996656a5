//! `plan --fleet`: a row per node (batch, start, end, what holds it back), then when
//! the round would be done and what the node time rests on.
use std::time::Duration;

use super::Report;
use crate::fleet::forecast::Forecast;

impl Report for Forecast {
    fn text(&self) -> String {
        let rows = self.nodes.iter().map(|e| {
            [
                e.node.clone(),
                e.batch.to_string(),
                e.starts.strftime("%Y-%m-%d %H:%M").to_string(),
                e.ends.strftime("%Y-%m-%d %H:%M").to_string(),
                if e.waits_for.is_empty() {
                    "-".into()
                } else {
                    e.waits_for.join("; ")
                },
            ]
        });
        let table = super::table::plain(
            &["NODE", "BATCH", "STARTS (UTC)", "ENDS", "WAITS FOR"],
            rows,
        );
        let node_time = humantime::format_duration(Duration::from_secs(self.node_seconds));
        let mut text = format!(
            "{table}\neach node taken as {node_time}: {}\n",
            self.node_time_from
        );
        if let Some(ends) = self.ends {
            let batches = self.nodes.last().map_or(0, |e| e.batch);
            text.push_str(&format!(
                "{} node(s) in {batches} batch(es), done by {}\n",
                self.nodes.len(),
                ends.strftime("%Y-%m-%d %H:%M UTC")
            ));
        }
        for never in &self.never {
            text.push_str(&format!("never starts: {never}\n"));
        }
        text
    }
}
