//! The testbed's external load balancer (`testbed/lb.sh`): the real service controller
//! of k8s.io/cloud-provider with a cloud of TCP proxies on a testbed address. It decides
//! from the nodes' labels which nodes a LoadBalancer Service's balancer sends to, as on
//! a cloud, and prints every change with its time; this keeps those lines, each with the
//! moment the test read it.
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running balancer, stopped when dropped.
pub struct Balancer {
    child: Child,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Balancer {
    /// Starts balancers for every LoadBalancer Service of the cluster, listening on
    /// `address`, health-checking nodes every second (two checks in a row change a
    /// node's health).
    pub fn start(kubeconfig: &Path, address: &str) -> Self {
        let lb = super::repo_root().join("testbed/lb.sh");
        let mut child = Command::new(lb)
            .arg("-kubeconfig")
            .arg(kubeconfig)
            .args(["-address", address, "-interval", "1s", "-threshold", "2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start testbed/lb.sh");
        let stdout = child.stdout.take().expect("stdout");
        let lines: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
        let kept = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(mut l) = kept.lock() {
                    l.push((Instant::now(), line));
                }
            }
        });
        Self { child, lines }
    }

    /// Every line so far, with when it was read.
    pub fn lines(&self) -> Vec<(Instant, String)> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Waits (up to `limit`) for a line after the first `skip` that `wanted` accepts, and
    /// returns its index and when it was read.
    pub async fn wait_for(
        &self,
        skip: usize,
        limit: Duration,
        what: &str,
        wanted: impl Fn(&str) -> bool,
    ) -> (usize, Instant) {
        let started = Instant::now();
        loop {
            let lines = self.lines();
            if let Some(i) = (skip..lines.len()).find(|&i| wanted(&lines[i].1)) {
                return (i, lines[i].0);
            }
            assert!(
                started.elapsed() < limit,
                "the load balancer never said {what}; it said:\n{}",
                lines
                    .iter()
                    .map(|(_, l)| l.as_str())
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The nodes a `NAMESPACE/NAME: nodes a,b,c` line gives a balancer, if it is one.
pub fn nodes(line: &str) -> Option<Vec<&str>> {
    let (_, list) = line.split_once(": nodes ")?;
    Some(list.split(',').filter(|n| !n.is_empty()).collect())
}

/// Whether `line` says `node` became healthy.
pub fn healthy(line: &str, node: &str) -> bool {
    line.contains(&format!(": {node} (")) && line.ends_with(" healthy")
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
