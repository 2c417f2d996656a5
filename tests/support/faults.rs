//! Fault injection on a control plane of the fault tests' own: it is killed, stopped
//! and cut off, so it never is the shared test cluster. One fault test holds it at a
//! time; each starts it fresh (`testbed/cluster up`, a few seconds) and tears it down.
//!
//! The tests' own client signs in as `kwok`, a user the testbed's audit policy does not
//! log, so the audit log holds kordon's requests (and kubectl's, by user agent) only.
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Config, ResourceExt};
use serde_json::json;

use super::{TestEnv, eventually, pod_ready, repo_root, unique_id};

const DIR: &str = "/tmp/kordon-fault-cluster";
const PORT: u16 = 19643;

/// The fault tests' control plane, theirs alone while this is held.
pub struct FaultCluster {
    kubeconfig: PathBuf,
    _turn: MutexGuard<'static, ()>,
    /// Held (flock) until dropped, after the cluster is down.
    _lock: std::fs::File,
}

fn testbed(args: &[&str]) -> Command {
    let mut cmd = Command::new(repo_root().join("testbed/cluster"));
    cmd.args(args)
        .env("KORDON_CLUSTER_DIR", DIR)
        .env("KORDON_CLUSTER_PORT", PORT.to_string());
    cmd
}

impl FaultCluster {
    /// Waits for the previous fault test (of this process, then of any other: a bench
    /// beside the suite) to finish, then starts a fresh cluster.
    pub fn up() -> Self {
        static TURN: Mutex<()> = Mutex::new(());
        let turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
        let lock = std::fs::File::create(format!("{DIR}.turn")).expect("fault cluster lock");
        lock.lock().expect("lock the fault cluster");
        let _ = testbed(&["down"]).output();
        let out = testbed(&["up"]).output().expect("run testbed/cluster up");
        assert!(
            out.status.success(),
            "fault cluster up:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            kubeconfig: Path::new(DIR).join("admin.kubeconfig"),
            _turn: turn,
            _lock: lock,
        }
    }

    /// The admin kubeconfig, which kordon uses.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn port(&self) -> u16 {
        PORT
    }

    /// `testbed/cluster VERB COMPONENT` (stop, kill, start, restart); returns when it
    /// is done (for start: when the component serves).
    pub async fn fault(&self, verb: &str, component: &str) {
        let out = tokio::process::Command::from(testbed(&[verb, component]))
            .output()
            .await
            .expect("run testbed/cluster");
        assert!(
            out.status.success(),
            "testbed/cluster {verb} {component}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A test namespace on this cluster, seen through the unaudited `kwok` user.
    pub async fn env(&self, name: &str) -> FaultEnv {
        let kubeconfig = Kubeconfig::read_from(Path::new(DIR).join("kwok.kubeconfig"))
            .expect("read kwok kubeconfig");
        let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("kwok kubeconfig is valid");
        config.default_retry = false;
        let client = Client::try_from(config).expect("client");
        let id = unique_id(name);
        let ns: Namespace =
            serde_json::from_value(json!({ "metadata": { "name": id } })).expect("namespace");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create test namespace");
        let sa: Api<ServiceAccount> = Api::namespaced(client.clone(), &id);
        eventually(
            "default service account",
            Duration::from_secs(30),
            || async { sa.get_opt("default").await.ok().flatten().is_some() },
        )
        .await;
        FaultEnv(std::mem::ManuallyDrop::new(TestEnv {
            client,
            id,
            nodes: Vec::new(),
        }))
    }

    /// `kordon` with `kubeconfig` (this cluster's, or a proxy's).
    pub fn kordon(&self, kubeconfig: &Path) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kordon"));
        cmd.arg("--kubeconfig").arg(kubeconfig);
        cmd
    }

    /// `kubectl` against this cluster.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        cmd
    }

    /// When kordon's requests reached the API server: the audit log's events without a
    /// user agent (kubectl sends one; the tests' own client is not audited).
    pub fn kordon_requests(&self) -> Vec<Request> {
        let text =
            std::fs::read_to_string(Path::new(DIR).join("logs/audit.log")).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["userAgent"].is_null())
            .filter_map(|e| {
                Some(Request {
                    at: e["requestReceivedTimestamp"].as_str()?.parse().ok()?,
                    verb: e["verb"].as_str()?.to_string(),
                    uri: e["requestURI"].as_str()?.to_string(),
                    code: e["responseStatus"]["code"].as_u64(),
                })
            })
            .collect()
    }
}

impl Drop for FaultCluster {
    fn drop(&mut self) {
        let _ = testbed(&["down"]).output();
    }
}

/// A [`TestEnv`] on the fault cluster. Never dropped as one: its cleanup would go to
/// the shared cluster, and the fault cluster is torn down whole.
pub struct FaultEnv(std::mem::ManuallyDrop<TestEnv>);

impl Deref for FaultEnv {
    type Target = TestEnv;
    fn deref(&self) -> &TestEnv {
        &self.0
    }
}

impl std::ops::DerefMut for FaultEnv {
    fn deref_mut(&mut self) -> &mut TestEnv {
        &mut self.0
    }
}

/// One of kordon's requests, as the audit log has it.
pub struct Request {
    pub at: Timestamp,
    pub verb: String,
    pub uri: String,
    pub code: Option<u64>,
}

impl Request {
    /// The resource path, without the query.
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or(&self.uri)
    }

    /// The path and its selectors: what a list and the watch that follows it share.
    pub fn selected(&self) -> String {
        let query = self.uri.split_once('?').map_or("", |(_, q)| q);
        let mut selectors: Vec<&str> = query
            .split('&')
            .filter(|p| p.starts_with("labelSelector=") || p.starts_with("fieldSelector="))
            .collect();
        selectors.sort();
        format!("{} {}", self.path(), selectors.join("&"))
    }
}

/// The fewest Ready pods of a selector, across API server restarts: a relist (after a
/// 410, as a restarted API server answers old resource versions) is counted only once
/// complete, so a half-read list never looks like an outage.
pub struct MinReady {
    value: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl MinReady {
    pub async fn start(pods: Api<Pod>, selector: &str) -> Self {
        let value = Arc::new(AtomicUsize::new(usize::MAX));
        let synced = Arc::new(AtomicBool::new(false));
        let (min, first) = (value.clone(), synced.clone());
        let stream = watcher(pods, watcher::Config::default().labels(selector)).default_backoff();
        let task = tokio::spawn(async move {
            let mut seen: HashMap<String, bool> = HashMap::new();
            let mut listing: Option<HashMap<String, bool>> = None;
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                let serving = |p: &Pod| pod_ready(p) && p.metadata.deletion_timestamp.is_none();
                match event {
                    Ok(watcher::Event::Init) => listing = Some(HashMap::new()),
                    Ok(watcher::Event::InitApply(p)) => {
                        if let Some(l) = listing.as_mut() {
                            l.insert(p.uid().unwrap_or_default(), serving(&p));
                        }
                    }
                    Ok(watcher::Event::InitDone) => {
                        seen = listing.take().unwrap_or_default();
                        first.store(true, Ordering::SeqCst);
                    }
                    Ok(watcher::Event::Apply(p)) => {
                        seen.insert(p.uid().unwrap_or_default(), serving(&p));
                    }
                    Ok(watcher::Event::Delete(p)) => {
                        seen.remove(&p.uid().unwrap_or_default());
                    }
                    Err(_) => continue,
                }
                if listing.is_none() && first.load(Ordering::SeqCst) {
                    min.fetch_min(seen.values().filter(|s| **s).count(), Ordering::SeqCst);
                }
            }
        });
        while !synced.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { value, task }
    }

    pub fn min_ready(&self) -> usize {
        self.value.load(Ordering::SeqCst)
    }
}

impl Drop for MinReady {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `testbed/proxy` in front of the API server, and a kubeconfig that goes through it.
pub struct Proxy {
    child: Child,
    control: BufReader<TcpStream>,
    pub kubeconfig: PathBuf,
}

impl Proxy {
    pub fn start(cluster: &FaultCluster) -> Self {
        let mut child = Command::new(repo_root().join("testbed/proxy"))
            .arg(cluster.port().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start testbed/proxy");
        let mut first = String::new();
        BufReader::new(child.stdout.take().expect("proxy stdout"))
            .read_line(&mut first)
            .expect("proxy ports");
        let words: Vec<&str> = first.split_whitespace().collect();
        let (port, control) = match words.as_slice() {
            ["proxy", port, "control", control] => (*port, *control),
            _ => panic!("testbed/proxy said {first:?}"),
        };
        let control = TcpStream::connect(format!("127.0.0.1:{control}")).expect("proxy control");
        let admin = std::fs::read_to_string(cluster.kubeconfig()).expect("kubeconfig");
        let kubeconfig = Path::new(DIR).join(format!("proxy-{port}.kubeconfig"));
        let server = format!("127.0.0.1:{}", cluster.port());
        std::fs::write(
            &kubeconfig,
            admin.replace(&server, &format!("127.0.0.1:{port}")),
        )
        .expect("write proxy kubeconfig");
        Self {
            child,
            control: BufReader::new(control),
            kubeconfig,
        }
    }

    /// Sends one control command (`drop`, `refuse N`, `stall N`, `count`); returns the answer.
    pub fn send(&mut self, command: &str) -> String {
        let stream = self.control.get_mut();
        writeln!(stream, "{command}").expect("proxy control");
        let mut answer = String::new();
        self.control.read_line(&mut answer).expect("proxy answer");
        assert!(!answer.starts_with("error"), "proxy: {answer}");
        answer.trim().to_string()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A seeded source of choices (splitmix64), so a failing run can be replayed.
pub struct Seeded(u64);

impl Seeded {
    /// The seed from `KORDON_FAULT_SEED`, else from the clock.
    pub fn seed() -> u64 {
        std::env::var("KORDON_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| (Timestamp::now().as_nanosecond().unsigned_abs() % 1_000_000) as u64)
    }

    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n.max(1)
    }
}
