//! Refusals that protect the cluster: missing RBAC permissions and a NotReady node are
//! one sentence each, and nothing changes.
mod support;

use k8s_openapi::api::core::v1::{Node, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::TestEnv;

/// A kubeconfig for a service account that may read nodes, pods, workloads and budgets
/// but change nothing.
async fn read_only_kubeconfig(env: &TestEnv) -> (std::path::PathBuf, String) {
    let sa: ServiceAccount =
        serde_json::from_value(json!({ "metadata": { "name": "reader" } })).expect("sa");
    env.create(&sa).await;
    let role: ClusterRole = serde_json::from_value(json!({
        "metadata": { "name": env.id },
        "rules": [
            { "apiGroups": [""], "resources": ["nodes", "pods"], "verbs": ["get", "list", "watch"] },
            { "apiGroups": ["apps"], "resources": ["replicasets", "deployments", "statefulsets"], "verbs": ["get", "list", "watch"] },
            { "apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": ["get", "list", "watch"] },
        ],
    }))
    .expect("role");
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": { "name": env.id },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": env.id },
        "subjects": [{ "kind": "ServiceAccount", "name": "reader", "namespace": env.ns() }],
    }))
    .expect("binding");
    Api::<ClusterRole>::all(env.client.clone())
        .create(&PostParams::default(), &role)
        .await
        .expect("role");
    Api::<ClusterRoleBinding>::all(env.client.clone())
        .create(&PostParams::default(), &binding)
        .await
        .expect("binding");

    let path = env.account_kubeconfig("reader", &[], &format!("kordon-reader-{}", env.id));
    (path, format!("system:serviceaccount:{}:reader", env.ns()))
}

async fn delete_rbac(env: &TestEnv) {
    let _ = Api::<ClusterRoleBinding>::all(env.client.clone())
        .delete(&env.id, &DeleteParams::default())
        .await;
    let _ = Api::<ClusterRole>::all(env.client.clone())
        .delete(&env.id, &DeleteParams::default())
        .await;
}

#[tokio::test]
async fn missing_rbac_permissions_are_named_before_anything_changes() {
    let env = TestEnv::two_nodes_with_web("rbac").await;
    let node = env.node("node-1");
    let before = env.pod_uids().await;
    let (kubeconfig, _user) = read_only_kubeconfig(&env).await;
    let kubeconfig = kubeconfig.display().to_string();

    let drain = support::Run::from(
        std::process::Command::new(env!("CARGO_BIN_EXE_kordon"))
            .args(["--kubeconfig", &kubeconfig, "drain", &node])
            .output()
            .expect("kordon"),
    );
    let cordon = support::Run::from(
        std::process::Command::new(env!("CARGO_BIN_EXE_kordon"))
            .args(["--kubeconfig", &kubeconfig, "cordon", &node])
            .output()
            .expect("kordon"),
    );
    let _ = std::fs::remove_file(&kubeconfig);
    delete_rbac(&env).await;

    assert_eq!(drain.code, Some(1), "{drain:#?}");
    assert!(
        drain.stderr.contains(&format!(
            "permission denied while trying to drain node {node}"
        )),
        "{}",
        drain.stderr
    );
    assert!(
        drain.stderr.contains("`patch` on nodes cluster-wide"),
        "{}",
        drain.stderr
    );
    assert!(
        drain.stderr.contains(&format!(
            "`create` on pods/eviction in namespace {}",
            env.ns()
        )),
        "{}",
        drain.stderr
    );
    assert_eq!(cordon.code, Some(1), "{cordon:#?}");
    assert!(
        cordon.stderr.contains("cannot patch resource \"nodes\""),
        "{}",
        cordon.stderr
    );
    assert!(!env.is_cordoned(&node).await);
    assert_eq!(env.pod_uids().await, before);
}

#[tokio::test]
async fn a_not_ready_node_is_refused_and_left_alone() {
    let mut env = TestEnv::new("notready").await;
    let node = env.add_node("node-1").await;
    let nodes: Api<Node> = Api::all(env.client.clone());
    // KWOK stops reporting for nodes with this annotation; then we say it is NotReady.
    nodes
        .patch(
            &node,
            &PatchParams::default(),
            &Patch::Merge(
                json!({ "metadata": { "annotations": { "kwok.x-k8s.io/status": "custom" } } }),
            ),
        )
        .await
        .expect("annotate");
    let n = nodes.get_status(&node).await.expect("node");
    let mut conditions = n.status.and_then(|s| s.conditions).unwrap_or_default();
    for c in conditions.iter_mut().filter(|c| c.type_ == "Ready") {
        c.status = "False".into();
        c.reason = Some("KubeletNotReady".into());
    }
    nodes
        .patch_status(
            &node,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": { "conditions": conditions } })),
        )
        .await
        .expect("set NotReady");

    for args in [
        vec!["drain", node.as_str()],
        vec!["maintain", node.as_str(), "--", "true"],
    ] {
        let run = env.run_kordon(&args);
        assert_eq!(run.code, Some(1), "{run:#?}");
        assert!(
            run.stderr.contains(&format!("node {node} is NotReady")),
            "{}",
            run.stderr
        );
        assert!(!env.is_cordoned(&node).await);
    }
}
