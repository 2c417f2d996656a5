//! kordon's cost grows with the work, not with the cluster: what a drain, `status NODE`
//! and a roll read is scoped to their nodes and the workloads involved, as the API
//! server's audit log shows for kordon's own identity. Unrelated pods (another
//! namespace, another node, and whatever the tests running alongside create) are never
//! watched, and are read at most once, page by page, where placement needs every
//! node's usage.
mod support;

use std::path::Path;
use std::time::Duration;

use kordon::cluster::view::{PodScope, View};
use kordon::cluster::{Connection, ConnectionOptions};
use kordon::names::NodeName;
use kube::api::{DeleteParams, PostParams};
use support::audit::{Audit, Request, tool_identity};
use support::fixtures::{self, PodOptions};
use support::{TestEnv, eventually};

fn kordon_as(kubeconfig: &Path, args: &[&str]) -> support::Run {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kordon"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("run kordon");
    support::Run::from(out)
}

/// A namespace of its own with a node of its own and ten pods: nothing kordon does
/// to the other test's nodes may read them.
async fn unrelated() -> TestEnv {
    let mut noise = TestEnv::new("noise").await;
    noise.add_node("node-1").await;
    noise
        .create(&fixtures::deployment(
            noise.ns(),
            "noise",
            10,
            &PodOptions::default(),
        ))
        .await;
    noise.wait_ready("app=noise", 10).await;
    noise
}

fn describe(requests: &[Request]) -> String {
    requests
        .iter()
        .map(|r| format!("{} {}", r.verb, r.uri))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A pod read is scoped: to one node (field selector), or to the test's namespace
/// with a label selector.
fn scoped(r: &Request, env: &TestEnv) -> bool {
    let on_node = r
        .param("fieldSelector")
        .is_some_and(|f| f.starts_with("spec.nodeName=") && f.contains(&env.id));
    let of_workload =
        r.namespace.as_deref() == Some(env.ns()) && r.param("labelSelector").is_some();
    on_node || of_workload
}

/// A whole-cluster read of pods, which placement needs: paged.
fn paged_usage_read(r: &Request) -> bool {
    r.verb == "list"
        && r.namespace.is_none()
        && r.param("limit").is_some()
        && r.param("fieldSelector").is_none()
        && r.param("labelSelector").is_none()
}

fn assert_nothing_unrelated(requests: &[Request], env: &TestEnv, noise: &TestEnv) {
    let all = describe(requests);
    assert!(
        requests
            .iter()
            .all(|r| r.namespace.as_deref() != Some(noise.ns()) && !r.uri.contains(&noise.id)),
        "read the unrelated namespace or node:\n{all}"
    );
    for r in requests
        .iter()
        .filter(|r| r.resource == "pods" && r.verb == "watch")
    {
        assert!(
            scoped(r, env),
            "an unscoped pod watch: {} {}\n{all}",
            r.verb,
            r.uri
        );
    }
    for r in requests.iter().filter(|r| {
        [
            "poddisruptionbudgets",
            "deployments",
            "replicasets",
            "statefulsets",
        ]
        .contains(&r.resource.as_str())
    }) {
        assert_eq!(
            r.namespace.as_deref(),
            Some(env.ns()),
            "{} {}\n{all}",
            r.verb,
            r.uri
        );
    }
}

#[tokio::test]
async fn a_drain_watches_only_its_node_and_the_workloads_it_touches() {
    let env = TestEnv::two_nodes_with_web("scoped-drain").await;
    let noise = unrelated().await;
    let (kubeconfig, user) = tool_identity(&env);
    let audit = Audit::start();

    let node = env.node("node-2");
    kordon_as(&kubeconfig, &["drain", &node, "-o", "json"]).assert_ok();

    let requests = audit.requests_by(&user);
    assert_nothing_unrelated(&requests, &env, &noise);
    for r in requests
        .iter()
        .filter(|r| r.resource == "pods" && matches!(r.verb.as_str(), "list" | "watch"))
    {
        assert!(
            scoped(r, &env),
            "an unscoped pod read: {} {}\n{}",
            r.verb,
            r.uri,
            describe(&requests)
        );
    }
    // Every pod read above is scoped: the forecast finds room for the replacements on
    // the other node by reading that node's pods alone, not every pod in the cluster.
    let room = format!("spec.nodeName%3D{}", env.node("node-1"));
    assert!(
        requests
            .iter()
            .any(|r| r.resource == "pods" && r.verb == "list" && r.uri.contains(&room)),
        "the forecast read the other node's pods: {}",
        describe(&requests)
    );
}

#[tokio::test]
async fn status_of_one_node_reads_that_nodes_pods_only() {
    let env = TestEnv::two_nodes_with_web("scoped-status").await;
    let noise = unrelated().await;
    let (kubeconfig, user) = tool_identity(&env);
    let audit = Audit::start();

    let node = env.node("node-1");
    let run = kordon_as(&kubeconfig, &["status", &node, "-o", "json"]);
    run.assert_ok();
    let report: serde_json::Value = serde_json::from_str(&run.stdout).expect("json");
    assert_eq!(report["nodes"][0]["pods"].as_array().map(Vec::len), Some(1));

    let requests = audit.requests_by(&user);
    assert_nothing_unrelated(&requests, &env, &noise);
    let pod_reads: Vec<&Request> = requests.iter().filter(|r| r.resource == "pods").collect();
    assert_eq!(pod_reads.len(), 1, "{}", describe(&requests));
    assert!(scoped(pod_reads[0], &env));
    // The node, its pods, the last roll's lease: the same few requests on any cluster.
    assert!(requests.len() <= 3, "{}", describe(&requests));
}

#[tokio::test]
async fn a_roll_reads_the_cluster_once_and_each_node_by_scope() {
    let mut env = TestEnv::two_nodes_with_web("scoped-roll").await;
    env.add_node("node-3").await;
    let noise = unrelated().await;
    let (kubeconfig, user) = tool_identity(&env);
    let audit = Audit::start();

    let nodes = [env.node("node-1"), env.node("node-2"), env.node("node-3")];
    let lock = format!("--lock-namespace={}", env.ns());
    let mut args = vec!["roll", &lock, "--gate-timeout", "60s"];
    args.extend(nodes.iter().map(String::as_str));
    args.extend(["--", "true"]);
    kordon_as(&kubeconfig, &args).assert_ok();

    let requests = audit.requests_by(&user);
    assert_nothing_unrelated(&requests, &env, &noise);
    let whole_cluster = requests
        .iter()
        .filter(|r| r.resource == "pods" && r.verb == "list" && !scoped(r, &env))
        .collect::<Vec<_>>();
    assert!(
        whole_cluster.iter().all(|r| paged_usage_read(r)),
        "{}",
        describe(&requests)
    );
    // One paged pass for the fleet plan, however many nodes roll.
    assert_eq!(
        whole_cluster
            .iter()
            .filter(|r| r.param("continue").is_none())
            .count(),
        1,
        "{}",
        describe(&requests)
    );
}

#[tokio::test]
async fn the_view_sees_pods_come_and_go_by_watch_events() {
    let mut env = TestEnv::new("view").await;
    let node = env.add_node("node-1").await;
    let conn = Connection::open(&ConnectionOptions {
        kubeconfig: Some(support::kubeconfig().to_path_buf()),
        ..Default::default()
    })
    .await
    .expect("connect");
    let view = View::new(&conn);
    let watched = view
        .pods(&PodScope::Node(NodeName::new(node.as_str())))
        .await
        .expect("watch");
    assert!(watched.state().is_empty());

    let pod = fixtures::bare_pod("late", &node, &PodOptions::default());
    env.pods()
        .create(&PostParams::default(), &pod)
        .await
        .expect("create");
    let names = || {
        watched
            .state()
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect::<Vec<_>>()
    };
    eventually(
        "the view sees the new pod",
        Duration::from_secs(20),
        || async { names() == ["late"] },
    )
    .await;

    // Someone else deletes it.
    env.pods()
        .delete("late", &DeleteParams::default().grace_period(0))
        .await
        .expect("delete");
    eventually(
        "the view sees the pod gone",
        Duration::from_secs(30),
        || async { names().is_empty() },
    )
    .await;
}
