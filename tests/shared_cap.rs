//! A roll shares its cap with NodeMaintenances that start while it runs (a
//! MaintenancePlan's, someone's own): alone in its test binary, since a roll counts
//! every NodeMaintenance in the cluster.
mod support;

use std::time::Duration;

use serde_json::json;
use support::nm::{Controller, create, delete, wait_condition};
use support::{TestEnv, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_roll_waits_while_a_node_maintenance_fills_its_cap() {
    let mut env = TestEnv::new("shared-cap").await;
    let nodes: Vec<String> = [
        env.add_node("node-1").await,
        env.add_node("node-2").await,
        env.add_node("node-3").await,
    ]
    .into();
    let _controller = Controller::start(&env);
    let roll = env
        .kordon()
        .args([
            "roll",
            "--lock-namespace",
            env.ns(),
            "--max-unavailable",
            "1",
            &nodes[1],
            &nodes[2],
            "--",
            "sleep",
            "4",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the roll");

    // While the roll has node-2 out, a NodeMaintenance takes node-1.
    eventually(
        "the roll to take node-2",
        Duration::from_secs(60),
        || async { env.is_cordoned(&nodes[1]).await },
    )
    .await;
    let held = create(&env, "hold", &nodes[0], json!({ "step": { "hold": {} } })).await;
    wait_condition(&held, "Blocked", "Held").await;
    // node-2 comes back; node-1's maintenance fills the roll's cap of 1, so node-3
    // waits for it.
    eventually("node-2 to be back", Duration::from_secs(60), || async {
        !env.is_cordoned(&nodes[1]).await
    })
    .await;
    for _ in 0..16 {
        assert!(
            !env.is_cordoned(&nodes[2]).await,
            "node-3 waits while a NodeMaintenance has node-1 out"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    delete(&held).await;
    let output = tokio::task::spawn_blocking(move || roll.wait_with_output())
        .await
        .expect("join")
        .expect("the roll's output");
    let said = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{said}");
    assert!(
        said.contains(
            "NodeMaintenances (a MaintenancePlan's, the controller's) have the rest of the cap out"
        ),
        "says why it waits: {said}"
    );
    for node in &nodes {
        assert!(!env.is_cordoned(node).await, "{node} back in service");
    }
}
