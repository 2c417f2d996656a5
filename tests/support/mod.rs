//! Integration-test support: one real control plane per test run, shared by every
//! test, and an isolated environment per test (its own namespace and its own fake
//! nodes with unique names), so tests run in parallel and leave nothing behind.
//!
//! The cluster comes from `KORDON_TEST_KUBECONFIG` when set (the README's test
//! command sets it); otherwise `testbed/cluster up` starts one, or reuses a healthy one.
#![allow(dead_code)] // each test binary uses a different part of this module

pub mod audit;
pub mod balancer;
pub mod faults;
pub mod fixtures;
pub mod monitoring;
pub mod nm;
pub mod rbac;
pub mod traffic;
pub mod watcher;
pub mod webhook;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::json;

/// Label every fake node of a test carries; workloads of that test select it.
pub const ENV_LABEL: &str = "kordon.test/env";

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The shared cluster's kubeconfig, starting the cluster on first use.
pub fn kubeconfig() -> &'static Path {
    static KUBECONFIG: OnceLock<PathBuf> = OnceLock::new();
    KUBECONFIG.get_or_init(|| {
        if let Some(path) = std::env::var_os("KORDON_TEST_KUBECONFIG") {
            return PathBuf::from(path);
        }
        let out = Command::new(repo_root().join("testbed/cluster"))
            .arg("up")
            .output()
            .expect("run testbed/cluster up");
        assert!(
            out.status.success(),
            "testbed/cluster up failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        PathBuf::from(
            stdout
                .lines()
                .last()
                .expect("cluster up prints a kubeconfig")
                .trim(),
        )
    })
}

/// A kubeconfig for the test cluster that authenticates with `token` (a service
/// account's, from `kubectl create token`), written under `name`.
pub fn kubeconfig_with_token(name: &str, token: &str) -> PathBuf {
    let admin = std::fs::read_to_string(kubeconfig()).expect("kubeconfig");
    let line = admin
        .lines()
        .find(|l| l.trim_start().starts_with("token:"))
        .expect("token line");
    let path = std::env::temp_dir().join(format!("{name}.kubeconfig"));
    std::fs::write(&path, admin.replace(line, &format!("    token: {token}"))).expect("write");
    path
}

pub async fn client() -> Client {
    client_from(kubeconfig()).await
}

/// A client authenticated by `path` (the admin's, or a service account's).
pub async fn client_from(path: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(path).expect("read test kubeconfig");
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("test kubeconfig is valid");
    // See kordon's Connection::open: tests must see an eviction's 429 too.
    config.default_retry = false;
    Client::try_from(config).expect("client")
}

fn unique_id(name: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let salt =
        (nanos ^ std::process::id().rotate_left(16) ^ n.wrapping_mul(2_654_435_761)) % 46_656;
    format!("{name}-{salt:03x}{n}")
}

/// One test's slice of the shared cluster.
pub struct TestEnv {
    pub client: Client,
    /// Unique per test: the namespace's name and the prefix of every node's name.
    pub id: String,
    nodes: Vec<String>,
}

impl TestEnv {
    /// A fresh namespace named after the test, with a unique suffix.
    pub async fn new(name: &str) -> Self {
        let client = client().await;
        let id = unique_id(name);
        let ns: Namespace = serde_json::from_value(json!({
            "metadata": { "name": id, "labels": { "kordon.test/env": id } }
        }))
        .expect("namespace");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create test namespace");
        // Pods need the namespace's default service account, which a controller makes.
        let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(client.clone(), &id);
        eventually(
            "default service account",
            Duration::from_secs(30),
            || async { sa.get_opt("default").await.ok().flatten().is_some() },
        )
        .await;
        Self {
            client,
            id,
            nodes: Vec::new(),
        }
    }

    /// node-1 and node-2 with a Deployment `web` of two Ready pods, one on each.
    pub async fn two_nodes_with_web(name: &str) -> Self {
        Self::two_nodes_with_web_on(name, fixtures::NodeSpec::default()).await
    }

    /// The same, node-1 shaped by `first`.
    pub async fn two_nodes_with_web_on(name: &str, first: fixtures::NodeSpec) -> Self {
        let mut env = Self::new(name).await;
        env.add_node_with("node-1", first).await;
        env.add_node("node-2").await;
        let spread = fixtures::PodOptions {
            spread: true,
            ..Default::default()
        };
        env.create(&fixtures::deployment(env.ns(), "web", 2, &spread))
            .await;
        env.wait_ready("app=web", 2).await;
        env
    }

    pub fn ns(&self) -> &str {
        &self.id
    }

    /// The full (unique) name of this test's node `short`, e.g. `node-2`.
    pub fn node(&self, short: &str) -> String {
        format!("{}-{short}", self.id)
    }

    /// Adds a KWOK node with 4 CPUs, 16Gi and 110 pods, and waits until it is Ready and
    /// the node lifecycle controller has lifted its `not-ready` taint.
    pub async fn add_node(&mut self, short: &str) -> String {
        self.add_node_with(short, fixtures::NodeSpec::default())
            .await
    }

    pub async fn add_node_with(&mut self, short: &str, spec: fixtures::NodeSpec) -> String {
        let name = self.node(short);
        let node = fixtures::node(&name, &self.id, &spec);
        let wanted_taints = spec.taints.len();
        let api: Api<Node> = Api::all(self.client.clone());
        api.create(&PostParams::default(), &node)
            .await
            .expect("create node");
        self.nodes.push(name.clone());
        eventually(
            &format!("node {name} Ready"),
            Duration::from_secs(30),
            || async {
                api.get(&name).await.is_ok_and(|n| {
                    let taints = n
                        .spec
                        .as_ref()
                        .and_then(|s| s.taints.as_ref())
                        .map_or(0, Vec::len);
                    node_ready(&n) && taints == wanted_taints
                })
            },
        )
        .await;
        name
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.id)
    }

    /// Pods of this namespace on `node` (full name), not yet terminating.
    pub async fn pods_on(&self, node: &str) -> Vec<Pod> {
        let lp = ListParams::default().fields(&format!("spec.nodeName={node}"));
        self.pods()
            .list(&lp)
            .await
            .expect("list pods")
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect()
    }

    /// Waits until `count` pods matching `selector` are Ready, and returns them.
    /// Budgets that allow no eviction now: a Deployment `warming` of one pod on `node`
    /// that never becomes Ready, and for each of `apps` (two Ready pods each, created
    /// already) a budget `<app>-pdb` of `minAvailable: 2` over its pods and warming's.
    /// 2 of 3 are healthy, so none may go, yet one could once warming is Ready: no plan
    /// refuses such a budget up front.
    pub async fn hold_with_budgets(&self, apps: &[&str], node: &str) {
        let never_ready = fixtures::PodOptions {
            ready_delay: Some("1h"),
            pin_to: Some(node.to_string()),
            ..Default::default()
        };
        self.create(&fixtures::deployment(self.ns(), "warming", 1, &never_ready))
            .await;
        for app in apps {
            self.create(&fixtures::pdb_over(
                &format!("{app}-pdb"),
                &[app, "warming"],
                ("minAvailable", json!(2)),
            ))
            .await;
            self.wait_ready(&format!("app={app}"), 2).await;
        }
        let pods = self.pods();
        let warming = ListParams::default().labels("app=warming");
        eventually(
            "the warming pod to run",
            Duration::from_secs(30),
            || async { pods.list(&warming).await.is_ok_and(|l| l.items.len() == 1) },
        )
        .await;
    }

    pub async fn wait_ready(&self, selector: &str, count: usize) -> Vec<Pod> {
        let lp = ListParams::default().labels(selector);
        let pods = self.pods();
        eventually(
            &format!("{count} Ready pods matching {selector}"),
            Duration::from_secs(60),
            || async {
                let list = pods.list(&lp).await.expect("list pods").items;
                list.iter().filter(|p| pod_ready(p)).count() == count
                    && list.iter().all(|p| p.metadata.deletion_timestamp.is_none())
            },
        )
        .await;
        pods.list(&lp).await.expect("list pods").items
    }

    /// The `kordon` binary, pointed at the test cluster.
    pub fn kordon(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kordon"));
        cmd.arg("--kubeconfig").arg(kubeconfig());
        cmd
    }

    /// A kubeconfig (written under `name`) that authenticates as the service account
    /// `account` of this test's namespace, with a token from `kubectl create token`;
    /// `extra`: more of its flags (e.g. the pod the token is bound to).
    pub fn account_kubeconfig(&self, account: &str, extra: &[&str], name: &str) -> PathBuf {
        let out = self
            .kubectl()
            .args(["create", "token", account, "-n", self.ns(), "--duration=1h"])
            .args(extra)
            .output()
            .expect("kubectl create token");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
        kubeconfig_with_token(name, &token)
    }

    /// Labels `node` (`KEY=VALUE` each), as a person would with kubectl.
    pub fn label_node(&self, node: &str, labels: &[&str]) {
        let labelled = self
            .kubectl()
            .args(["label", "node", node])
            .args(labels)
            .output()
            .expect("kubectl label");
        assert!(labelled.status.success(), "{labelled:?}");
    }

    /// Runs kordon with `args` and collects what it said.
    pub fn run_kordon(&self, args: &[&str]) -> Run {
        Run::from(self.kordon().args(args).output().expect("run kordon"))
    }

    /// Creates a namespaced object in this test's namespace.
    pub async fn create<K>(&self, object: &K) -> K
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
            + Clone
            + std::fmt::Debug
            + serde::Serialize
            + serde::de::DeserializeOwned,
        K::DynamicType: Default,
    {
        Api::<K>::namespaced(self.client.clone(), &self.id)
            .create(&PostParams::default(), object)
            .await
            .expect("create object")
    }

    pub async fn get_node(&self, name: &str) -> Node {
        Api::<Node>::all(self.client.clone())
            .get(name)
            .await
            .expect("get node")
    }

    pub async fn is_cordoned(&self, node: &str) -> bool {
        self.get_node(node)
            .await
            .spec
            .and_then(|s| s.unschedulable)
            .unwrap_or(false)
    }

    /// UIDs of every pod in the namespace, for "nothing changed" checks.
    pub async fn pod_uids(&self) -> Vec<String> {
        let mut uids: Vec<String> = self
            .pods()
            .list(&ListParams::default())
            .await
            .expect("list pods")
            .items
            .into_iter()
            .filter_map(|p| p.metadata.uid)
            .collect();
        uids.sort();
        uids
    }

    /// `kubectl`, pointed at the test cluster.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig").arg(kubeconfig());
        cmd
    }
}

impl Drop for TestEnv {
    /// Deletes the namespace and the nodes without waiting; namespace deletion and
    /// the pod garbage collector finish the rest.
    fn drop(&mut self) {
        let mut args = vec![
            "delete".to_string(),
            "--wait=false".into(),
            "--ignore-not-found".into(),
        ];
        args.push(format!("namespace/{}", self.id));
        args.extend(self.nodes.iter().map(|n| format!("node/{n}")));
        let _ = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig())
            .args(&args)
            .output();
    }
}

/// A finished command's exit code and output.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<std::process::Output> for Run {
    fn from(out: std::process::Output) -> Self {
        Self {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Run {
    pub fn assert_ok(&self) -> &Self {
        assert_eq!(self.code, Some(0), "expected success:\n{self:#?}");
        self
    }

    /// Stdout as the one JSON document `-o json` prints.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{self:#?}"))
    }
}

pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Polls `check` every 100 ms until it holds; panics with `what` after `limit`.
/// Limits here are generous failure bounds, not performance assertions.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Eviction requests in `namespace` that the API server answered 429, from the
/// test cluster's audit log (next to its kubeconfig).
pub fn evictions_refused(namespace: &str) -> usize {
    let log = kubeconfig()
        .parent()
        .expect("cluster dir")
        .join("logs/audit.log");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| {
            e["objectRef"]["namespace"] == namespace
                && e["objectRef"]["subresource"] == "eviction"
                && e["responseStatus"]["code"] == 429
        })
        .count()
}

/// Deletes a pod with a grace period and returns when the object with that UID is gone.
pub async fn delete_and_wait(api: &Api<Pod>, name: &str, grace: u32) -> Duration {
    let uid = api.get(name).await.expect("pod").metadata.uid;
    let start = Instant::now();
    api.delete(name, &DeleteParams::default().grace_period(grace))
        .await
        .expect("delete pod");
    eventually(
        &format!("pod {name} gone"),
        Duration::from_secs(60),
        || async {
            match api.get_opt(name).await.expect("get pod") {
                None => true,
                Some(p) => p.metadata.uid != uid,
            }
        },
    )
    .await;
    start.elapsed()
}

/// A process a test started (`kordon controller`, `kordon agent`), its stderr appended
/// to target/tmp/<log>.log; killed when dropped.
pub struct Spawned(std::process::Child);

impl Spawned {
    pub fn new(command: &mut Command, log: &str) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(format!("{}/{log}.log", env!("CARGO_TARGET_TMPDIR")))
            .map(std::process::Stdio::from)
            .unwrap_or_else(|_| std::process::Stdio::null());
        let child = command
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start a process");
        Self(child)
    }

    /// `kill -9`, as a crash would.
    pub fn kill(&mut self) -> std::io::Result<()> {
        self.0.kill()
    }

    pub fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.0.wait()
    }

    /// SIGTERM, as the kubelet stops a pod; the exit status if it exits `within`.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.0.id()).ok()?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).ok()?;
        let start = Instant::now();
        while start.elapsed() < within {
            if let Ok(Some(status)) = self.0.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
