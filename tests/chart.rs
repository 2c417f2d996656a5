//! The Helm chart (deploy/helm/kordon) with the real Helm (testbed/helm.sh): it lints,
//! renders what it promises, installs into the testbed cluster, and its RBAC is enough
//! for the controller to do its work: the controller runs here as a process
//! authenticated as the chart's ServiceAccount (KWOK runs no containers).
mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use kordon::api::node_maintenance::StatusPhase;
use serde_json::{Value, json};
use support::nm::{Controller, create, delete, wait_phase};
use support::watcher::ReadyWatcher;
use support::{ENV_LABEL, TestEnv, eventually};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> String {
    repo().join("deploy/helm/kordon").display().to_string()
}

/// Runs Helm against the test cluster; panics with its output when it fails.
fn helm(args: &[&str]) -> String {
    let out = Command::new(repo().join("testbed/helm.sh"))
        .arg("--kubeconfig")
        .arg(support::kubeconfig())
        .args(args)
        .output()
        .expect("run testbed/helm.sh");
    assert!(
        out.status.success(),
        "helm {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The rendered manifests, as JSON objects.
fn rendered(release: &str, namespace: &str, extra: &[&str]) -> Vec<Value> {
    let chart = chart();
    let mut args = vec!["template", release, &chart, "-n", namespace];
    args.extend_from_slice(extra);
    let yaml = helm(&args);
    yaml.split("\n---")
        .filter_map(|doc| serde_saphyr::from_str::<Value>(doc).ok())
        .filter(|v| v.is_object())
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} rendered"))
}

#[test]
fn the_chart_lints_and_renders_a_restricted_leader_elected_controller() {
    helm(&["lint", "--strict", &chart()]);
    let objects = rendered("kordon", "kordon-system", &[]);
    let deployment = find(&objects, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], json!(2));
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], json!(true));
    let container = &pod["containers"][0];
    assert_eq!(
        container["securityContext"]["readOnlyRootFilesystem"],
        json!(true)
    );
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        json!(false)
    );
    let args: Vec<&str> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        args.contains(&"--leader-election-namespace=kordon-system"),
        "{args:?}"
    );
    assert_eq!(
        container["livenessProbe"]["httpGet"]["path"],
        json!("/healthz")
    );
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"],
        json!("/readyz")
    );
    for kind in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Service",
        "PodDisruptionBudget",
    ] {
        find(&objects, kind);
    }
    assert!(
        !objects.iter().any(|o| o["kind"] == "ServiceMonitor"),
        "the ServiceMonitor is opt-in"
    );
    let with_monitor = rendered(
        "kordon",
        "kordon-system",
        &["--set", "metrics.serviceMonitor.enabled=true"],
    );
    find(&with_monitor, "ServiceMonitor");
    // The chart ships the same CRDs as deploy/crds (which the types generate).
    let shipped = std::fs::read_to_string(repo().join("deploy/helm/kordon/crds/kordon.dev.yaml"));
    let generated = std::fs::read_to_string(repo().join("deploy/crds/kordon.dev.yaml"));
    assert_eq!(
        shipped.expect("chart CRDs"),
        generated.expect("CRDs"),
        "copy deploy/crds/kordon.dev.yaml into deploy/helm/kordon/crds/"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_installs_the_chart_and_its_controller_pods_come_up() {
    let mut env = TestEnv::new("chart-install").await;
    env.add_node("node-1").await;
    env.add_node("node-2").await;
    let release = env.ns().to_string();
    let node_selector = format!(
        "nodeSelector.{}={}",
        ENV_LABEL.replace('.', "\\."),
        env.ns()
    );
    helm(&[
        "install",
        &release,
        &chart(),
        "-n",
        env.ns(),
        "--set",
        &node_selector,
        "--wait",
        "--timeout",
        "120s",
    ]);
    let out = env
        .kubectl()
        .args(["get", "deployment", "-n", env.ns(), "-o", "json"])
        .output()
        .expect("kubectl get");
    let list: Value = serde_json::from_slice(&out.stdout).expect("json");
    let deployment = &list["items"][0];
    assert_eq!(
        deployment["status"]["readyReplicas"],
        json!(2),
        "{deployment}"
    );
    helm(&["uninstall", &release, "-n", env.ns(), "--wait"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_does_its_work_with_exactly_the_charts_rbac() {
    let env = TestEnv::two_nodes_with_web("chart-rbac").await;
    let node = env.node("node-1");
    // The chart's ServiceAccount, ClusterRole and binding, as Helm renders them.
    let rbac: Vec<Value> = rendered(env.ns(), env.ns(), &[])
        .into_iter()
        .filter(|o| {
            ["ServiceAccount", "ClusterRole", "ClusterRoleBinding"]
                .contains(&o["kind"].as_str().unwrap_or_default())
        })
        .collect();
    assert_eq!(rbac.len(), 3);
    let manifest = rbac
        .iter()
        .map(|o| serde_json::to_string(o).expect("json"))
        .collect::<Vec<_>>()
        .join("\n");
    let path = std::env::temp_dir().join(format!("{}-rbac.json", env.ns()));
    std::fs::write(&path, manifest).expect("write");
    let applied = env
        .kubectl()
        .args(["apply", "-f"])
        .arg(&path)
        .output()
        .expect("kubectl apply");
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let account = rbac[0]["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_string();
    let token = env
        .kubectl()
        .args(["create", "token", &account, "-n", env.ns(), "--duration=1h"])
        .output()
        .expect("kubectl create token");
    let token = String::from_utf8_lossy(&token.stdout).trim().to_string();
    let as_chart = support::kubeconfig_with_token(&format!("{}-sa", env.ns()), &token);

    let web = ReadyWatcher::start(env.pods(), "app=web").await;
    let _controller =
        Controller::start_as(&env, &as_chart, &["--leader-election-namespace", env.ns()]);
    let name = create(&env, "rbac", &node, json!({ "step": { "hold": {} } })).await;
    let held = wait_phase(&name, StatusPhase::Maintaining).await;
    assert!(
        env.pods_on(&node).await.is_empty(),
        "drained: {:?}",
        held.status
    );
    assert!(web.min_ready() >= 1);
    delete(&name).await;
    eventually("the node back", Duration::from_secs(30), || async {
        !env.is_cordoned(&node).await
    })
    .await;
    let _ = env
        .kubectl()
        .args(["delete", "clusterrole,clusterrolebinding", "-l"])
        .arg(format!("app.kubernetes.io/instance={}", env.ns()))
        .output();
}
