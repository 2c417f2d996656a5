//! The traffic probe: vegeta (testbed/vegeta.sh) sends requests at a steady rate to one
//! URL for as long as it runs, and every result is kept: failures (refused, reset,
//! timeout, non-2xx) with their time, and the latencies. Zero downtime is measured
//! where users feel it, in failed requests.
//!
//! Only addresses on this machine are ever targets: a Service's ClusterIP that the
//! testbed routes to its own bridges, or loopback.
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde::Deserialize;

/// A load that runs until [`Probe::finish`].
pub struct Probe {
    attack: Child,
}

/// One request's result, as `vegeta encode` writes it.
#[derive(Debug, Deserialize)]
struct Hit {
    timestamp: String,
    code: u16,
    /// Nanoseconds.
    latency: u64,
    #[serde(default)]
    error: String,
}

/// A failed request: when, and what it got.
#[derive(Debug, Clone)]
pub struct Failure {
    pub at: String,
    pub code: u16,
    pub error: String,
}

/// What the probe saw.
#[derive(Debug)]
pub struct Report {
    pub sent: usize,
    pub failures: Vec<Failure>,
    /// The most failures in a row.
    pub longest_run: usize,
    pub p50: Duration,
    pub p99: Duration,
}

impl Probe {
    /// Starts sending `rate` requests a second to `url` (bounded: it stops by itself
    /// after `limit`), each given `timeout`.
    pub fn start(url: &str, rate: u32, limit: Duration, timeout: Duration) -> Self {
        let vegeta = super::repo_root().join("testbed/vegeta.sh");
        let target = format!("GET {url}\n");
        let mut attack = Command::new(vegeta)
            .args([
                "attack",
                &format!("-rate={rate}/s"),
                &format!("-duration={}s", limit.as_secs()),
                &format!("-timeout={}ms", timeout.as_millis()),
                "-keepalive=false",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start vegeta attack");
        use std::io::Write;
        attack
            .stdin
            .take()
            .expect("stdin")
            .write_all(target.as_bytes())
            .expect("write target");
        Self { attack }
    }

    /// Stops the load (SIGINT: vegeta finishes what is in flight and writes it all)
    /// and reads every result.
    pub fn finish(mut self) -> Report {
        let _ = Command::new("kill")
            .args(["-INT", &self.attack.id().to_string()])
            .status();
        let results = self.attack.stdout.take().expect("results");
        let mut encode = Command::new(super::repo_root().join("testbed/vegeta.sh"))
            .args(["encode", "--to", "json"])
            .stdin(results)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start vegeta encode");
        let mut hits: Vec<Hit> = BufReader::new(encode.stdout.take().expect("encoded"))
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str(&l).ok())
            .collect();
        let _ = self.attack.wait();
        let _ = encode.wait();
        Report::of(&mut hits)
    }
}

impl Report {
    fn of(hits: &mut [Hit]) -> Self {
        // RFC 3339 in one zone: the text sorts as the time does.
        hits.sort_by(|a, b| a.timestamp.cmp(&b.timestamp));
        let failed = |h: &Hit| !(200..300).contains(&h.code) || !h.error.is_empty();
        let mut longest_run = 0;
        let mut run = 0;
        for h in hits.iter() {
            run = if failed(h) { run + 1 } else { 0 };
            longest_run = longest_run.max(run);
        }
        let mut latencies: Vec<u64> = hits.iter().map(|h| h.latency).collect();
        latencies.sort_unstable();
        let at = |q: f64| {
            let i = ((latencies.len() as f64 - 1.0) * q).round() as usize;
            Duration::from_nanos(latencies.get(i).copied().unwrap_or(0))
        };
        Self {
            sent: hits.len(),
            failures: hits
                .iter()
                .filter(|h| failed(h))
                .map(|h| Failure {
                    at: h.timestamp.clone(),
                    code: h.code,
                    error: h.error.clone(),
                })
                .collect(),
            longest_run,
            p50: at(0.5),
            p99: at(0.99),
        }
    }
}
