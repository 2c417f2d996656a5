//! The Helm chart (deploy/helm/kordon) with the real Helm (testbed/helm.sh): it lints,
//! renders what it promises, installs into the testbed cluster, and its RBAC is enough
//! for the controller to do its work: the controller runs here as a process
//! authenticated as the chart's ServiceAccount (KWOK runs no containers).
mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kordon::api::NodeMaintenance;
use kordon::api::maintenance_plan::TRIGGER_LABEL;
use kordon::api::node_maintenance::{HOST_STEP, StatusPhase};
use kube::ResourceExt;
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
    assert!(
        !objects.iter().any(|o| o["kind"] == "DaemonSet"),
        "the agent is opt-in"
    );
    let with_agent = rendered(
        "kordon",
        "kordon-system",
        &[
            "--set",
            "agent.enabled=true",
            "--set",
            "agent.sentinel.files={/var/run/reboot-required}",
        ],
    );
    let agent = &find(&with_agent, "DaemonSet")["spec"]["template"]["spec"];
    assert_eq!(agent["hostPID"], json!(true));
    assert_eq!(agent["volumes"][0]["hostPath"]["path"], json!("/"));
    let container = &agent["containers"][0];
    assert_eq!(container["volumeMounts"][0]["mountPath"], json!("/host"));
    assert_eq!(
        container["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
        json!("spec.nodeName")
    );
    let args = container["args"].as_array().expect("args");
    assert!(
        args.contains(&json!("--sentinel-file=/var/run/reboot-required")),
        "{args:?}"
    );
    for kind in [
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ] {
        find(&with_agent, kind);
    }
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
    let as_chart = env.account_kubeconfig(&account, &[], &format!("{}-sa", env.ns()));

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

/// The chart's agent objects (ServiceAccount, ClusterRole and binding, admission policy
/// and binding, DaemonSet) applied for one test, with the DaemonSet on `node` only; the
/// cluster-scoped ones are deleted when dropped.
struct AgentInstall {
    account: String,
    namespace: String,
}

impl AgentInstall {
    fn apply(env: &TestEnv, node: &str) -> Self {
        // The agent watches NodeMaintenances: their CRD first, on a fresh cluster too.
        let crds = repo().join("deploy/crds/kordon.dev.yaml");
        for args in [
            vec!["apply".to_string(), "-f".into(), crds.display().to_string()],
            ["wait", "--for=condition=Established", "--timeout=60s"]
                .into_iter()
                .map(String::from)
                .chain(["crd/nodemaintenances.kordon.dev".to_string()])
                .collect(),
        ] {
            let out = env.kubectl().args(&args).output().expect("kubectl");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let selector = format!("agent.nodeSelector.kubernetes\\.io/hostname={node}");
        let objects: Vec<Value> = rendered(
            env.ns(),
            env.ns(),
            &["--set", "agent.enabled=true", "--set-string", &selector],
        )
        .into_iter()
        .filter(|o| o["metadata"]["labels"]["app.kubernetes.io/component"] == "agent")
        .collect();
        let manifest = objects
            .iter()
            .map(|o| serde_json::to_string(o).expect("json"))
            .collect::<Vec<_>>()
            .join("\n");
        let path = std::env::temp_dir().join(format!("{}-agent.json", env.ns()));
        std::fs::write(&path, manifest).expect("write");
        let applied = env.kubectl().args(["apply", "-f"]).arg(&path).output();
        let applied = applied.expect("kubectl apply");
        assert!(
            applied.status.success(),
            "{}",
            String::from_utf8_lossy(&applied.stderr)
        );
        let account = find(&objects, "ServiceAccount")["metadata"]["name"]
            .as_str()
            .expect("name")
            .to_string();
        Self {
            account,
            namespace: env.ns().to_string(),
        }
    }

    /// A kubeconfig with the token of the agent's pod on `node`: bound to that pod,
    /// so the API server names the node in each request.
    async fn pod_token(&self, env: &TestEnv, node: &str) -> PathBuf {
        let started = std::time::Instant::now();
        let pod = loop {
            let running = env.pods_on(node).await.into_iter().find(|p| {
                p.spec
                    .as_ref()
                    .and_then(|s| s.service_account_name.as_deref())
                    == Some(self.account.as_str())
                    && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            });
            if let Some(pod) = running {
                break pod.name_any();
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the agent's pod is not running on {node}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        self.token(
            env,
            &["--bound-object-kind", "Pod", "--bound-object-name", &pod],
        )
    }

    /// A kubeconfig with a token of the agent's account; `bound` adds
    /// `kubectl create token` flags.
    fn token(&self, env: &TestEnv, bound: &[&str]) -> PathBuf {
        let name = format!("{}-agent-{}", env.ns(), bound.len());
        env.account_kubeconfig(&self.account, bound, &name)
    }
}

impl Drop for AgentInstall {
    fn drop(&mut self) {
        let _ = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(support::kubeconfig())
            .args([
                "delete",
                "clusterrole,clusterrolebinding,validatingadmissionpolicy,validatingadmissionpolicybinding",
                "-l",
            ])
            .arg(format!("app.kubernetes.io/instance={}", self.namespace))
            .output();
    }
}

/// A merge patch of a node as `client`; the API's message when refused.
async fn patch_node(client: &kube::Client, node: &str, body: Value) -> Result<(), String> {
    let nodes: kube::Api<Node> = kube::Api::all(client.clone());
    let params = kube::api::PatchParams::default();
    match nodes
        .patch(node, &params, &kube::api::Patch::Merge(&body))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) => Err(s.message),
        Err(e) => panic!("patch node {node}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_may_change_only_its_own_node_and_there_only_its_label_and_record() {
    let env = TestEnv::two_nodes_with_web("chart-agent-policy").await;
    let (own, other) = (env.node("node-1"), env.node("node-2"));
    let install = AgentInstall::apply(&env, &own);
    let agent = support::client_from(&install.pod_token(&env, &own).await).await;
    let trigger = |value: &str| json!({ "metadata": { "labels": { TRIGGER_LABEL: value } } });

    // The policy is in force once the API server has loaded it: until then the other
    // node's label would go through.
    eventually("the policy in force", Duration::from_secs(30), || async {
        patch_node(&agent, &other, trigger("1")).await.is_err()
    })
    .await;
    let refused = patch_node(&agent, &other, trigger("1")).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|m| m.contains("only its own node")),
        "{refused:?}"
    );
    assert!(
        !env.get_node(&other)
            .await
            .labels()
            .contains_key(TRIGGER_LABEL),
        "nothing changed on the other node"
    );

    // Its own node: the trigger label and the record annotation, nothing else.
    patch_node(&agent, &own, trigger("1796551200"))
        .await
        .expect("trigger");
    let record = json!({ "metadata": { "annotations": { HOST_STEP: "{}" } } });
    patch_node(&agent, &own, record).await.expect("record");
    patch_node(&agent, &own, trigger(""))
        .await
        .expect("trigger changed");
    let removed = json!({ "metadata": { "labels": { TRIGGER_LABEL: null } } });
    patch_node(&agent, &own, removed)
        .await
        .expect("trigger removed");
    for (body, says) in [
        (json!({ "spec": { "unschedulable": true } }), "spec"),
        (
            json!({ "metadata": { "labels": { "team": "x" } } }),
            "only the label",
        ),
        (
            json!({ "metadata": { "labels": { "type": null } } }),
            "only the label",
        ),
        (
            json!({ "metadata": { "annotations": { "kordon.dev/node-maintenance": "x" } } }),
            "only the annotation",
        ),
    ] {
        let refused = patch_node(&agent, &own, body.clone()).await;
        assert!(
            refused.as_ref().is_err_and(|m| m.contains(says)),
            "{body}: {refused:?}"
        );
    }
    let node = env.get_node(&own).await;
    assert!(
        !node
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false)
    );
    assert_eq!(node.labels().get("type").map(String::as_str), Some("kwok"));
    assert!(!node.labels().contains_key("team"));

    // A token of the account that no pod holds names no node: refused everywhere.
    let unbound = support::client_from(&install.token(&env, &[])).await;
    let refused = patch_node(&unbound, &own, trigger("2")).await;
    assert!(
        refused.as_ref().is_err_and(|m| m.contains("names no node")),
        "{refused:?}"
    );
    // And RBAC: it reads NodeMaintenances but cannot write them.
    let maintenances: kube::Api<NodeMaintenance> = kube::Api::all(agent.clone());
    let selector = format!("spec.nodeName={own}");
    // (A CRD just established may answer 429 "storage is (re)initializing" a moment.)
    let by_node = kube::api::ListParams::default().fields(&selector);
    eventually(
        "the agent's list of NodeMaintenances",
        Duration::from_secs(30),
        || async { maintenances.list(&by_node).await.is_ok() },
    )
    .await;
    let nm: NodeMaintenance = serde_json::from_value(json!({
        "apiVersion": "kordon.dev/v1alpha1", "kind": "NodeMaintenance",
        "metadata": { "name": format!("{}-by-agent", env.ns()) },
        "spec": { "nodeName": own, "step": { "hold": {} } }
    }))
    .expect("nm");
    let created = maintenances
        .create(&kube::api::PostParams::default(), &nm)
        .await;
    assert!(
        matches!(&created, Err(kube::Error::Api(s)) if s.code == 403),
        "{created:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_runs_a_command_step_and_raises_a_trigger_with_only_the_charts_rights() {
    let env = TestEnv::two_nodes_with_web("chart-agent").await;
    let own = env.node("node-1");
    let install = AgentInstall::apply(&env, &own);
    let as_agent = install.pod_token(&env, &own).await;
    let work = std::env::temp_dir().join(format!("{}-host", env.ns()));
    std::fs::create_dir_all(&work).expect("dir");
    let sentinel = work.join("reboot-required");
    let _controller = Controller::start(&env);
    // The agent as a process of this machine, "/" its host's root, authenticated as
    // the agent's pod on `own`.
    let _agent = support::Spawned::new(
        Command::new(env!("CARGO_BIN_EXE_kordon"))
            .arg("--kubeconfig")
            .arg(&as_agent)
            .args([
                "agent",
                "--node",
                &own,
                "--host-root",
                "/",
                "--check-every",
                "1s",
            ])
            .arg("--sentinel-file")
            .arg(&sentinel)
            .env("RUST_LOG", "kordon=debug"),
        "agent",
    );

    // A sentinel raises the trigger, once; it goes when the sentinel does.
    let labelled = |want: bool| {
        let env = &env;
        let own = &own;
        async move { env.get_node(own).await.labels().contains_key(TRIGGER_LABEL) == want }
    };
    std::fs::write(&sentinel, "").expect("sentinel");
    eventually("the trigger label", Duration::from_secs(30), || {
        labelled(true)
    })
    .await;
    std::fs::remove_file(&sentinel).expect("sentinel gone");
    eventually("the trigger label gone", Duration::from_secs(30), || {
        labelled(false)
    })
    .await;

    // A command step: run on the host once the node is drained, its output kept.
    let marker = work.join("upgraded");
    let script = format!("echo upgrading; touch {}; echo done", marker.display());
    let spec =
        json!({ "step": { "command": { "command": ["sh", "-c", script], "timeout": "1m" } } });
    let name = create(&env, "command", &own, spec).await;
    let done = wait_phase(&name, StatusPhase::Done).await;
    let record = done.status.as_ref().and_then(|s| s.host_step.clone());
    let record = record.expect("status.hostStep");
    assert_eq!(record.exit_code, Some(0), "{record:?}");
    assert!(
        record
            .output
            .as_deref()
            .is_some_and(|o| o.contains("upgrading\ndone")),
        "{record:?}"
    );
    assert!(marker.exists(), "the command ran on this host");
    assert!(!env.is_cordoned(&own).await, "back in service");
    delete(&name).await;

    // A command that fails, and one past its timeout: the node stays out, and says why.
    for (script, timeout, says) in [
        (
            "echo broken >&2; exit 3",
            "1m",
            "exited with 3; its output ends: broken",
        ),
        ("sleep 30", "2s", "ran past its timeout of 2s"),
    ] {
        let spec = json!({ "step": { "command": { "command": ["sh", "-c", script], "timeout": timeout } } });
        let name = create(&env, "failing", &own, spec).await;
        let failed = wait_phase(&name, StatusPhase::Failed).await;
        let error = failed.status.as_ref().and_then(|s| s.last_error.clone());
        assert!(
            error.as_deref().is_some_and(|e| e.contains(says)),
            "{error:?}"
        );
        assert!(
            env.is_cordoned(&own).await,
            "a failed step leaves the node out"
        );
        delete(&name).await;
        eventually("the node back", Duration::from_secs(30), || async {
            !env.is_cordoned(&own).await
        })
        .await;
    }
    drop(install);
    let _ = std::fs::remove_dir_all(&work);
}
