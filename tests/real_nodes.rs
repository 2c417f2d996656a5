//! The testbed's real nodes (issue 20): `KORDON_REAL_NODES=2 testbed/cluster up` starts
//! real-1 and real-2 beside KWOK (each its own containerd, kubelet and kube-proxy), pods
//! of the testbed's web image run Ready on them, a ClusterIP Service answers from the
//! host, the service and pod ranges stay on this machine, an image is never pulled from
//! a registry, and `down` leaves nothing.
//!
//! Runs on a cluster of its own (`/tmp/kordon-real-cluster`, port 20443), started fresh
//! and taken down at the end, one at a time under a file lock: real nodes share the
//! host's iptables, so only one cluster at a time may have them. Needs root, like the
//! testbed's real nodes themselves.
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Namespace, Node, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kordon::api::NodeMaintenance;
use kordon::api::maintenance_plan::{MaintenancePlan, TRIGGER_LABEL};
use kordon::api::node_maintenance::{HostStepKind, StatusPhase};
use kube::api::{ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::{Value, json};
use support::watcher::{Moment, Timeline, at, bound, gone, leaving};
use support::{eventually, node_ready, pod_ready};

const DIR: &str = "/tmp/kordon-real-cluster";
const PORT: &str = "20443";
const REAL_NODES: usize = 2;
const NS: &str = "real-nodes";

fn testbed(args: &[&str]) -> Command {
    let mut cmd = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("testbed/cluster"));
    cmd.args(args)
        .env("KORDON_CLUSTER_DIR", DIR)
        .env("KORDON_CLUSTER_PORT", PORT)
        .env("KORDON_REAL_NODES", REAL_NODES.to_string());
    cmd
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run command");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The real-node cluster, taken down when dropped (also when the test fails).
struct RealCluster {
    up: bool,
    _lock: std::fs::File,
}

impl RealCluster {
    fn up() -> Self {
        let lock = std::fs::File::create(format!("{DIR}.turn")).expect("real cluster lock");
        lock.lock().expect("lock the real-node cluster");
        run(&mut testbed(&["down"]));
        let started = Instant::now();
        run(&mut testbed(&["up"]));
        eprintln!("real nodes: cluster up in {:?}", started.elapsed());
        Self {
            up: true,
            _lock: lock,
        }
    }

    fn down(&mut self) {
        let started = Instant::now();
        run(&mut testbed(&["down"]));
        self.up = false;
        eprintln!("real nodes: cluster down in {:?}", started.elapsed());
    }

    async fn client(&self) -> Client {
        let kubeconfig = Kubeconfig::read_from(Path::new(DIR).join("admin.kubeconfig"))
            .expect("read the real cluster's kubeconfig");
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("kubeconfig is valid");
        Client::try_from(config).expect("client")
    }
}

impl Drop for RealCluster {
    fn drop(&mut self) {
        if self.up {
            let _ = testbed(&["down"]).output();
        }
    }
}

/// `testbed/cluster images`: NAME=REFERENCE lines.
fn image(name: &str) -> String {
    let out = run(&mut testbed(&["images"]));
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("testbed/cluster images names no {name}:\n{out}"))
        .to_string()
}

/// The status code of `GET /` over HTTP/1.0, everything bounded by timeouts.
fn http_get(ip: &str, port: u16) -> std::io::Result<u16> {
    let addr = SocketAddr::new(ip.parse().expect("an IP address"), port);
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {response:?}")))
}

/// The device `ip route get ADDRESS` sends to.
fn route_dev(address: &str) -> String {
    let out = run(Command::new("ip").args(["route", "get", address]));
    let words: Vec<&str> = out.split_whitespace().collect();
    words
        .iter()
        .position(|w| *w == "dev")
        .and_then(|i| words.get(i + 1))
        .unwrap_or_else(|| panic!("no device in `ip route get {address}`: {out}"))
        .to_string()
}

fn pod_ip(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap_or_default()
}

/// Processes of the real nodes (and reboots of them) still alive (zombies have an
/// empty command line).
fn node_processes() -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
        let name = String::from_utf8_lossy(argv0);
        let base = name.rsplit('/').next().unwrap_or_default();
        if matches!(
            base,
            "containerd" | "kubelet" | "kube-proxy" | "containerd-shim-runc-v2"
        ) || String::from_utf8_lossy(&cmdline).contains(DIR)
            || String::from_utf8_lossy(&cmdline).contains("reboot-detached")
        {
            found.push(String::from_utf8_lossy(&cmdline).replace('\0', " "));
        }
    }
    found
}

/// What `testbed/cluster down` must leave of the real nodes: no process, iptables
/// chain, link, network namespace, mount, route, cgroup or state directory.
fn assert_nothing_left() {
    let left = node_processes();
    assert!(left.is_empty(), "processes left after down: {left:#?}");
    for table in ["nat", "filter", "mangle"] {
        let rules = run(Command::new("iptables-save").args(["-t", table]));
        let chains: Vec<&str> = rules
            .lines()
            .filter(|l| l.contains("KUBE-") || l.contains("CNI-") || l.contains("KORDON-"))
            .collect();
        assert!(chains.is_empty(), "{table} table after down: {chains:#?}");
    }
    let links = run(Command::new("ip").args(["-o", "link", "show"]));
    let kordon_links: Vec<&str> = links.lines().filter(|l| l.contains("kordon-")).collect();
    assert!(
        kordon_links.is_empty(),
        "links after down: {kordon_links:#?}"
    );
    let netns = run(Command::new("ip").args(["netns", "list"]));
    assert!(
        !netns.contains("cni-"),
        "CNI network namespaces after down: {netns}"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let ours: Vec<&str> = mounts.lines().filter(|l| l.contains(DIR)).collect();
    assert!(ours.is_empty(), "mounts after down: {ours:#?}");
    let routes = run(Command::new("ip").args(["route", "show"]));
    assert!(!routes.contains("kordon-"), "routes after down: {routes}");
    let cgroups: Vec<String> = std::fs::read_dir("/sys/fs/cgroup")
        .expect("read /sys/fs/cgroup")
        .flatten()
        .flat_map(|hierarchy| std::fs::read_dir(hierarchy.path()).into_iter().flatten())
        .flatten()
        .map(|e| e.path().display().to_string())
        .filter(|p| p.contains("/kordon-real-") || p.ends_with("/k8s.io"))
        .collect();
    assert!(cgroups.is_empty(), "cgroups after down: {cgroups:#?}");
    assert!(!Path::new(DIR).exists(), "{DIR} after down");
}

/// Creates namespace `name` and waits until the controllers made its default service
/// account (pods are refused until then).
async fn create_namespace(client: &Client, name: &str) {
    let ns: Namespace =
        serde_json::from_value(json!({ "metadata": { "name": name } })).expect("namespace");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
    let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), name);
    eventually(
        "default service account",
        Duration::from_secs(30),
        || async { sa.get_opt("default").await.ok().flatten().is_some() },
    )
    .await;
}

/// One web pod per real node at most (skew 1); with `honor_taints` a cordoned or
/// tainted node does not count, so its pods' replacements may all go to the other.
fn spread(honor_taints: bool) -> Value {
    let mut spread = json!({
        "maxSkew": 1,
        "topologyKey": "kubernetes.io/hostname",
        "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": { "matchLabels": { "app": "web" } }
    });
    if honor_taints {
        spread["nodeTaintsPolicy"] = json!("Honor");
    }
    spread
}

/// Sets every field of `extra` (an object) in `target`.
fn merge(target: &mut Value, extra: Value) {
    let Value::Object(fields) = extra else {
        panic!("not an object: {extra}");
    };
    for (key, value) in fields {
        target[key] = value;
    }
}

/// The pod template of the web image labelled `app: web` on the real nodes: HTTP on
/// 8080 behind a readiness probe. `pod` and `container` set fields of its pod spec
/// (spread across the real nodes unless it says otherwise) and of its container.
fn web_template(pod: Value, container: Value) -> Value {
    let mut web = json!({
        "name": "web",
        "image": image("web"),
        "imagePullPolicy": "Never",
        "ports": [{ "containerPort": 8080 }],
        "readinessProbe": {
            "httpGet": { "path": "/", "port": 8080 },
            "periodSeconds": 1
        }
    });
    merge(&mut web, container);
    let mut spec = json!({
        "nodeSelector": { "kordon.test/real": "true" },
        "topologySpreadConstraints": [spread(false)],
        "containers": [web]
    });
    merge(&mut spec, pod);
    json!({ "metadata": { "labels": { "app": "web" } }, "spec": spec })
}

/// `template` (of [`web_template`]) labelled `app: APP` instead.
fn labelled(mut template: Value, app: &str) -> Value {
    template["metadata"]["labels"]["app"] = json!(app);
    template
}

/// Creates the DaemonSet `app` in `ns`: a pod of [`web_template`] labelled `app: APP`
/// on each real node.
async fn create_daemonset(client: &Client, ns: &str, app: &str) {
    let template = web_template(json!({ "topologySpreadConstraints": [] }), json!({}));
    let daemonset: DaemonSet = serde_json::from_value(json!({
        "metadata": { "name": app },
        "spec": {
            "selector": { "matchLabels": { "app": app } },
            "template": labelled(template, app)
        }
    }))
    .expect("daemonset");
    Api::<DaemonSet>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &daemonset)
        .await
        .expect("create daemonset");
}

/// Creates the Deployment `web` in `ns`: `replicas` pods of [`web_template`].
async fn create_web(client: &Client, ns: &str, replicas: i32, pod: Value, container: Value) {
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "web" },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": "web" } },
            "template": web_template(pod, container)
        }
    }))
    .expect("deployment");
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create deployment");
}

/// `replicas` web pods spread over the real nodes, each of which keeps serving for 3 s
/// after SIGTERM, as a well-behaved server does, while its endpoint is withdrawn.
async fn create_well_behaved_web(client: &Client, ns: &str, replicas: i32) {
    create_web(
        client,
        ns,
        replicas,
        json!({
            "terminationGracePeriodSeconds": 10,
            "topologySpreadConstraints": [spread(true)]
        }),
        json!({ "env": [{ "name": "STOP_DELAY", "value": "3" }] }),
    )
    .await;
}

/// Creates the ClusterIP Service `web` (port 80 to the web pods' 8080) in `ns` and
/// returns its ClusterIP.
async fn create_service(client: &Client, ns: &str) -> String {
    let service: Service = serde_json::from_value(json!({
        "metadata": { "name": "web" },
        "spec": { "selector": { "app": "web" }, "ports": [{ "port": 80, "targetPort": 8080 }] }
    }))
    .expect("service");
    Api::<Service>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &service)
        .await
        .expect("create service")
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("a ClusterIP")
}

/// Runs the kordon binary on the real cluster, with the testbed's environment (so a
/// maintenance command can call `testbed/cluster`).
fn kordon(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kordon"))
        .arg("--kubeconfig")
        .arg(Path::new(DIR).join("admin.kubeconfig"))
        .args(args)
        .env("KORDON_CLUSTER_DIR", DIR)
        .env("KORDON_CLUSTER_PORT", PORT)
        .env("KORDON_REAL_NODES", REAL_NODES.to_string())
        .output()
        .expect("run kordon")
}

/// Waits until `count` pods match `selector`, all Ready, and returns them.
async fn wait_ready(pods: &Api<Pod>, selector: &str, count: usize) -> Vec<Pod> {
    let params = ListParams::default().labels(selector);
    eventually(
        &format!("{count} Ready pods {selector}"),
        Duration::from_secs(120),
        || async {
            let list = pods.list(&params).await.expect("list pods").items;
            list.len() == count && list.iter().all(pod_ready)
        },
    )
    .await;
    pods.list(&params).await.expect("list pods").items
}

fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref())
}

fn shown(out: &std::process::Output) -> String {
    format!(
        "exit {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn real_nodes_run_pods_behind_a_cluster_ip_keep_traffic_local_and_leave_nothing_behind() {
    let mut cluster = RealCluster::up();
    let client = cluster.client().await;

    // Both real nodes Ready, run by containerd, with the CNI's pod range as podCIDR,
    // and not KWOK's; their pods in their own cgroup roots.
    let nodes: Api<Node> = Api::all(client.clone());
    let real = ListParams::default().labels("kordon.test/real=true");
    let listed = nodes.list(&real).await.expect("list real nodes").items;
    let mut names: Vec<String> = listed
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    names.sort();
    assert_eq!(names, ["real-1", "real-2"], "the real nodes");
    for node in &listed {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        assert!(node_ready(node), "{name} is Ready");
        let runtime = node
            .status
            .as_ref()
            .and_then(|s| s.node_info.as_ref())
            .map(|i| i.container_runtime_version.clone())
            .unwrap_or_default();
        assert!(
            runtime.starts_with("containerd://"),
            "{name} runs containerd, not {runtime:?}"
        );
        let n: u32 = name["real-".len()..].parse().expect("real-N");
        let cidr = node.spec.as_ref().and_then(|s| s.pod_cidr.clone());
        assert_eq!(
            cidr,
            Some(format!("10.244.{}.0/24", 100 + n)),
            "{name} podCIDR"
        );
        let annotations = node.metadata.annotations.clone().unwrap_or_default();
        assert!(
            !annotations.contains_key("kwok.x-k8s.io/node"),
            "KWOK must leave {name} alone"
        );
    }

    // The web image, one replica on each real node, Ready behind its readiness probe.
    create_namespace(&client, NS).await;
    create_web(&client, NS, 2, json!({}), json!({})).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let running = wait_ready(&pods, "app=web", 2).await;
    let mut on: Vec<String> = running
        .iter()
        .filter_map(|p| p.spec.as_ref().and_then(|s| s.node_name.clone()))
        .collect();
    on.sort();
    assert_eq!(on, ["real-1", "real-2"], "one web pod on each real node");
    for pod in &running {
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let n = node.as_deref().and_then(|n| n.strip_prefix("real-"));
        let ip = pod_ip(pod);
        assert!(
            ip.starts_with(&format!(
                "10.244.{}.",
                100 + n.unwrap().parse::<u32>().unwrap()
            )),
            "pod IP {ip} is in its node's pod CIDR"
        );
    }

    for n in 1..=REAL_NODES {
        let root = format!("/sys/fs/cgroup/memory/kordon-real-{n}/kubepods");
        assert!(
            Path::new(&root).is_dir(),
            "{root}: real-{n}'s pods' cgroups"
        );
    }

    // A ClusterIP Service in front of them answers HTTP 200 from the host.
    let service: Service = serde_json::from_value(json!({
        "metadata": { "name": "web" },
        "spec": {
            "selector": { "app": "web" },
            "ports": [{ "port": 80, "targetPort": 8080 }]
        }
    }))
    .expect("service");
    let service = Api::<Service>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &service)
        .await
        .expect("create service");
    let cluster_ip = service
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("a ClusterIP");
    let ip = cluster_ip.clone();
    let answered = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        loop {
            match http_get(&ip, 80) {
                Ok(200) => return Ok(started.elapsed()),
                other if started.elapsed() > Duration::from_secs(60) => return Err(other),
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    })
    .await
    .expect("join");
    let after = answered.unwrap_or_else(|last| {
        panic!("the Service {cluster_ip} never answered 200 from the host; last: {last:?}")
    });
    eprintln!("real nodes: {cluster_ip}:80 answered 200 after {after:?}");
    for _ in 0..10 {
        let code = tokio::task::spawn_blocking({
            let ip = cluster_ip.clone();
            move || http_get(&ip, 80)
        })
        .await
        .expect("join");
        assert_eq!(code.ok(), Some(200), "every request through {cluster_ip}");
    }

    // Nothing leaves the machine: a ClusterIP nobody serves and a pod IP no node holds
    // are routed to the sink bridge.
    let services = Api::<Service>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("list services")
        .items;
    let unused_service_ip = (1..=250)
        .map(|i| format!("10.96.255.{i}"))
        .find(|ip| {
            !services
                .iter()
                .any(|s| s.spec.as_ref().and_then(|s| s.cluster_ip.as_ref()) == Some(ip))
        })
        .expect("a free ClusterIP");
    assert_eq!(
        route_dev(&unused_service_ip),
        "kordon-sink",
        "{unused_service_ip}"
    );
    assert_eq!(route_dev("10.244.250.7"), "kordon-sink", "an unused pod IP");
    assert_eq!(route_dev("10.0.0.1"), "kordon-sink", "KWOK's node IP");

    // An image from a registry is never fetched: the pull goes to a proxy on a loopback
    // port where nothing listens.
    let pull: Pod = serde_json::from_value(json!({
        "metadata": { "name": "pull" },
        "spec": {
            "nodeName": "real-1",
            "containers": [{ "name": "pull", "image": "docker.io/library/busybox:1.36" }]
        }
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pull)
        .await
        .expect("create pod");
    let events: Api<Event> = Api::namespaced(client.clone(), NS);
    let about_pull = ListParams::default().fields("involvedObject.name=pull");
    eventually(
        "the pull refused on loopback",
        Duration::from_secs(60),
        || async {
            let list = events.list(&about_pull).await.expect("list events").items;
            list.iter().any(|e| {
                e.message
                    .as_deref()
                    .is_some_and(|m| m.contains("proxyconnect tcp: dial tcp 127.0.0.1:9"))
            })
        },
    )
    .await;

    // `down` leaves no process, iptables chain, bridge or mount behind.
    cluster.down();
    assert_nothing_left();
}

/// The article's example on real nodes, measured where users feel it: four web pods, two
/// on each real node, no PodDisruptionBudget, a ClusterIP Service in front, and a probe
/// sending 200 requests a second through it while `kordon maintain real-2` cordons,
/// drains, runs its step and uncordons. Not one request fails, and the pods really
/// moved: new containers on real-1.
#[tokio::test(flavor = "multi_thread")]
async fn kordon_maintain_on_real_nodes_loses_no_request() {
    let cluster = RealCluster::up();
    let client = cluster.client().await;
    let ns = "article";
    create_namespace(&client, ns).await;
    create_well_behaved_web(&client, ns, 4).await;
    let cluster_ip = create_service(&client, ns).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let web = ListParams::default().labels("app=web");
    let before = wait_ready(&pods, "app=web", 4).await;
    let on_real_2: Vec<&Pod> = before
        .iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("real-2"))
        .collect();
    assert_eq!(on_real_2.len(), 2, "two web pods on each real node");
    let containers_before: Vec<String> = before.iter().flat_map(container_ids).collect();

    // The probe starts once every endpoint answers through the ClusterIP (kube-proxy
    // has synced): 40 answers in a row.
    let ip = cluster_ip.clone();
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut in_a_row = 0;
        while in_a_row < 40 {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{ip} never answered 40 times in a row"
            );
            in_a_row = if http_get(&ip, 80).ok() == Some(200) {
                in_a_row + 1
            } else {
                0
            };
        }
    })
    .await
    .expect("join");
    let probe = support::traffic::Probe::start(
        &format!("http://{cluster_ip}/"),
        200,
        Duration::from_secs(180),
        Duration::from_secs(2),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    let maintain = tokio::task::spawn_blocking(|| {
        kordon(&["maintain", "real-2", "--timeout", "120s", "--", "true"])
    })
    .await
    .expect("join");
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report = probe.finish();
    eprintln!(
        "real nodes: kordon maintain real-2 in {took:?}; requests: {} sent, {} failed (longest run {}), p50 {:?}, p99 {:?}",
        report.sent,
        report.failures.len(),
        report.longest_run,
        report.p50,
        report.p99
    );
    assert!(
        maintain.status.success(),
        "kordon maintain:\n{}{}",
        String::from_utf8_lossy(&maintain.stdout),
        String::from_utf8_lossy(&maintain.stderr)
    );
    assert!(
        report.sent >= 1000,
        "the probe ran: {} requests",
        report.sent
    );
    assert!(
        !shown(&maintain).contains("still routed"),
        "a pod that serves 3 s past SIGTERM is not named as stopping early:\n{}",
        shown(&maintain)
    );
    assert!(
        report.failures.is_empty(),
        "{} of {} requests failed, the first: {:#?}",
        report.failures.len(),
        report.sent,
        &report.failures[..report.failures.len().min(10)]
    );

    // The pods really moved: real-2's two are gone, and new containers run on real-1.
    let after = pods.list(&web).await.expect("list pods").items;
    assert!(after.iter().all(pod_ready) && after.len() == 4, "4 Ready");
    assert!(
        after
            .iter()
            .all(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("real-1")),
        "every web pod runs on real-1 now"
    );
    let moved: Vec<String> = after
        .iter()
        .flat_map(container_ids)
        .filter(|c| !containers_before.contains(c))
        .collect();
    assert_eq!(moved.len(), 2, "two new containers: {moved:?}");
    let nodes: Api<Node> = Api::all(client);
    let real_2 = nodes.get("real-2").await.expect("real-2");
    assert!(
        node_ready(&real_2) && real_2.spec.and_then(|s| s.unschedulable) != Some(true),
        "real-2 is back: Ready and schedulable"
    );
}

fn container_ids(pod: &Pod) -> Vec<String> {
    pod.status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .filter_map(|c| c.container_id.clone())
        .collect()
}

/// What a watch of the test's own saw of one pod leaving: when it was marked for
/// deletion (with what grace period, and the deletionTimestamp the API server set
/// then: when that grace ends), the pod as last seen (its containers' final states),
/// and when it was gone.
struct Departure {
    marked: Instant,
    marked_at: jiff::Timestamp,
    grace: Option<i64>,
    grace_ends: Option<jiff::Timestamp>,
    last: Pod,
    gone: Instant,
    gone_at: jiff::Timestamp,
}

/// Follows pod `name` (by its UID) with a watch until it is gone. A relist that no
/// longer shows it (after a 410) counts as gone too.
async fn follow_departure(pods: Api<Pod>, name: String, uid: Option<String>) -> Departure {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let follow = async {
        let mut events = std::pin::pin!(watcher(pods, config).default_backoff());
        let mut marked = None;
        let mut last = None;
        // Whether the (re)list under way showed the pod.
        let mut listed = false;
        while let Some(event) = events.next().await {
            let Ok(event) = event else { continue };
            let gone = match event {
                watcher::Event::Init => {
                    listed = false;
                    false
                }
                watcher::Event::InitApply(p) | watcher::Event::Apply(p)
                    if p.metadata.uid == uid =>
                {
                    listed = true;
                    if marked.is_none() && p.metadata.deletion_timestamp.is_some() {
                        marked = Some((
                            Instant::now(),
                            jiff::Timestamp::now(),
                            p.metadata.deletion_grace_period_seconds,
                            p.metadata.deletion_timestamp.as_ref().map(|t| t.0),
                        ));
                    }
                    last = Some(p);
                    false
                }
                watcher::Event::Delete(p) if p.metadata.uid == uid => {
                    last = Some(p);
                    true
                }
                watcher::Event::InitDone => !listed,
                _ => false,
            };
            if gone {
                let (gone, gone_at) = (Instant::now(), jiff::Timestamp::now());
                let (marked, marked_at, grace, grace_ends) = marked.unwrap_or_else(|| {
                    panic!("pod {name} went without being seen marked for deletion")
                });
                return Departure {
                    marked,
                    marked_at,
                    grace,
                    grace_ends,
                    last: last.unwrap_or_else(|| panic!("pod {name} was never seen")),
                    gone,
                    gone_at,
                };
            }
        }
        panic!("the watch of pod {name} ended")
    };
    tokio::time::timeout(Duration::from_secs(180), follow)
        .await
        .unwrap_or_else(|_| panic!("pod {name} still there after 3 minutes"))
}

/// The pod and container fields of a `preStop` hook that writes the time (whole
/// seconds: busybox's `date` has no `%N`) to `marks/POD_NAME` on the host, through a
/// hostPath volume, and then sleeps `seconds`. Merge other fields into both; the
/// container's `env` is a list to push to.
fn pre_stop_mark(marks: &Path, seconds: u32) -> (Value, Value) {
    std::fs::create_dir_all(marks).expect("create the marks directory");
    let pod = json!({
        "volumes": [{
            "name": "marks",
            "hostPath": { "path": marks.display().to_string(), "type": "DirectoryOrCreate" }
        }]
    });
    let container = json!({
        "env": [{
            "name": "POD_NAME",
            "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } }
        }],
        "volumeMounts": [{ "name": "marks", "mountPath": "/marks" }],
        "lifecycle": {
            "preStop": {
                "exec": {
                    "command": ["sh", "-c", format!("date +%s > /marks/$POD_NAME; sleep {seconds}")]
                }
            }
        }
    });
    (pod, container)
}

/// The time (in seconds) the `preStop` hook of [`pre_stop_mark`] wrote for pod `name`.
fn pre_stop_marked(marks: &Path, name: &str) -> i64 {
    let mark = std::fs::read_to_string(marks.join(name))
        .unwrap_or_else(|e| panic!("the preStop hook's mark {name} on the host: {e}"));
    mark.trim().parse().expect("the mark is a time in seconds")
}

/// A real container's `preStop` hook runs and its grace period holds when kordon evicts
/// it: the hook writes the time to a directory of the host (a hostPath volume) and then
/// sleeps 3 s, and the pod is gone only after it.
#[tokio::test(flavor = "multi_thread")]
async fn eviction_honours_the_grace_period_and_pre_stop_hook_of_a_real_container() {
    let cluster = RealCluster::up();
    let client = cluster.client().await;
    let ns = "prestop";
    create_namespace(&client, ns).await;
    let marks = Path::new(DIR).join("marks");
    let (mut pod, container) = pre_stop_mark(&marks, 3);
    merge(
        &mut pod,
        json!({
            "terminationGracePeriodSeconds": 10,
            "topologySpreadConstraints": [spread(true)]
        }),
    );
    create_web(&client, ns, 2, pod, container).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let before = wait_ready(&pods, "app=web", 2).await;
    let evicted = before
        .iter()
        .find(|p| node_of(p) == Some("real-2"))
        .expect("a web pod on real-2");
    let name = evicted.metadata.name.clone().expect("pod name");
    let departure = tokio::spawn(follow_departure(
        pods.clone(),
        name.clone(),
        evicted.metadata.uid.clone(),
    ));

    let started = Instant::now();
    let drain = tokio::task::spawn_blocking(|| kordon(&["drain", "real-2", "--timeout", "120s"]))
        .await
        .expect("join");
    let took = started.elapsed();
    let ended_at = jiff::Timestamp::now();
    assert_eq!(
        drain.status.code(),
        Some(0),
        "kordon drain:\n{}",
        shown(&drain)
    );
    let departure = departure.await.expect("join");
    let stopping = departure.gone - departure.marked;
    let mark = pre_stop_marked(&marks, &name);
    eprintln!(
        "real nodes: kordon drain real-2 in {took:?}; {name} marked for deletion {:?} after the drain began, gone {stopping:?} later (grace {:?}); hook ran at {mark}, pod gone at {}, drain ended at {ended_at}",
        departure.marked - started,
        departure.grace,
        departure.gone_at
    );
    assert_eq!(
        departure.grace,
        Some(10),
        "the eviction keeps the pod's own grace period"
    );
    assert!(
        stopping >= Duration::from_secs(3),
        "the pod took {stopping:?} to go, less than its preStop hook's 3 s"
    );
    assert!(
        stopping < Duration::from_secs(10),
        "the pod took {stopping:?}: its container should exit on SIGTERM after the hook, well within the grace period"
    );
    // The hook ran on the node before the pod was gone and before the drain ended,
    // and the pod stayed at least its 3 s after it (the mark is in whole seconds, rounded down).
    let gone_at = departure.gone_at.as_millisecond() as f64 / 1000.0;
    assert!(
        gone_at - mark as f64 >= 3.0,
        "gone at {gone_at}, only {} s after the hook's mark {mark}",
        gone_at - mark as f64
    );
    assert!(
        ended_at.as_second() >= mark + 3,
        "the drain ended at {ended_at}, less than 3 s after the hook's mark {mark}"
    );

    // The replacement runs on real-1.
    let after = wait_ready(&pods, "app=web", 2).await;
    assert!(
        after.iter().all(|p| node_of(p) == Some("real-1")),
        "both web pods on real-1 after the drain"
    );
}

/// A deadline that keeps grace, on a real node: web's pod on real-2 is held by a
/// PodDisruptionBudget that allows nothing (`minAvailable: 2` over both web pods and a
/// pod on real-1 that never becomes Ready), and its container takes 9 s of its 12 s
/// grace to stop (a 3 s `preStop` hook, then 6 s of serving past SIGTERM before it
/// exits 0). `drain --deadline 30s --delete-past-budget` deletes it at the deadline less
/// its grace and a second, not at the deadline: a watch of the test's own sees it
/// marked with its whole 12 s grace still before the deadline, the hook ran, the
/// container exited by itself (0, not the 137 of a SIGKILL at the grace's end), and the
/// pod was gone before the deadline.
#[tokio::test(flavor = "multi_thread")]
async fn past_its_budget_a_real_pod_is_deleted_early_enough_to_stop_within_its_grace_by_the_deadline()
 {
    const GRACE: i64 = 12;
    const DEADLINE: i64 = 30;
    let cluster = RealCluster::up();
    let client = cluster.client().await;
    let ns = "deadline";
    create_namespace(&client, ns).await;
    let marks = Path::new(DIR).join("marks");
    let (mut pod, mut container) = pre_stop_mark(&marks, 3);
    merge(
        &mut pod,
        json!({
            "terminationGracePeriodSeconds": GRACE,
            "topologySpreadConstraints": [spread(true)]
        }),
    );
    container["env"]
        .as_array_mut()
        .expect("env")
        .push(json!({ "name": "STOP_DELAY", "value": "6" }));
    create_web(&client, ns, 2, pod, container).await;
    // A pod on real-1 whose readiness probe asks a port nothing serves.
    let warming = web_template(
        json!({
            "nodeSelector": { "kubernetes.io/hostname": "real-1" },
            "topologySpreadConstraints": []
        }),
        json!({ "readinessProbe": { "httpGet": { "path": "/", "port": 8081 }, "periodSeconds": 1 } }),
    );
    let mut warming = labelled(warming, "warming");
    warming["metadata"]["name"] = json!("warming");
    let warming: Pod = serde_json::from_value(warming).expect("pod");
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    pods.create(&PostParams::default(), &warming)
        .await
        .expect("create the warming pod");
    let pdb: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": { "name": "web" },
        "spec": {
            "minAvailable": 2,
            "selector": { "matchExpressions": [
                { "key": "app", "operator": "In", "values": ["web", "warming"] }
            ] }
        }
    }))
    .expect("budget");
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), ns);
    budgets
        .create(&PostParams::default(), &pdb)
        .await
        .expect("create the budget");
    let before = wait_ready(&pods, "app=web", 2).await;
    eventually(
        "the budget counting 3 pods, 2 healthy, allowing nothing",
        Duration::from_secs(60),
        || async {
            let status = budgets.get("web").await.ok().and_then(|b| b.status);
            status.is_some_and(|s| {
                s.expected_pods == 3 && s.current_healthy == 2 && s.disruptions_allowed == 0
            })
        },
    )
    .await;
    let held = before
        .iter()
        .find(|p| node_of(p) == Some("real-2"))
        .expect("a web pod on real-2");
    let name = held.metadata.name.clone().expect("pod name");
    let departure = tokio::spawn(follow_departure(
        pods.clone(),
        name.clone(),
        held.metadata.uid.clone(),
    ));

    let rule = format!("{ns}:app=web");
    let started_at = jiff::Timestamp::now();
    let started = Instant::now();
    let drain = tokio::task::spawn_blocking(move || {
        kordon(&[
            "drain",
            "real-2",
            "--deadline",
            &format!("{DEADLINE}s"),
            "--delete-past-budget",
            &rule,
            "--timeout",
            "90s",
            "-o",
            "json",
        ])
    })
    .await
    .expect("join");
    let took = started.elapsed();
    let ended_at = jiff::Timestamp::now();
    assert_eq!(
        drain.status.code(),
        Some(0),
        "kordon drain:\n{}",
        shown(&drain)
    );
    let reports: Value = serde_json::from_slice(&drain.stdout).expect("the drain's JSON report");
    let deleted = reports[0]["deletedPastBudget"]
        .as_array()
        .expect("deletedPastBudget");
    assert_eq!(deleted.len(), 1, "{reports:#}");
    assert_eq!(deleted[0]["pod"], format!("{ns}/{name}"), "{reports:#}");
    assert_eq!(deleted[0]["graceSeconds"], json!(GRACE), "{reports:#}");
    let deadline: jiff::Timestamp = deleted[0]["deadline"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .expect("the deadline as RFC 3339");
    let secs = jiff::SignedDuration::from_secs;
    assert!(
        deadline >= started_at + secs(DEADLINE) && deadline <= ended_at + secs(DEADLINE),
        "deadline {deadline} for a drain from {started_at} to {ended_at}"
    );

    let departure = departure.await.expect("join");
    let mark = pre_stop_marked(&marks, &name);
    let last = &departure.last;
    let terminated = last
        .status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .find_map(|c| c.state.as_ref().and_then(|s| s.terminated.clone()));
    let ends = departure.grace_ends;
    let stopping = departure.gone - departure.marked;
    let spare = deadline.duration_since(departure.marked_at);
    eprintln!(
        "real nodes: kordon drain real-2 --deadline {DEADLINE}s in {took:?}; {name} seen marked for deletion at {} ({:.3} s into the drain, {:.3} s before the deadline {deadline}) with grace {:?}, its grace ending {ends:?}; preStop hook at {mark}; gone {stopping:?} later at {}; its container's end: {terminated:?}",
        departure.marked_at,
        departure.marked_at.duration_since(started_at).as_secs_f64(),
        spare.as_secs_f64(),
        departure.grace,
        departure.gone_at
    );

    // Deleted with its whole grace, at the ladder's moment (its deadline less its grace
    // and a second, counted from the drain's start, which comes after `started_at`),
    // and early enough that the whole grace, counted from when this watch saw it, ends
    // by the deadline; the API server's end of the grace too.
    assert_eq!(departure.grace, Some(GRACE), "deleted with its own grace");
    assert!(
        departure.marked_at >= started_at + secs(DEADLINE - GRACE - 1),
        "deleted at {}, before the deadline less its grace and a second (drain from {started_at})",
        departure.marked_at
    );
    assert!(
        spare >= secs(GRACE),
        "seen deleted only {spare:?} before the deadline: its {GRACE} s grace does not fit"
    );
    let ends = ends.expect("its deletionTimestamp");
    assert!(
        ends <= deadline,
        "its grace ends at {ends}, after the deadline {deadline}"
    );

    // The real container ran its shutdown: the hook ran once it was deleted, the pod
    // took the hook's 3 s and the server's 6 s to go, the container exited by itself
    // (0; a SIGKILL at the end of the grace is 137), and all before the deadline.
    assert!(
        mark >= departure.marked_at.as_second() - 1,
        "the hook's mark {mark} comes before the deletion at {}",
        departure.marked_at
    );
    assert!(
        stopping >= Duration::from_secs(9),
        "the pod took {stopping:?} to go, less than its 3 s hook and 6 s stop"
    );
    let terminated = terminated.expect("the watch saw its container terminated");
    assert_eq!(
        (terminated.exit_code, terminated.reason.as_deref()),
        (0, Some("Completed")),
        "{terminated:?}"
    );
    assert!(
        departure.gone_at <= deadline,
        "gone at {}, after the deadline {deadline}",
        departure.gone_at
    );
    if let Some(finished) = terminated.finished_at {
        assert!(
            finished.0 <= deadline,
            "its container finished at {finished:?}, after the deadline {deadline}"
        );
    }
}

/// A web server that exits the moment SIGTERM comes, behind a Service: kube-proxy still
/// routes to it until it has synced, so requests fail, and the pod is not kordon's to
/// fix. The drain names it (the Service, how soon it stopped); a pod that serves on
/// past SIGTERM is not named (asserted in `kordon_maintain_on_real_nodes_loses_no_request`).
#[tokio::test(flavor = "multi_thread")]
async fn a_pod_that_exits_on_sigterm_while_its_service_routes_to_it_is_named() {
    let cluster = RealCluster::up();
    let client = cluster.client().await;
    let ns = "abrupt";
    create_namespace(&client, ns).await;
    create_web(
        &client,
        ns,
        2,
        json!({ "topologySpreadConstraints": [spread(true)] }),
        json!({ "env": [{ "name": "STOP_DELAY", "value": "0" }] }),
    )
    .await;
    create_service(&client, ns).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let before = wait_ready(&pods, "app=web", 2).await;
    let abrupt = before
        .iter()
        .find(|p| node_of(p) == Some("real-2"))
        .and_then(|p| p.metadata.name.clone())
        .expect("a web pod on real-2");

    let drain = tokio::task::spawn_blocking(|| {
        kordon(&["drain", "real-2", "--timeout", "120s", "-o", "json"])
    })
    .await
    .expect("join");
    assert_eq!(
        drain.status.code(),
        Some(0),
        "kordon drain:\n{}",
        shown(&drain)
    );
    let reports: Value = serde_json::from_slice(&drain.stdout).expect("the drain's JSON report");
    let report = &reports[0];
    let stopped = report["stoppedEarly"].as_array().expect("stoppedEarly");
    assert_eq!(stopped.len(), 1, "{report:#}");
    assert_eq!(stopped[0]["pod"], format!("{ns}/{abrupt}"));
    assert_eq!(stopped[0]["services"], json!(["web"]));
    let after = stopped[0]["afterSeconds"].as_f64().expect("afterSeconds");
    assert!(after < 2.0, "stopped {after} s after its eviction");
    // Its replacement counted only once the Service listed it: the workload is back
    // with both pods on real-1.
    let after = wait_ready(&pods, "app=web", 2).await;
    assert!(after.iter().all(|p| node_of(p) == Some("real-1")));
}

/// A DaemonSet's pod on a real node: `drain` without `--ignore-daemonsets` is refused
/// before anything changes; with it the node is cordoned and the pod keeps running in
/// the same container.
#[tokio::test(flavor = "multi_thread")]
async fn a_daemonset_pod_on_a_real_node_is_left_running_with_ignore_daemonsets() {
    let cluster = RealCluster::up();
    let client = cluster.client().await;
    let ns = "daemons";
    create_namespace(&client, ns).await;
    create_daemonset(&client, ns, "web").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let before = wait_ready(&pods, "app=web", 2).await;
    let on_real_2 = before
        .iter()
        .find(|p| node_of(p) == Some("real-2"))
        .expect("the DaemonSet's pod on real-2");
    let name = on_real_2.metadata.name.clone().expect("pod name");
    let uid = on_real_2.metadata.uid.clone();
    let containers = container_ids(on_real_2);
    assert_eq!(containers.len(), 1, "one container: {containers:?}");
    let nodes: Api<Node> = Api::all(client.clone());
    let cordoned = |node: &Node| node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true);

    // Without the flag: refused, exit 3, nothing changed.
    let refused = tokio::task::spawn_blocking(|| kordon(&["drain", "real-2", "--timeout", "60s"]))
        .await
        .expect("join");
    eprintln!(
        "real nodes: kordon drain real-2 without the flag:\n{}",
        shown(&refused)
    );
    assert_eq!(
        refused.status.code(),
        Some(3),
        "refused:\n{}",
        shown(&refused)
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("--ignore-daemonsets"),
        "the refusal names the flag:\n{}",
        shown(&refused)
    );
    let real_2 = nodes.get("real-2").await.expect("real-2");
    assert!(
        !cordoned(&real_2),
        "a refused drain leaves real-2 uncordoned"
    );
    assert!(
        !real_2
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key("kordon.dev/cordoned-at"),
        "a refused drain leaves no cordon mark"
    );

    // With the flag: drained, cordoned, the DaemonSet pod left running.
    let drained = tokio::task::spawn_blocking(|| {
        kordon(&["drain", "real-2", "--ignore-daemonsets", "--timeout", "60s"])
    })
    .await
    .expect("join");
    eprintln!(
        "real nodes: kordon drain real-2 --ignore-daemonsets:\n{}",
        shown(&drained)
    );
    assert_eq!(
        drained.status.code(),
        Some(0),
        "drain:\n{}",
        shown(&drained)
    );
    assert!(
        cordoned(&nodes.get("real-2").await.expect("real-2")),
        "real-2 is cordoned"
    );
    // Give a wrong eviction or a restart time to show.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = pods
        .get_opt(&name)
        .await
        .expect("get pod")
        .unwrap_or_else(|| panic!("the DaemonSet's pod {name} on real-2 is gone"));
    assert_eq!(after.metadata.uid, uid, "the same pod {name}");
    assert!(
        after.metadata.deletion_timestamp.is_none(),
        "{name} is not being deleted"
    );
    assert!(pod_ready(&after), "{name} is still Ready");
    assert_eq!(container_ids(&after), containers, "the same container");
    let restarts: i32 = after
        .status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .map(|c| c.restart_count)
        .sum();
    assert_eq!(restarts, 0, "its container never restarted");
    let ip = pod_ip(&after);
    let code = tokio::task::spawn_blocking(move || http_get(&ip, 8080))
        .await
        .expect("join");
    assert_eq!(code.ok(), Some(200), "{name} still serves");
}

/// `drain --evict-daemonsets` on a real node: DaemonSet `agent`'s pod on real-2 is
/// evicted only after every other pod there is gone (web's, which serves 3 s past
/// SIGTERM, so "evicted" and "gone" are seconds apart), on a node that already carries
/// `kordon.dev/draining=daemonsets:NoSchedule`, and the DaemonSet does not put it back
/// while real-2 is out; `uncordon` lifts the taint and a new agent container runs Ready
/// there again. A watch of the test's own (`Timeline`) is the judge of the order.
#[tokio::test(flavor = "multi_thread")]
async fn daemonset_pods_leave_a_real_node_last_on_a_tainted_node_and_run_again_after_uncordon() {
    const DRAINING: &str = "kordon.dev/draining";
    let cluster = RealCluster::up();
    let client = cluster.client().await;
    let ns = "daemons-last";
    create_namespace(&client, ns).await;
    create_daemonset(&client, ns, "agent").await;
    create_well_behaved_web(&client, ns, 2).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let agents = wait_ready(&pods, "app=agent", 2).await;
    let webs = wait_ready(&pods, "app=web", 2).await;
    let agent = agents
        .iter()
        .find(|p| node_of(p) == Some("real-2"))
        .expect("agent's pod on real-2");
    let (agent_name, agent_containers) = (
        agent.metadata.name.clone().expect("pod name"),
        container_ids(agent),
    );
    let ordinary: Vec<String> = webs
        .iter()
        .filter(|p| node_of(p) == Some("real-2"))
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert_eq!(ordinary.len(), 1, "one web pod on real-2");
    let nodes: Api<Node> = Api::all(client.clone());
    let timeline = Timeline::start(pods.clone(), nodes.clone(), "real-2").await;

    let started = Instant::now();
    let drain = tokio::task::spawn_blocking(|| {
        kordon(&["drain", "real-2", "--evict-daemonsets", "--timeout", "120s"])
    })
    .await
    .expect("join");
    let took = started.elapsed();
    eprintln!(
        "real nodes: kordon drain real-2 --evict-daemonsets in {took:?}:\n{}",
        shown(&drain)
    );
    assert_eq!(drain.status.code(), Some(0), "drain:\n{}", shown(&drain));
    let real_2 = nodes.get("real-2").await.expect("real-2");
    let taint = real_2
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .and_then(|ts| ts.iter().find(|t| t.key == DRAINING))
        .map(|t| (t.value.clone(), t.effect.clone()));
    assert_eq!(
        taint,
        Some((Some("daemonsets".to_string()), "NoSchedule".to_string())),
        "real-2 carries kordon's draining taint"
    );

    // While real-2 is out the DaemonSet wants its pod on real-1 only and puts none back
    // on real-2 (it would within a second of the eviction; give it three more).
    let sets: Api<DaemonSet> = Api::namespaced(client.clone(), ns);
    eventually(
        "agent scheduled on real-1 only",
        Duration::from_secs(30),
        || async {
            sets.get("agent")
                .await
                .ok()
                .and_then(|d| d.status)
                .is_some_and(|s| s.desired_number_scheduled == 1 && s.number_ready == 1)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = timeline.log();
    eprintln!("real nodes: real-2 during the drain: {log:#?}");
    let tainted = log
        .iter()
        .position(|m| matches!(m, Moment::Taints { keys } if keys.iter().any(|k| k == DRAINING)))
        .expect("the draining taint was put on");
    let agent_leaving = at(&log, &agent_name, leaving).expect("agent's pod evicted");
    assert!(at(&log, &agent_name, gone).is_some(), "{log:#?}");
    assert!(
        tainted < agent_leaving,
        "the DaemonSet pod was evicted before real-2 was tainted: {log:#?}"
    );
    for web in &ordinary {
        let web_leaving = at(&log, web, leaving).expect("web's pod evicted");
        let web_gone = at(&log, web, gone).expect("web's pod gone");
        assert!(web_leaving < web_gone);
        assert!(
            web_gone < agent_leaving,
            "the DaemonSet pod was evicted before {web} was gone: {log:#?}"
        );
    }
    let back: Vec<&String> = log[agent_leaving..]
        .iter()
        .filter_map(bound)
        .filter(|p| p.starts_with("agent-"))
        .collect();
    assert!(
        back.is_empty(),
        "agent came back while real-2 was out: {log:#?}"
    );
    let seen = log.len();

    // The uncordon lifts the taint; only then a new agent container runs Ready on
    // real-2, and serves.
    let uncordon = tokio::task::spawn_blocking(|| kordon(&["uncordon", "real-2"]))
        .await
        .expect("join");
    assert_eq!(
        uncordon.status.code(),
        Some(0),
        "uncordon:\n{}",
        shown(&uncordon)
    );
    let real_2 = nodes.get("real-2").await.expect("real-2");
    assert!(!has_taint(&real_2, DRAINING), "uncordon lifts the taint");
    assert!(
        real_2.spec.as_ref().and_then(|s| s.unschedulable) != Some(true),
        "real-2 is uncordoned"
    );
    let agents = wait_ready(&pods, "app=agent", 2).await;
    let again = agents
        .iter()
        .find(|p| node_of(p) == Some("real-2"))
        .expect("agent's pod on real-2 again");
    let again_name = again.metadata.name.clone().expect("pod name");
    assert_ne!(again_name, agent_name, "a new pod");
    let containers = container_ids(again);
    assert_eq!(containers.len(), 1, "one container: {containers:?}");
    assert!(
        containers.iter().all(|c| !agent_containers.contains(c)),
        "a new container: {containers:?}, before {agent_containers:?}"
    );
    let log = timeline.log();
    let lifted = seen
        + log[seen..]
            .iter()
            .position(
                |m| matches!(m, Moment::Taints { keys } if !keys.iter().any(|k| k == DRAINING)),
            )
            .expect("the draining taint was lifted");
    let bound_again = at(&log, &again_name, bound).expect("the new agent pod bound to real-2");
    assert!(
        lifted < bound_again,
        "agent was back before the taint was lifted: {log:#?}"
    );
    let ip = pod_ip(again);
    let code = tokio::task::spawn_blocking(move || http_get(&ip, 8080))
        .await
        .expect("join");
    assert_eq!(code.ok(), Some(200), "{again_name} serves");
}

/// The process ID `testbed/cluster` recorded for a component.
fn component_pid(name: &str) -> u32 {
    let path = Path::new(DIR).join("pids").join(name);
    let pid = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    pid.trim().parse().expect("a process ID")
}

/// `kordon maintain` whose command restarts the real node's containerd and stops its
/// kubelet, which starts again 5 s after the command ended: until then the node still
/// shows Ready (the controller manager marks it NotReady only after its node-monitor
/// grace period), so only the restarted kubelet's own Lease renewal or heartbeat can
/// tell kordon it is back, and kordon uncordons only after it.
#[tokio::test(flavor = "multi_thread")]
async fn maintain_waits_for_a_restarted_real_kubelet_to_report_ready_before_uncordoning() {
    let cluster = RealCluster::up();
    let client = cluster.client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let kubelet_before = component_pid("real-2-kubelet");
    let containerd_before = component_pid("real-2-containerd");
    let done = Path::new(DIR).join("maintenance-done");
    let starting = Path::new(DIR).join("kubelet-starting");
    // The kubelet's start runs in its own session, so it outlives the command.
    let script = format!(
        "t={}; \"$t\" restart \"$KORDON_NODE-containerd\" && \"$t\" stop \"$KORDON_NODE-kubelet\" && \
         {{ setsid sh -c 'sleep 5; date +%s.%N > {}; exec \"$0\" start \"$1\"' \"$t\" \"$KORDON_NODE-kubelet\" \
         </dev/null >/dev/null 2>&1 & }} && date +%s.%N > {}",
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testbed/cluster")
            .display(),
        starting.display(),
        done.display()
    );

    // Sees real-2 cordoned, then uncordoned, and reads its Lease and Ready heartbeat the
    // moment it is.
    let watch = tokio::spawn({
        let nodes = nodes.clone();
        async move {
            let started = Instant::now();
            let mut cordoned = false;
            loop {
                assert!(
                    started.elapsed() < Duration::from_secs(300),
                    "real-2 was not cordoned and uncordoned within 5 minutes"
                );
                let node = nodes.get("real-2").await.expect("real-2");
                let unschedulable = node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true);
                if unschedulable {
                    cordoned = true;
                } else if cordoned {
                    let seen = jiff::Timestamp::now();
                    let lease = leases.get("real-2").await.expect("real-2's Lease");
                    let renewed = lease
                        .spec
                        .and_then(|s| s.renew_time)
                        .expect("the Lease's renewTime")
                        .0;
                    let heartbeat = node
                        .status
                        .and_then(|s| s.conditions)
                        .into_iter()
                        .flatten()
                        .find(|c| c.type_ == "Ready")
                        .and_then(|c| c.last_heartbeat_time)
                        .expect("a Ready heartbeat")
                        .0;
                    return (seen, renewed, heartbeat);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });

    let started = Instant::now();
    let maintain = tokio::task::spawn_blocking(move || {
        kordon(&[
            "maintain",
            "real-2",
            "--timeout",
            "120s",
            "--ready-timeout",
            "180s",
            "--",
            "sh",
            "-c",
            &script,
        ])
    })
    .await
    .expect("join");
    let took = started.elapsed();
    eprintln!(
        "real nodes: kordon maintain real-2 (restarting its containerd and kubelet) in {took:?}:\n{}",
        shown(&maintain)
    );
    assert_eq!(
        maintain.status.code(),
        Some(0),
        "kordon maintain:\n{}",
        shown(&maintain)
    );
    let (seen, renewed, heartbeat) = watch.await.expect("join");
    let seconds = |path: &Path| -> f64 {
        std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .trim()
            .parse()
            .expect("a time in seconds")
    };
    let at = |t: jiff::Timestamp| t.as_microsecond() as f64 / 1e6;
    let (done_at, starting_at) = (seconds(&done), seconds(&starting));
    eprintln!(
        "real nodes: command done at {done_at:.3}; kubelet starting {:.3} s later; uncordon seen {:.3} s later, the Lease renewed {:.3} s and the Ready heartbeat {:.3} s after the kubelet's start",
        starting_at - done_at,
        at(seen) - starting_at,
        at(renewed) - starting_at,
        at(heartbeat) - starting_at
    );

    // The kubelet and containerd really restarted: new processes, and their logs say so.
    let kubelet_after = component_pid("real-2-kubelet");
    let containerd_after = component_pid("real-2-containerd");
    assert_ne!(kubelet_after, kubelet_before, "real-2's kubelet restarted");
    assert_ne!(
        containerd_after, containerd_before,
        "real-2's containerd restarted"
    );
    for (name, pid) in [
        ("real-2-kubelet", kubelet_after),
        ("real-2-containerd", containerd_after),
    ] {
        assert!(
            Path::new(&format!("/proc/{pid}")).exists(),
            "{name} runs again as {pid}"
        );
        let log = std::fs::read_to_string(Path::new(DIR).join(format!("logs/{name}.log")))
            .expect("the component's log");
        assert!(
            log.contains("started again by testbed/cluster start"),
            "{name}'s log shows its second start"
        );
    }

    // kordon waited out the 5 s without a kubelet (the node showed Ready all along),
    // and uncordoned once the restarted kubelet had renewed its Lease or posted a
    // heartbeat.
    assert!(
        at(seen) > starting_at,
        "real-2 was uncordoned at {seen}, before its kubelet was started again ({starting_at:.3})"
    );
    assert!(
        at(renewed).max(at(heartbeat)) > starting_at,
        "when real-2 was uncordoned ({seen}) neither its Lease ({renewed}) nor its Ready heartbeat ({heartbeat}) came from the restarted kubelet (started at {starting_at:.3})"
    );
    let real_2 = nodes.get("real-2").await.expect("real-2");
    assert!(node_ready(&real_2), "real-2 is Ready");
    assert!(
        real_2.spec.as_ref().and_then(|s| s.unschedulable) != Some(true),
        "real-2 is uncordoned"
    );
    assert!(
        !real_2
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key("kordon.dev/cordoned-at"),
        "kordon's cordon mark is gone"
    );
}

fn has_taint(node: &Node, key: &str) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key == key))
}

/// `drain --node-down` on a real node whose kubelet was killed (its containers run on,
/// but its Lease and heartbeat really stop): once the controller manager marks it
/// NotReady (its node-monitor grace period, 50 s by default), kordon confirms it down,
/// taints it out of service, the control plane deletes its pod, and the replacement runs
/// Ready on real-1; `uncordon` lifts the taint; `down` leaves nothing of the orphaned
/// containers.
#[tokio::test(flavor = "multi_thread")]
async fn drain_node_down_on_a_real_node_whose_kubelet_was_killed() {
    let mut cluster = RealCluster::up();
    let client = cluster.client().await;
    let ns = "node-down";
    create_namespace(&client, ns).await;
    create_web(
        &client,
        ns,
        2,
        json!({ "topologySpreadConstraints": [spread(true)] }),
        json!({}),
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let before = wait_ready(&pods, "app=web", 2).await;
    let lost = before
        .iter()
        .find(|p| node_of(p) == Some("real-2"))
        .expect("a web pod on real-2");
    let lost_uid = lost.metadata.uid.clone();
    let lost_containers = container_ids(lost);

    let killed = Instant::now();
    run(&mut testbed(&["kill", "real-2-kubelet"]));
    let nodes: Api<Node> = Api::all(client.clone());
    eventually(
        "real-2 NotReady after its kubelet was killed",
        Duration::from_secs(150),
        || async { !node_ready(&nodes.get("real-2").await.expect("real-2")) },
    )
    .await;
    eprintln!(
        "real nodes: real-2 NotReady {:?} after its kubelet was killed",
        killed.elapsed()
    );

    let started = Instant::now();
    let drain = tokio::task::spawn_blocking(|| {
        kordon(&[
            "drain",
            "real-2",
            "--node-down",
            "--node-down-after",
            "10s",
            "--timeout",
            "120s",
        ])
    })
    .await
    .expect("join");
    eprintln!(
        "real nodes: kordon drain real-2 --node-down in {:?}:\n{}",
        started.elapsed(),
        shown(&drain)
    );
    assert_eq!(drain.status.code(), Some(0), "drain:\n{}", shown(&drain));
    let real_2 = nodes.get("real-2").await.expect("real-2");
    assert!(
        has_taint(&real_2, "node.kubernetes.io/out-of-service"),
        "real-2 is tainted out of service"
    );
    assert!(
        real_2.spec.as_ref().and_then(|s| s.unschedulable) == Some(true),
        "real-2 is cordoned"
    );

    // The lost pod is gone and its replacement runs Ready on real-1, in a new container.
    let after = wait_ready(&pods, "app=web", 2).await;
    assert!(
        after.iter().all(|p| p.metadata.uid != lost_uid),
        "the pod on real-2 is gone"
    );
    assert!(
        after.iter().all(|p| node_of(p) == Some("real-1")),
        "both web pods run on real-1"
    );
    let containers: Vec<String> = after.iter().flat_map(container_ids).collect();
    assert!(
        containers.iter().all(|c| !lost_containers.contains(c)),
        "the replacement is a new container"
    );

    // The node is let back in: kordon's cordon and out-of-service taint are lifted.
    let uncordon = tokio::task::spawn_blocking(|| kordon(&["uncordon", "real-2"]))
        .await
        .expect("join");
    assert_eq!(
        uncordon.status.code(),
        Some(0),
        "uncordon:\n{}",
        shown(&uncordon)
    );
    let real_2 = nodes.get("real-2").await.expect("real-2");
    assert!(
        !has_taint(&real_2, "node.kubernetes.io/out-of-service"),
        "uncordon lifts the out-of-service taint"
    );
    assert!(
        real_2.spec.as_ref().and_then(|s| s.unschedulable) != Some(true),
        "real-2 is uncordoned"
    );
    let annotations = real_2.metadata.annotations.unwrap_or_default();
    assert!(
        !annotations.contains_key("kordon.dev/out-of-service-at")
            && !annotations.contains_key("kordon.dev/cordoned-at"),
        "kordon's marks are gone: {annotations:?}"
    );

    // real-2's containers outlived its kubelet; `down` still removes everything.
    cluster.down();
    let left = node_processes();
    assert!(left.is_empty(), "processes left after down: {left:#?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let ours: Vec<&str> = mounts.lines().filter(|l| l.contains(DIR)).collect();
    assert!(ours.is_empty(), "mounts after down: {ours:#?}");
    assert!(!Path::new(DIR).exists(), "{DIR} after down");
}

/// The maintenance command that makes real-N look down to an external load balancer
/// for `seconds`, as in a reboot (`testbed/realnode unplug`: the host's packets to its
/// node IP are dropped; its kubelet stays Ready).
fn node_down_for(node: u8, seconds: u32) -> String {
    let realnode = Path::new(env!("CARGO_MANIFEST_DIR")).join("testbed/realnode");
    format!("{} unplug {node} {seconds}", realnode.display())
}

/// `kordon maintain real-N EXTRA… -- <real-N down for 5 s>` behind the testbed's
/// external load balancer under 100 requests/s: the probe's report and kordon's output.
async fn maintain_unplugged(
    url: &str,
    node: u8,
    extra: &[&str],
) -> (support::traffic::Report, std::process::Output) {
    let name = format!("real-{node}");
    let down = node_down_for(node, 5);
    let mut args: Vec<String> = vec!["maintain".into(), name, "--timeout".into(), "120s".into()];
    args.extend(extra.iter().map(|a| a.to_string()));
    args.extend(["--".into(), "sh".into(), "-c".into(), down]);
    let url = url.to_string();
    tokio::task::spawn_blocking(move || {
        let probe = support::traffic::Probe::start(
            &url,
            100,
            Duration::from_secs(180),
            Duration::from_secs(2),
        );
        std::thread::sleep(Duration::from_secs(2));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let maintain = kordon(&args);
        std::thread::sleep(Duration::from_secs(2));
        let report = probe.finish();
        assert!(maintain.status.success(), "kordon maintain:\n{}", shown(&maintain));
        eprintln!(
            "real nodes: kordon {}: {} requests through the load balancer, {} failed (longest run {})",
            args.join(" "),
            report.sent,
            report.failures.len(),
            report.longest_run
        );
        (report, maintain)
    })
    .await
    .expect("join")
}

/// A node that goes down in its maintenance loses requests sent to it by an external
/// load balancer until the balancer's health checks notice; taken out of the balancer
/// first (the exclusion label, and the wait for deregistration), it loses none. The
/// balancer is the testbed's (`testbed/lb`): the real service controller of
/// k8s.io/cloud-provider, which decides the nodes from their labels as on a cloud, in
/// front of the real nodes' NodePorts, health-checking them every second.
#[tokio::test(flavor = "multi_thread")]
async fn an_external_load_balancer_loses_no_request_when_the_node_leaves_it_first() {
    let cluster = RealCluster::up();
    let client = cluster.client().await;
    let ns = "balanced";
    create_namespace(&client, ns).await;
    create_well_behaved_web(&client, ns, 4).await;
    let service: Service = serde_json::from_value(json!({
        "metadata": { "name": "web" },
        "spec": {
            "type": "LoadBalancer",
            "selector": { "app": "web" },
            "ports": [{ "port": 8088, "targetPort": 8080 }]
        }
    }))
    .expect("service");
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    services
        .create(&PostParams::default(), &service)
        .await
        .expect("create service");
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    wait_ready(&pods, "app=web", 4).await;

    let host = "10.250.0.1";
    let lb = support::balancer::Balancer::start(&Path::new(DIR).join("admin.kubeconfig"), host);
    for node in ["real-1", "real-2"] {
        lb.wait_for(
            0,
            Duration::from_secs(60),
            &format!("{node} healthy"),
            |l| support::balancer::healthy(l, node),
        )
        .await;
    }
    eventually(
        "the Service's ingress is the balancer's",
        Duration::from_secs(30),
        || async {
            let status = services.get("web").await.expect("get service").status;
            status
                .and_then(|s| s.load_balancer)
                .and_then(|l| l.ingress)
                .is_some_and(|i| i.iter().any(|i| i.ip.as_deref() == Some(host)))
        },
    )
    .await;
    let url = format!("http://{host}:8088/");

    // Without exclusion: real-2 is drained, then down for 5 s while the balancer still
    // sends to it, until two failed health checks take it out.
    let skip = lb.lines().len();
    let (without, _) = maintain_unplugged(&url, 2, &[]).await;
    assert!(
        !without.failures.is_empty(),
        "requests to a node that is down fail until the balancer's checks notice: \
         {} sent, none failed",
        without.sent
    );
    let (unhealthy, _) = lb
        .wait_for(skip, Duration::from_secs(5), "real-2 unhealthy", |l| {
            l.contains(": real-2 (") && l.ends_with(" unhealthy")
        })
        .await;
    lb.wait_for(
        unhealthy,
        Duration::from_secs(60),
        "real-2 healthy again",
        |l| support::balancer::healthy(l, "real-2"),
    )
    .await;

    // With exclusion: real-1 (every web pod runs there now) leaves the balancer with its
    // cordon, and kordon waits for the deregistration before the first eviction.
    let on_real_1: Vec<Pod> = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("list pods")
        .items;
    assert!(on_real_1.iter().all(|p| node_of(p) == Some("real-1")));
    let departures: Vec<_> = on_real_1
        .iter()
        .map(|p| {
            tokio::spawn(follow_departure(
                pods.clone(),
                p.metadata.name.clone().unwrap_or_default(),
                p.metadata.uid.clone(),
            ))
        })
        .collect();
    let skip = lb.lines().len();
    let exclude = [
        "--exclude-from-load-balancers",
        "--deregistration-delay",
        "4s",
    ];
    let (with, maintain) = maintain_unplugged(&url, 1, &exclude).await;
    assert!(
        shown(&maintain).contains("waiting 4s for them to deregister the node"),
        "kordon says what it waits for:\n{}",
        shown(&maintain)
    );
    assert!(with.sent >= 1000, "the probe ran: {} requests", with.sent);
    assert!(
        with.failures.is_empty(),
        "{} of {} requests failed, the first: {:#?}",
        with.failures.len(),
        with.sent,
        &with.failures[..with.failures.len().min(10)]
    );
    let is_set_without_real_1 =
        |l: &str| support::balancer::nodes(l).is_some_and(|n| !n.contains(&"real-1"));
    let (out, deregistered) = lb
        .wait_for(
            skip,
            Duration::ZERO,
            "a node set without real-1",
            is_set_without_real_1,
        )
        .await;
    lb.wait_for(
        out,
        Duration::from_secs(30),
        "real-1 back in its node set",
        |l| support::balancer::nodes(l).is_some_and(|n| n.contains(&"real-1")),
    )
    .await;
    let mut first_eviction = None;
    for departure in departures {
        let marked = departure.await.expect("join").marked;
        first_eviction = Some(first_eviction.map_or(marked, |f: Instant| f.min(marked)));
    }
    let first_eviction = first_eviction.expect("real-1 had pods");
    assert!(
        deregistered < first_eviction,
        "the balancer dropped real-1 {:?} before its first pod was evicted",
        first_eviction.saturating_duration_since(deregistered)
    );
    eprintln!(
        "real nodes: real-1 left the balancer {:?} before its first eviction",
        first_eviction - deregistered
    );
}

/// `testbed/realnode ARGS` on the real cluster.
fn realnode(args: &[&str]) -> Command {
    let mut cmd = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("testbed/realnode"));
    cmd.args(args)
        .env("KORDON_CLUSTER_DIR", DIR)
        .env("KORDON_CLUSTER_PORT", PORT)
        .env("KORDON_REAL_NODES", REAL_NODES.to_string());
    cmd
}

/// The image of the test's stand-in for an agent: busybox's sh, chroot, sleep and echo.
const HOST_IMAGE: &str = "kordon.test/host:1";

/// Builds [`HOST_IMAGE`] as an OCI archive (as deploy/image/build.sh builds kordon's)
/// at `archive`, with umoci as testbed/images.sh builds the testbed's images.
fn build_host_image(archive: &Path) {
    const SCRIPT: &str = r#"set -euo pipefail
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umoci init --layout "$work/oci"
umoci new --image "$work/oci:host"
umoci unpack --image "$work/oci:host" "$work/bundle" >/dev/null
mkdir -p "$work/bundle/rootfs/bin"
cp /bin/busybox "$work/bundle/rootfs/bin/busybox"
for applet in sh chroot sleep echo; do ln -s busybox "$work/bundle/rootfs/bin/$applet"; done
umoci repack --image "$work/oci:host" "$work/bundle"
umoci config --image "$work/oci:host" --config.env PATH=/bin --config.entrypoint /bin/sh
tar -C "$work/oci" -cf "$1" .
"#;
    run(Command::new("bash")
        .args(["-c", SCRIPT, "build-host-image"])
        .arg(archive));
}

fn boot_id(node: &Node) -> String {
    node.status
        .as_ref()
        .and_then(|s| s.node_info.as_ref())
        .map(|i| i.boot_id.clone())
        .unwrap_or_default()
}

/// The boot ID the testbed gave real-N's kubelet (`--boot-id-file`).
fn boot_id_file(n: u8) -> String {
    let path = Path::new(DIR).join(format!("real/real-{n}/boot_id"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

fn restart_count(pod: &Pod) -> i32 {
    pod.status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .map(|c| c.restart_count)
        .sum()
}

/// `testbed/realnode load` puts an image built here on every node, and `testbed/realnode
/// reboot 1`, run as kordon's agent will run its reboot command (from a privileged
/// hostPID pod on real-1, chrooted into the host's /, with nothing but the cluster's
/// directory and port in its environment), returns at once and reboots real-1 as the
/// kubelet sees it: a new boot ID and a Rebooted event, a new kubelet, containerd and
/// kube-proxy (in no pod's cgroup), the node Ready again; its pods stay (same UID, same
/// node): one that restarts always gets a new container, and the agent's own pod, never
/// restarted, ends Failed, killed by the reboot's SIGTERM after its command said it was
/// scheduled. real-2 is untouched, and `down` still leaves nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_real_node_rebooted_from_a_privileged_pod_on_it_comes_back_with_a_new_boot_id() {
    let mut cluster = RealCluster::up();
    let client = cluster.client().await;
    let nodes: Api<Node> = Api::all(client.clone());

    // An OCI archive, loaded as HOST_IMAGE into every node's containerd.
    let archive = Path::new(DIR).join("host-image.tar");
    build_host_image(&archive);
    let archive = archive.display().to_string();
    run(&mut realnode(&["load", &archive, HOST_IMAGE]));
    for n in 1..=REAL_NODES {
        let socket = format!("{DIR}/real/real-{n}/containerd.sock");
        let listed =
            run(Command::new("ctr").args(["-a", &socket, "-n", "k8s.io", "images", "ls", "-q"]));
        assert!(
            listed.lines().any(|l| l == HOST_IMAGE),
            "real-{n} has {HOST_IMAGE}:\n{listed}"
        );
    }

    // Each node its own boot ID: the one in its file.
    let (real_1, real_2) = (
        nodes.get("real-1").await.expect("real-1"),
        nodes.get("real-2").await.expect("real-2"),
    );
    let boot_before = boot_id_file(1);
    assert_eq!(boot_id(&real_1), boot_before, "real-1's bootID");
    assert_eq!(boot_id(&real_2), boot_id_file(2), "real-2's bootID");
    assert_ne!(boot_before, boot_id_file(2), "each node its own boot ID");
    let processes = ["kubelet", "containerd", "kube-proxy"];
    let pids_before: Vec<u32> = processes
        .iter()
        .map(|c| component_pid(&format!("real-1-{c}")))
        .collect();
    let real_2_kubelet = component_pid("real-2-kubelet");

    // A web pod on real-1 (no controller: what becomes of it is the kubelet's doing).
    create_namespace(&client, NS).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let web: Pod = serde_json::from_value(json!({
        "metadata": { "name": "web" },
        "spec": {
            "nodeName": "real-1",
            "containers": [{
                "name": "web",
                "image": image("web"),
                "imagePullPolicy": "Never",
                "readinessProbe": { "httpGet": { "path": "/", "port": 8080 }, "periodSeconds": 1 }
            }]
        }
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &web)
        .await
        .expect("create web");
    let web = wait_ready(&pods, "", 1).await.remove(0);
    let web_uid = web.metadata.uid.clone();
    let web_containers = container_ids(&web);

    // The agent's stand-in: the reboot command as the agent will run it.
    let command = format!(
        "KORDON_CLUSTER_DIR={DIR} KORDON_CLUSTER_PORT={PORT} {} reboot 1",
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testbed/realnode")
            .display()
    );
    let agent: Pod = serde_json::from_value(json!({
        "metadata": { "name": "agent" },
        "spec": {
            "nodeName": "real-1",
            "hostPID": true,
            "hostNetwork": true,
            "restartPolicy": "Never",
            "volumes": [{ "name": "host", "hostPath": { "path": "/" } }],
            "containers": [{
                "name": "agent",
                "image": HOST_IMAGE,
                "imagePullPolicy": "Never",
                "securityContext": { "privileged": true },
                "volumeMounts": [{ "name": "host", "mountPath": "/host" }],
                "command": ["/bin/sh", "-c", "chroot /host /bin/sh -c \"$0\" && echo scheduled && exec sleep 3600", command]
            }]
        }
    }))
    .expect("pod");
    let started = Instant::now();
    pods.create(&PostParams::default(), &agent)
        .await
        .expect("create agent");

    eventually(
        "real-1 Ready with a new boot ID",
        Duration::from_secs(120),
        || async {
            let node = nodes.get("real-1").await.expect("real-1");
            let id = boot_id(&node);
            node_ready(&node) && !id.is_empty() && id != boot_before
        },
    )
    .await;
    eprintln!(
        "real nodes: real-1 Ready with a new boot ID {:?} after the agent pod's creation",
        started.elapsed()
    );
    let boot_after = boot_id_file(1);
    assert_eq!(
        boot_id(&nodes.get("real-1").await.expect("real-1")),
        boot_after,
        "real-1's bootID is its new boot_id"
    );
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let about_real_1 = ListParams::default().fields("involvedObject.name=real-1");
    eventually(
        "the kubelet's Rebooted event",
        Duration::from_secs(30),
        || async {
            let list = events.list(&about_real_1).await.expect("list events").items;
            list.iter().any(|e| {
                e.reason.as_deref() == Some("Rebooted")
                    && e.message
                        .as_deref()
                        .is_some_and(|m| m.contains(&boot_after))
            })
        },
    )
    .await;

    // A new kubelet, containerd and kube-proxy, in the host's cgroups, not a pod's.
    for (c, before) in processes.iter().zip(&pids_before) {
        let pid = component_pid(&format!("real-1-{c}"));
        assert_ne!(pid, *before, "real-1's {c} is a new process");
        let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .unwrap_or_else(|e| panic!("real-1's {c} ({pid}) runs: {e}"));
        assert!(
            !cgroups.contains("/kordon-real-"),
            "real-1's {c} is in no pod's cgroup:\n{cgroups}"
        );
    }
    assert_eq!(boot_id_file(2), boot_id(&real_2), "real-2 did not reboot");
    assert_eq!(
        component_pid("real-2-kubelet"),
        real_2_kubelet,
        "real-2's kubelet"
    );

    // The web pod stayed, and runs in a new container.
    eventually(
        "the web pod Ready again after a restart",
        Duration::from_secs(60),
        || async {
            let pod = pods.get("web").await.expect("web");
            pod_ready(&pod) && restart_count(&pod) >= 1
        },
    )
    .await;
    let web = pods.get("web").await.expect("web");
    assert_eq!(web.metadata.uid, web_uid, "the same pod");
    assert_eq!(node_of(&web), Some("real-1"), "on the same node");
    let containers = container_ids(&web);
    assert!(
        containers.iter().all(|c| !web_containers.contains(c)),
        "a new container: {web_containers:?} then {containers:?}"
    );

    // The agent's pod: its command returned at once, then the reboot's SIGTERM ended it,
    // and a pod never restarted stays Failed.
    eventually(
        "the agent's pod Failed",
        Duration::from_secs(60),
        || async {
            let pod = pods.get("agent").await.expect("agent");
            pod.status.and_then(|s| s.phase).as_deref() == Some("Failed")
        },
    )
    .await;
    let agent = pods.get("agent").await.expect("agent");
    let exit = agent
        .status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .find_map(|c| c.state.as_ref()?.terminated.as_ref().map(|t| t.exit_code));
    assert_eq!(exit, Some(143), "the agent's container ended by SIGTERM");
    let said = pods
        .logs("agent", &Default::default())
        .await
        .expect("the agent's log");
    assert!(
        said.contains("scheduled"),
        "the reboot command returned 0 in the pod: {said:?}"
    );
    let log = std::fs::read_to_string(Path::new(DIR).join("logs/real-1-reboot.log"))
        .expect("the reboot's log");
    eprintln!("real nodes: the reboot's log:\n{log}");
    assert!(
        log.contains(&format!("Ready, boot ID {boot_after}")),
        "the reboot's log:\n{log}"
    );

    cluster.down();
    assert_nothing_left();
}

/// kordon's own image, as the chart runs it, loaded into every real node.
const KORDON_IMAGE: &str = "kordon.test/kordon:dev";

/// Builds kordon's image (deploy/image/build.sh, the dev profile: a static binary on
/// scratch) into an OCI archive and returns its path.
fn build_kordon_image() -> String {
    let archive = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kordon-agent-image.tar");
    run(
        Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/image/build.sh"))
            .arg(&archive)
            .env("KORDON_IMAGE_PROFILE", "dev"),
    );
    archive.display().to_string()
}

/// The chart's agent objects (ServiceAccount, RBAC, admission policy, DaemonSet), as
/// Helm renders them with these values, applied to the real cluster in `ns`.
fn install_agent(ns: &str, values: &Value) {
    let file = Path::new(DIR).join("agent-values.json");
    std::fs::write(&file, values.to_string()).expect("write values");
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/helm/kordon");
    let rendered = run(
        Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("testbed/helm.sh"))
            .args(["template", "kordon"])
            .arg(&chart)
            .args(["-n", ns, "-f"])
            .arg(&file),
    );
    let agent: Vec<String> = rendered
        .split("\n---")
        .filter_map(|doc| serde_saphyr::from_str::<Value>(doc).ok())
        .filter(|o| o["metadata"]["labels"]["app.kubernetes.io/component"] == "agent")
        .map(|o| o.to_string())
        .collect();
    assert_eq!(agent.len(), 6, "the agent's objects:\n{rendered}");
    let manifest = Path::new(DIR).join("agent.json");
    std::fs::write(&manifest, agent.join("\n")).expect("write manifest");
    run(Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(Path::new(DIR).join("admin.kubeconfig"))
        .args(["apply", "-f"])
        .arg(&manifest));
}

/// Waits until `get` returns something, for at most `limit`.
async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut get: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(found) = get().await {
            return found;
        }
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The agent on real nodes (issue 24): kordon's own image runs as the chart's DaemonSet,
/// with exactly the chart's rights. Its reboot command is the testbed's reboot of its
/// node (a new boot ID, every process of the node restarted, the agent's own pod
/// too), which also removes the node's sentinel file, as a reboot clears
/// /var/run/reboot-required. A NodeMaintenance with a `reboot` step goes through drain,
/// the agent's reboot, Ready again and the gates, and ends Done with the agent's
/// record in its status; then a sentinel file created on the host for real-2 starts a
/// triggered MaintenancePlan's round for real-2 only.
#[tokio::test(flavor = "multi_thread")]
async fn the_agent_reboots_a_drained_real_node_and_a_sentinel_starts_a_plan_round_for_its_node_only()
 {
    let archive = build_kordon_image();
    let mut cluster = RealCluster::up();
    let client = cluster.client().await;
    run(&mut realnode(&["load", &archive, KORDON_IMAGE]));
    create_namespace(&client, NS).await;
    create_well_behaved_web(&client, NS, 2).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    wait_ready(&pods, "app=web", 2).await;

    let sentinel = format!("{DIR}/real/$(NODE_NAME)/reboot-required");
    let reboot = format!(
        "rm -f {DIR}/real/$NODE_NAME/reboot-required && \
         KORDON_CLUSTER_DIR={DIR} KORDON_CLUSTER_PORT={PORT} {} reboot ${{NODE_NAME#real-}}",
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testbed/realnode")
            .display()
    );
    let (repository, tag) = KORDON_IMAGE.split_once(':').expect("a tag");
    let kubectl = || {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(Path::new(DIR).join("admin.kubeconfig"));
        cmd
    };
    let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/crds/kordon.dev.yaml");
    run(kubectl().args(["apply", "-f"]).arg(&crds));
    run(kubectl().args([
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/nodemaintenances.kordon.dev",
        "crd/maintenanceplans.kordon.dev",
    ]));
    install_agent(
        NS,
        &json!({
            "image": { "repository": repository, "tag": tag, "pullPolicy": "Never" },
            "agent": {
                "enabled": true,
                "rebootCommand": reboot,
                "sentinel": { "files": [sentinel], "checkEvery": "2s" },
                // The API server listens on the host's loopback only.
                "hostNetwork": true,
                "env": [
                    { "name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1" },
                    { "name": "KUBERNETES_SERVICE_PORT", "value": PORT }
                ],
                "extraArgs": ["-v"],
                "nodeSelector": { "kordon.test/real": "true" }
            }
        }),
    );
    wait_ready(&pods, "app.kubernetes.io/component=agent", REAL_NODES).await;
    let _controller = support::Spawned::new(
        Command::new(env!("CARGO_BIN_EXE_kordon"))
            .arg("--kubeconfig")
            .arg(Path::new(DIR).join("admin.kubeconfig"))
            .args(["-v", "controller"]),
        "real-controller",
    );

    // A NodeMaintenance: real-1 drained, rebooted by its agent, back, Done.
    let nodes: Api<Node> = Api::all(client.clone());
    let boot_before = boot_id(&nodes.get("real-1").await.expect("real-1"));
    let maintenances: Api<NodeMaintenance> = Api::all(client.clone());
    let nm: NodeMaintenance = serde_json::from_value(json!({
        "apiVersion": "kordon.dev/v1alpha1", "kind": "NodeMaintenance",
        "metadata": { "name": "real-1-reboot" },
        "spec": { "nodeName": "real-1", "step": { "reboot": { "timeout": "5m" } } }
    }))
    .expect("nm");
    maintenances
        .create(&PostParams::default(), &nm)
        .await
        .expect("create NodeMaintenance");
    let done = wait_for(
        "real-1's maintenance done",
        Duration::from_secs(300),
        || async {
            let nm = maintenances.get("real-1-reboot").await.ok()?;
            let phase = nm.status.as_ref()?.phase?;
            assert_ne!(phase, StatusPhase::Failed, "{:?}", nm.status);
            (phase == StatusPhase::Done).then_some(nm)
        },
    )
    .await;
    let record = done.status.as_ref().and_then(|s| s.host_step.clone());
    let record = record.expect("the agent's record in status.hostStep");
    assert_eq!(record.step, HostStepKind::Reboot, "{record:?}");
    // A reboot may take the agent down before it writes how its command ended.
    assert!(
        matches!(record.outcome(), None | Some(Ok(()))),
        "{record:?}"
    );
    let real_1 = nodes.get("real-1").await.expect("real-1");
    assert_ne!(boot_id(&real_1), boot_before, "real-1 rebooted");
    assert_eq!(boot_id(&real_1), boot_id_file(1));
    assert!(node_ready(&real_1));
    assert!(
        !real_1
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false),
        "back in service"
    );
    wait_ready(&pods, "app=web", 2).await;

    // A triggered plan takes no node until a sentinel says one needs it; then that one.
    let boot_2 = boot_id(&nodes.get("real-2").await.expect("real-2"));
    let plans: Api<MaintenancePlan> = Api::all(client.clone());
    let plan: MaintenancePlan = serde_json::from_value(json!({
        "apiVersion": "kordon.dev/v1alpha1", "kind": "MaintenancePlan",
        "metadata": { "name": "reboots" },
        "spec": {
            "nodeSelector": "kordon.test/real=true",
            "triggered": true,
            "step": { "reboot": { "timeout": "5m" } }
        }
    }))
    .expect("plan");
    plans
        .create(&PostParams::default(), &plan)
        .await
        .expect("create plan");
    let of_plan = ListParams::default().labels("kordon.dev/plan=reboots");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let none = maintenances.list(&of_plan).await.expect("list");
    assert!(none.items.is_empty(), "nothing triggered, nothing started");
    std::fs::write(format!("{DIR}/real/real-2/reboot-required"), "").expect("sentinel");
    let done = wait_for("real-2's round done", Duration::from_secs(300), || async {
        let listed = maintenances.list(&of_plan).await.ok()?;
        let phases: Vec<_> = listed
            .items
            .iter()
            .map(|nm| nm.status.as_ref().and_then(|s| s.phase))
            .collect();
        assert!(
            !phases.contains(&Some(StatusPhase::Failed)),
            "{:?}",
            listed.items
        );
        (listed.items.len() == 1 && phases == [Some(StatusPhase::Done)]).then_some(listed.items)
    })
    .await;
    assert_eq!(done[0].spec.node_name, "real-2", "the triggered node only");
    assert_ne!(
        boot_id(&nodes.get("real-2").await.expect("real-2")),
        boot_2,
        "real-2 rebooted"
    );
    assert!(
        !Path::new(&format!("{DIR}/real/real-2/reboot-required")).exists(),
        "the reboot cleared the sentinel"
    );
    // The need gone, the agent takes its label off.
    wait_for(
        "real-2's trigger label gone",
        Duration::from_secs(30),
        || async {
            let node = nodes.get("real-2").await.ok()?;
            let labels = node.metadata.labels.unwrap_or_default();
            (!labels.contains_key(TRIGGER_LABEL)).then_some(())
        },
    )
    .await;
    wait_ready(&pods, "app=web", 2).await;
    cluster.down();
}
