//! Live progress of a drain: on a terminal a bar (pods gone of pods to evict, time
//! elapsed, what holds the drain now) with the event lines scrolling above it; plain
//! lines otherwise.
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use super::Printer;
use crate::drain::Event;

pub struct DrainProgress {
    printer: Printer,
    bar: Option<ProgressBar>,
}

impl DrainProgress {
    /// A bar only when stdout is a terminal and the output is text.
    pub fn new(printer: Printer, pods: usize) -> Self {
        let bar = (!printer.format().is_document() && std::io::stdout().is_terminal() && pods > 0)
            .then(|| {
                let bar = ProgressBar::new(pods as u64);
                if let Ok(style) = ProgressStyle::with_template(
                    "{spinner} {pos}/{len} pods gone [{elapsed}] {wide_msg}",
                ) {
                    bar.set_style(style);
                }
                bar.enable_steady_tick(Duration::from_millis(200));
                bar
            });
        Self { printer, bar }
    }

    pub fn event(&self, event: &Event) {
        let line = super::drain::event_line(event);
        let Some(bar) = &self.bar else {
            self.printer.progress(line);
            return;
        };
        match event {
            Event::Gone { .. } => {
                bar.inc(1);
                bar.set_message("");
            }
            Event::Blocked { pod, blocked, .. } => {
                bar.set_message(format!("{pod}: {}", blocked.detail))
            }
            _ => {}
        }
        bar.println(line);
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
