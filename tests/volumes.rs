//! The wait for a node's volumes on the real control plane: with a VolumeAttachment
//! naming the node, its maintenance waits after the drain and runs its work only once
//! the attachment is gone; at the timeout it fails naming the attachment (the node stays
//! cordoned), or goes on when told to, with a Warning Event.
mod support;

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;
use support::nm::{Controller, create, delete, wait_condition};
use support::{TestEnv, eventually};

/// A VolumeAttachment naming the node, as the attach/detach controller writes one for
/// a CSI volume; deleted when dropped (it is cluster-scoped).
struct Attached {
    name: String,
}

impl Attached {
    async fn on(env: &TestEnv, node: &str) -> Self {
        let name = format!("{}-va", env.id);
        let attachment: VolumeAttachment = serde_json::from_value(json!({
            "metadata": { "name": name },
            "spec": {
                "attacher": "csi.kordon.test",
                "nodeName": node,
                "source": { "persistentVolumeName": format!("{}-pv", env.id) },
            },
        }))
        .expect("volume attachment");
        api()
            .await
            .create(&PostParams::default(), &attachment)
            .await
            .expect("create the volume attachment");
        Self { name }
    }

    async fn detach(&self) {
        let _ = api()
            .await
            .delete(&self.name, &DeleteParams::default())
            .await;
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(support::kubeconfig())
            .args([
                "delete",
                "volumeattachment",
                &self.name,
                "--ignore-not-found",
                "--wait=false",
            ])
            .output();
    }
}

async fn api() -> Api<VolumeAttachment> {
    Api::all(support::client().await)
}

fn marker(env: &TestEnv, tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("kordon-volumes-{}-{tag}", env.id))
}

/// Events about the node with this reason.
async fn node_events(node: &str, reason: &str) -> Vec<Event> {
    let events: Api<Event> = Api::namespaced(support::client().await, "default");
    let listed = events.list(&Default::default()).await.expect("list events");
    listed
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(node))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_work_runs_only_once_no_volume_attachment_names_the_node() {
    let env = TestEnv::two_nodes_with_web("volumes-wait").await;
    let node = env.node("node-2");
    let attached = Attached::on(&env, &node).await;
    let ran = marker(&env, "wait");

    let maintain = env
        .kordon()
        .args(["maintain", &node, "--volume-detach-timeout", "2m", "--"])
        .arg("touch")
        .arg(&ran)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start kordon maintain");

    // Drained and in its maintenance phase, the work not run: it waits for the volume.
    eventually("the maintenance phase", Duration::from_secs(60), || async {
        !node_events(&node, "Maintaining").await.is_empty()
    })
    .await;
    assert!(env.is_cordoned(&node).await);
    assert!(env.pods_on(&node).await.is_empty(), "drained");
    assert!(!ran.exists(), "the work ran with a volume attached");

    let detached_at = std::time::SystemTime::now();
    attached.detach().await;
    let out = tokio::task::spawn_blocking(move || maintain.wait_with_output())
        .await
        .expect("join")
        .expect("kordon maintain");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("waiting for no VolumeAttachment to name {node}"))
            && stdout.contains(&format!("no volume attached to {node}")),
        "{stdout}"
    );
    let ran_at = std::fs::metadata(&ran)
        .and_then(|m| m.modified())
        .expect("the work ran");
    let _ = std::fs::remove_file(&ran);
    // A file's time comes from the kernel's coarse clock, up to a tick (4 ms) behind
    // SystemTime::now(): a work that ran right after the detach may look a little older.
    assert!(
        ran_at + Duration::from_millis(20) >= detached_at,
        "the work ran before the volume attachment was gone"
    );
    assert!(!env.is_cordoned(&node).await, "back in service");
}

#[tokio::test]
async fn volumes_left_at_the_timeout_fail_the_maintenance_unless_told_to_proceed() {
    let env = TestEnv::two_nodes_with_web("volumes-timeout").await;
    let node = env.node("node-2");
    let attached = Attached::on(&env, &node).await;
    let ran = marker(&env, "timeout");
    let touch = ran.display().to_string();

    let run = env.run_kordon(&[
        "maintain",
        &node,
        "--volume-detach-timeout",
        "3s",
        "--",
        "touch",
        &touch,
    ]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        run.stderr.contains(&format!(
            "step 3/4 (maintenance) failed: 1 volume is still attached to node {node} after 3s"
        )) && run.stderr.contains(&format!(
            "{} (PersistentVolume {}-pv)",
            attached.name, env.id
        )),
        "{}",
        run.stderr
    );
    assert!(!ran.exists(), "the work did not run");
    assert!(env.is_cordoned(&node).await, "the node stays out");

    let run = env.run_kordon(&[
        "maintain",
        &node,
        "--volume-detach-timeout",
        "2s",
        "--on-detach-timeout",
        "proceed",
        "--",
        "touch",
        &touch,
    ]);
    run.assert_ok();
    assert!(ran.exists(), "the work ran as asked");
    let _ = std::fs::remove_file(&ran);
    assert!(
        run.stdout
            .contains("warning: 1 volume is still attached to node"),
        "{}",
        run.stdout
    );
    eventually("the Warning Event", Duration::from_secs(10), || async {
        node_events(&node, "VolumesStillAttached")
            .await
            .iter()
            .any(|e| e.type_.as_deref() == Some("Warning"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_maintenance_holds_its_step_until_the_volumes_are_detached() {
    let env = TestEnv::two_nodes_with_web("volumes-nm").await;
    let node = env.node("node-1");
    let attached = Attached::on(&env, &node).await;
    let _controller = Controller::start(&env);

    let name = create(
        &env,
        "volumes",
        &node,
        json!({ "step": { "hold": {} }, "volumeDetach": { "timeout": "2m" } }),
    )
    .await;
    let waiting = wait_condition(&name, "Blocked", "AwaitingVolumeDetach").await;
    let status = waiting.status.expect("status");
    assert!(status.volumes_detached_at.is_none(), "{status:?}");
    attached.detach().await;
    let held = wait_condition(&name, "Blocked", "Held").await;
    assert!(
        held.status.and_then(|s| s.volumes_detached_at).is_some(),
        "the status records that the wait passed"
    );
    // A held node counts against every roll's cap: put it back.
    delete(&name).await;
}
