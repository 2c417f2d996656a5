//! Running `kordon controller` for one test and working with its NodeMaintenance
//! objects. Each test's controller only sees that test's objects (by label).
use std::path::Path;
use std::time::Duration;

use kordon::api::NodeMaintenance;
use kordon::api::node_maintenance::StatusPhase;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::{Value, json};

use super::{ENV_LABEL, Spawned, TestEnv, eventually};

/// The controller for one test's objects; killed when dropped.
pub struct Controller(pub Spawned);

impl Controller {
    pub fn start(env: &TestEnv) -> Self {
        Self::start_with(env, &[])
    }

    pub fn start_with(env: &TestEnv, args: &[&str]) -> Self {
        Self::start_as(env, super::kubeconfig(), args)
    }

    /// Runs it authenticated by `kubeconfig` (e.g. as the chart's service account).
    pub fn start_as(env: &TestEnv, kubeconfig: &Path, args: &[&str]) -> Self {
        // Tests start controllers in parallel: on a fresh cluster two applies may both
        // try to create the CRDs, and the later one is told AlreadyExists; applied
        // again, it finds them.
        let apply = || {
            env.kubectl()
                .args(["apply", "-f"])
                .arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/deploy/crds/kordon.dev.yaml"
                ))
                .output()
                .expect("kubectl apply")
        };
        let mut crds = apply();
        for _ in 0..3 {
            if crds.status.success()
                || !String::from_utf8_lossy(&crds.stderr).contains("AlreadyExists")
            {
                break;
            }
            crds = apply();
        }
        assert!(
            crds.status.success(),
            "{}",
            String::from_utf8_lossy(&crds.stderr)
        );
        let established = env
            .kubectl()
            .args(["wait", "--for=condition=Established", "--timeout=60s"])
            .arg("crd/nodemaintenances.kordon.dev")
            .output()
            .expect("kubectl wait");
        assert!(
            established.status.success(),
            "{}",
            String::from_utf8_lossy(&established.stderr)
        );
        // Its log, for when a test fails: target/tmp/controller.log.
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_kordon"));
        command
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["-v"])
            .env("RUST_LOG", "kordon=debug")
            .args([
                "controller",
                "--selector",
                &format!("{ENV_LABEL}={}", env.ns()),
            ])
            .args(args);
        Self(Spawned::new(&mut command, "controller"))
    }
}

pub async fn api() -> Api<NodeMaintenance> {
    Api::all(super::client().await)
}

/// Creates a NodeMaintenance of this test for `node` with `step` (and more `spec`).
pub async fn create(env: &TestEnv, name: &str, node: &str, spec: Value) -> String {
    let name = format!("{}-{name}", env.ns());
    let mut body = json!({
        "apiVersion": "kordon.dev/v1alpha1",
        "kind": "NodeMaintenance",
        "metadata": { "name": name, "labels": { ENV_LABEL: env.ns() } },
        "spec": { "nodeName": node, "reason": "kernel update" },
    });
    if let (Some(target), Some(extra)) = (body["spec"].as_object_mut(), spec.as_object()) {
        target.extend(extra.clone());
    }
    let nm: NodeMaintenance = serde_json::from_value(body).expect("NodeMaintenance");
    api()
        .await
        .create(&PostParams::default(), &nm)
        .await
        .expect("create");
    name
}

pub async fn phase_of(name: &str) -> Option<StatusPhase> {
    let nm = api().await.get(name).await.ok()?;
    nm.status?.phase
}

pub async fn wait_phase(name: &str, phase: StatusPhase) -> NodeMaintenance {
    eventually(
        &format!("{name} to be {phase:?}"),
        Duration::from_secs(60),
        || async { phase_of(name).await == Some(phase) },
    )
    .await;
    api().await.get(name).await.expect("get")
}

pub fn condition(nm: &NodeMaintenance, type_: &str) -> (String, String) {
    nm.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .map(|c| (c.status.clone(), c.reason.clone()))
        .unwrap_or_default()
}

/// Deletes the object and waits until the controller has let it go.
pub async fn delete(name: &str) {
    let _ = api().await.delete(name, &DeleteParams::default()).await;
    eventually(
        &format!("{name} to be gone"),
        Duration::from_secs(60),
        || async { api().await.get_opt(name).await.ok().flatten().is_none() },
    )
    .await;
}

/// Waits until condition `type_` is True with `reason`, and returns the object then.
pub async fn wait_condition(name: &str, type_: &str, reason: &str) -> NodeMaintenance {
    eventually(
        &format!("{name} to have {type_}={reason}"),
        Duration::from_secs(60),
        || async {
            let Ok(nm) = api().await.get(name).await else {
                return false;
            };
            condition(&nm, type_) == ("True".to_string(), reason.to_string())
        },
    )
    .await;
    api().await.get(name).await.expect("get")
}

/// Another actor says the `external` step is done: sets its condition on the object
/// as it is once it awaits that.
pub async fn complete_external(name: &str) {
    let waiting = wait_condition(name, "Blocked", "AwaitingExternal").await;
    let mut conditions = waiting.status.map(|s| s.conditions).unwrap_or_default();
    conditions.push(
        serde_json::from_value(json!({
            "type": "MaintenanceComplete", "status": "True", "reason": "DriverUpdated",
            "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z",
        }))
        .expect("condition"),
    );
    api()
        .await
        .patch_status(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({ "status": { "conditions": conditions } })),
        )
        .await
        .expect("set the condition");
}
