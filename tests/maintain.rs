//! `kordon maintain`: the four steps in one command, on the real control plane.
mod support;

use support::TestEnv;

#[tokio::test]
async fn maintain_drains_runs_the_command_with_the_node_in_its_environment_and_uncordons() {
    let env = TestEnv::two_nodes_with_web("maintain").await;
    let node = env.node("node-2");
    let marker = std::env::temp_dir().join(format!("kordon-{}", env.id));
    let script = format!("echo \"$KORDON_NODE\" > {}", marker.display());

    let run = env.run_kordon(&["maintain", &node, "-o", "json", "--", "sh", "-c", &script]);
    run.assert_ok();
    let seen = std::fs::read_to_string(&marker).expect("the command ran");
    let _ = std::fs::remove_file(&marker);
    assert_eq!(seen.trim(), node, "KORDON_NODE names the node");
    let report = run.json();
    assert_eq!(report["node"], node.as_str(), "{report:#}");
    assert_eq!(report["finalState"], "Ready", "{report:#}");
    assert_eq!(
        report["drain"]["evicted"].as_array().map(Vec::len),
        Some(1),
        "web's pod on the node: {report:#}"
    );
    assert!(!env.is_cordoned(&node).await);
    assert!(env.pods_on(&node).await.is_empty());
    env.wait_ready("app=web", 2).await;
}

/// What a person at the terminal reads: the four steps in order (the node back Ready
/// before the uncordon), then the result.
#[tokio::test]
async fn maintain_prints_its_four_steps_in_order_then_the_result() {
    let env = TestEnv::two_nodes_with_web("maintsteps").await;
    let node = env.node("node-2");
    let run = env.run_kordon(&["maintain", &node, "--", "true"]);
    run.assert_ok();
    let mut rest = run.stdout.as_str();
    for step in [
        "== step 1/4 (cordon)",
        "== step 2/4 (drain)",
        "== step 3/4 (maintenance)",
        &format!("waiting for {node} to be Ready with a fresh heartbeat"),
        "== step 4/4 (uncordon)",
        &format!("{node}: maintained; now Ready"),
    ] {
        let at = rest
            .find(step)
            .unwrap_or_else(|| panic!("{step:?} next in:\n{}", run.stdout));
        rest = &rest[at + step.len()..];
    }
}

#[tokio::test]
async fn a_failing_command_stops_the_run_and_leaves_the_node_cordoned() {
    let env = TestEnv::two_nodes_with_web("maintfail").await;
    let node = env.node("node-2");
    let run = env.run_kordon(&["maintain", &node, "--", "sh", "-c", "exit 7"]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        run.stderr.contains(&format!(
            "step 3/4 (maintenance) failed: command sh exited with exit status: 7; node {node} is left Ready,SchedulingDisabled"
        )),
        "{}",
        run.stderr
    );
    assert!(env.is_cordoned(&node).await);

    let run = env.run_kordon(&["maintain", &node, "--uncordon-on-failure", "--", "false"]);
    assert_eq!(run.code, Some(1));
    assert!(
        !env.is_cordoned(&node).await,
        "--uncordon-on-failure brings it back"
    );
}

#[tokio::test]
async fn expect_reboot_waits_for_a_new_boot_id() {
    let env = TestEnv::two_nodes_with_web("reboot").await;
    let node = env.node("node-2");
    let kubeconfig = support::kubeconfig().display().to_string();

    // No reboot happened: the node never counts as back.
    let run = env.run_kordon(&[
        "maintain",
        &node,
        "--expect-reboot",
        "--ready-timeout",
        "3s",
        "--",
        "true",
    ]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        run.stderr.contains("did not become Ready within 3s"),
        "{}",
        run.stderr
    );
    assert!(env.is_cordoned(&node).await);

    // The "reboot" gives the node a new bootID, as a kubelet reports after a restart.
    let reboot = format!(
        "kubectl --kubeconfig {kubeconfig} patch node \"$KORDON_NODE\" --subresource=status \
         -p '{{\"status\":{{\"nodeInfo\":{{\"bootID\":\"boot-after\"}}}}}}'"
    );
    let run = env.run_kordon(&[
        "maintain",
        &node,
        "--expect-reboot",
        "--",
        "sh",
        "-c",
        &reboot,
    ]);
    run.assert_ok();
    assert!(!env.is_cordoned(&node).await);
}

#[tokio::test]
async fn maintain_needs_a_command_or_manual() {
    let env = TestEnv::two_nodes_with_web("maintargs").await;
    let node = env.node("node-2");
    let run = env.run_kordon(&["maintain", &node]);
    assert_eq!(run.code, Some(2), "bad usage");
    assert!(
        run.stderr.contains("say what the maintenance is"),
        "{}",
        run.stderr
    );
    let run = env.run_kordon(&["maintain", &node, "--manual"]);
    assert_eq!(run.code, Some(2), "bad usage");
    assert!(
        run.stderr.contains("standard input is not one"),
        "{}",
        run.stderr
    );
    assert!(!env.is_cordoned(&node).await);
}

#[tokio::test]
async fn a_node_someone_else_cordoned_stays_cordoned() {
    let env = TestEnv::two_nodes_with_web("othercordon").await;
    let node = env.node("node-2");
    let out = env
        .kubectl()
        .args(["cordon", &node])
        .output()
        .expect("kubectl");
    assert!(out.status.success());
    let run = env.run_kordon(&["maintain", &node, "--", "true"]);
    run.assert_ok();
    assert!(
        run.stdout.contains("was cordoned before kordon started"),
        "{}",
        run.stdout
    );
    assert!(env.is_cordoned(&node).await);
    assert!(env.pods_on(&node).await.is_empty());
}

#[tokio::test]
async fn manual_mode_waits_for_enter_on_a_terminal() {
    let env = TestEnv::two_nodes_with_web("manual").await;
    let node = env.node("node-2");
    // `script` gives kordon a pseudo-terminal and feeds it our Enter.
    let command = format!(
        "{} --kubeconfig {} maintain {node} --manual",
        env!("CARGO_BIN_EXE_kordon"),
        support::kubeconfig().display()
    );
    let mut child = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("script");
    let cluster = env.client.clone();
    let drained = node.clone();
    support::eventually(
        "the node to be drained and cordoned",
        std::time::Duration::from_secs(60),
        || {
            let api: kube::Api<k8s_openapi::api::core::v1::Pod> =
                kube::Api::namespaced(cluster.clone(), env.ns());
            let drained = drained.clone();
            async move {
                let lp =
                    kube::api::ListParams::default().fields(&format!("spec.nodeName={drained}"));
                api.list(&lp)
                    .await
                    .map(|l| l.items.is_empty())
                    .unwrap_or(false)
            }
        },
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert!(env.is_cordoned(&node).await, "paused while cordoned");
    use std::io::Write;
    child
        .stdin
        .as_mut()
        .expect("stdin")
        .write_all(b"\n")
        .expect("enter");
    let out = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("press Enter"), "{stdout}");
    assert!(!env.is_cordoned(&node).await);
}

/// The health gates, as a roll has them. A PodDisruptionBudget lets the drain end with
/// 1 of web's 2 pods Ready, and the replacement takes 20 s to be Ready: `maintain`
/// returns only once web is back at both, unless `--skip-gate workloads`.
#[tokio::test]
async fn maintain_waits_for_the_drained_workloads_to_be_back_unless_the_gate_is_skipped() {
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    use support::fixtures::{self, PodOptions};

    let mut env = TestEnv::new("maintgate").await;
    let n1 = env.add_node("node-1").await;
    let n2 = env.add_node("node-2").await;
    let slow = PodOptions {
        ready_delay: Some("20s"),
        spread: true,
        ..Default::default()
    };
    env.create(&fixtures::deployment(env.ns(), "web", 2, &slow))
        .await;
    env.create::<PodDisruptionBudget>(&fixtures::pdb(
        "web-pdb",
        "web",
        ("maxUnavailable", serde_json::json!(1)),
    ))
    .await;
    env.wait_ready("app=web", 2).await;
    let ready = || async {
        let pods = env
            .pods()
            .list(&Default::default())
            .await
            .expect("list pods");
        pods.items.iter().filter(|p| support::pod_ready(p)).count()
    };

    let run = env.run_kordon(&["maintain", &n2, "--", "true"]);
    run.assert_ok();
    assert!(
        run.stdout
            .contains("waiting for the drained workloads to be back at full Ready"),
        "{}",
        run.stdout
    );
    assert_eq!(ready().await, 2, "maintain returned with web back at both");

    let run = env.run_kordon(&["maintain", &n1, "--skip-gate", "workloads", "--", "true"]);
    run.assert_ok();
    assert!(!run.stdout.contains("drained workloads"), "{}", run.stdout);
    assert_eq!(
        ready().await,
        1,
        "without the gate, maintain returned before the replacement was Ready"
    );
    env.wait_ready("app=web", 2).await;
}
