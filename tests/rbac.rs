//! The roles kordon ships (`deploy/rbac/`) are enough for their commands, and each
//! right in them is one kordon needs: take one away and the command refuses up front,
//! naming it, and changes nothing.
mod support;

use std::collections::BTreeSet;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::Api;
use kube::api::ListParams;
use support::TestEnv;
use support::rbac::{bind, shipped, without};

/// What a refused command must leave as it found it.
struct Before {
    uids: Vec<String>,
}

impl Before {
    async fn take(env: &TestEnv) -> Self {
        Self {
            uids: env.pod_uids().await,
        }
    }

    /// The nodes schedulable and without kordon's annotations, the same pods, and no
    /// budget or lease made in the namespace.
    async fn assert_unchanged(&self, env: &TestEnv, nodes: &[&str]) {
        for node in nodes {
            assert!(!env.is_cordoned(node).await, "{node} was cordoned");
            let marks: Vec<String> = env
                .get_node(node)
                .await
                .metadata
                .annotations
                .unwrap_or_default()
                .into_keys()
                .filter(|k| k.starts_with("kordon.dev/"))
                .collect();
            assert!(marks.is_empty(), "{node} carries {marks:?}");
        }
        assert_eq!(env.pod_uids().await, self.uids, "pods were replaced");
        let lp = ListParams::default();
        let budgets = Api::<PodDisruptionBudget>::namespaced(env.client.clone(), env.ns());
        assert!(budgets.list(&lp).await.expect("budgets").items.is_empty());
        let leases = Api::<Lease>::namespaced(env.client.clone(), env.ns());
        assert!(leases.list(&lp).await.expect("leases").items.is_empty());
    }
}

/// The sentence of a refusal for want of exactly one right.
fn refused_for(run: &support::Run, action: &str, right: &str) {
    assert_eq!(run.code, Some(1), "{run:#?}");
    let sentence =
        format!("permission denied while trying to {action}: missing {right}; ask a cluster admin");
    assert!(run.stderr.contains(&sentence), "{}", run.stderr);
}

#[tokio::test]
async fn the_drain_role_cordons_drains_and_uncordons() {
    let env = TestEnv::two_nodes_with_web("rbac-drain").await;
    let (n1, n2) = (env.node("node-1"), env.node("node-2"));
    let sa = bind(&env, "drainer", shipped("kordon-drain")).await;

    sa.kordon(&["cordon", &n2]).assert_ok();
    assert!(env.is_cordoned(&n2).await);
    sa.kordon(&["uncordon", &n2]).assert_ok();
    assert!(!env.is_cordoned(&n2).await);

    // web has no budget of its own: the drain shares its implicit one as a real
    // PodDisruptionBudget owned by a Lease, which takes the role's budget and lease rights.
    let before = env.wait_ready("app=web", 2).await;
    sa.kordon(&["drain", &n1]).assert_ok();
    assert!(env.is_cordoned(&n1).await);
    assert!(env.pods_on(&n1).await.is_empty());
    let after = env.wait_ready("app=web", 2).await;
    let uids = |pods: &[k8s_openapi::api::core::v1::Pod]| -> BTreeSet<String> {
        pods.iter().filter_map(|p| p.metadata.uid.clone()).collect()
    };
    assert_ne!(uids(&before), uids(&after), "the pod on {n1} was replaced");
    sa.kordon(&["uncordon", &n1]).assert_ok();
    assert!(!env.is_cordoned(&n1).await);
}

#[tokio::test]
async fn without_creating_evictions_drain_refuses_up_front() {
    let env = TestEnv::two_nodes_with_web("rbac-noevict").await;
    let node = env.node("node-1");
    let role = without(shipped("kordon-drain"), "", "pods/eviction", "create");
    let sa = bind(&env, "drainer", role).await;
    let before = Before::take(&env).await;

    let run = sa.kordon(&["drain", &node]);

    let right = format!("`create` on pods/eviction in namespace {}", env.ns());
    refused_for(&run, &format!("drain node {node}"), &right);
    before
        .assert_unchanged(&env, &[&node, &env.node("node-2")])
        .await;
}

/// No string reaches a shell: the command and its arguments are run as given, with
/// the node's name in `KORDON_NODE` only.
#[tokio::test]
async fn the_drain_role_maintains_and_the_command_runs_without_a_shell() {
    let env = TestEnv::two_nodes_with_web("rbac-maintain").await;
    let node = env.node("node-2");
    let sa = bind(&env, "maintainer", shipped("kordon-drain")).await;

    let run = sa.kordon(&[
        "maintain",
        &node,
        "--",
        "printf",
        "<%s>",
        "$KORDON_NODE;id",
        "$(id)",
        "`id` && id",
    ]);

    run.assert_ok();
    assert!(
        run.stdout.contains("<$KORDON_NODE;id><$(id)><`id` && id>"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("uid="), "{}", run.stdout);
    assert!(!env.is_cordoned(&node).await);
    env.wait_ready("app=web", 2).await;
}

#[tokio::test]
async fn without_watching_nodes_maintain_refuses_before_the_drain() {
    let env = TestEnv::two_nodes_with_web("rbac-nowatch").await;
    let node = env.node("node-2");
    let role = without(shipped("kordon-drain"), "", "nodes", "watch");
    let sa = bind(&env, "maintainer", role).await;
    let before = Before::take(&env).await;
    let marker = std::env::temp_dir().join(format!("{}-ran", env.ns()));

    let touch = marker.display().to_string();
    let run = sa.kordon(&["maintain", &node, "--", "touch", &touch]);

    refused_for(
        &run,
        &format!("maintain node {node}"),
        "`watch` on nodes cluster-wide",
    );
    assert!(!marker.exists(), "the maintenance command ran");
    before
        .assert_unchanged(&env, &[&node, &env.node("node-1")])
        .await;
}

fn roll_args<'a>(env: &'a TestEnv, nodes: &'a [String]) -> Vec<&'a str> {
    let mut args = vec![
        "roll",
        "--lock-namespace",
        env.ns(),
        "--lock-duration",
        "3s",
    ];
    args.extend(nodes.iter().map(String::as_str));
    args.extend(["--", "true"]);
    args
}

#[tokio::test]
async fn the_roll_role_rolls_two_nodes() {
    let env = TestEnv::two_nodes_with_web("rbac-roll").await;
    let nodes = [env.node("node-1"), env.node("node-2")];
    let sa = bind(&env, "roller", shipped("kordon-roll")).await;

    sa.kordon(&roll_args(&env, &nodes)).assert_ok();

    for node in &nodes {
        assert!(!env.is_cordoned(node).await, "{node} left cordoned");
    }
    env.wait_ready("app=web", 2).await;
    // The run is recorded on its lock, which the roll role may read back.
    let status = sa.kordon(&["status", "--lock-namespace", env.ns(), &nodes[0]]);
    status.assert_ok();
}

#[tokio::test]
async fn without_renewing_the_lock_roll_refuses_up_front() {
    let env = TestEnv::two_nodes_with_web("rbac-nolock").await;
    let nodes = [env.node("node-1"), env.node("node-2")];
    let role = without(
        shipped("kordon-roll"),
        "coordination.k8s.io",
        "leases",
        "update",
    );
    let sa = bind(&env, "roller", role).await;
    let before = Before::take(&env).await;

    let run = sa.kordon(&roll_args(&env, &nodes));

    let right = format!("`update` on leases in namespace {}", env.ns());
    refused_for(&run, "roll nodes", &right);
    before.assert_unchanged(&env, &[&nodes[0], &nodes[1]]).await;
}

#[tokio::test]
async fn the_readonly_role_shows_status_and_plans_but_changes_nothing() {
    let env = TestEnv::two_nodes_with_web("rbac-read").await;
    let node = env.node("node-1");
    let sa = bind(&env, "reader", shipped("kordon-readonly")).await;
    let before = Before::take(&env).await;

    let status = sa.kordon(&["-o", "json", "status", &node]);
    status.assert_ok();
    let report: serde_json::Value = serde_json::from_str(&status.stdout).expect("json");
    assert!(report.to_string().contains(&node), "{report}");
    sa.kordon(&["status"]).assert_ok();
    sa.kordon(&["plan", &node]).assert_ok();

    let cordon = sa.kordon(&["cordon", &node]);
    assert_eq!(cordon.code, Some(1), "{cordon:#?}");
    assert!(
        cordon.stderr.contains("permission denied"),
        "{}",
        cordon.stderr
    );
    let drain = sa.kordon(&["drain", &node]);
    assert_eq!(drain.code, Some(1), "{drain:#?}");
    assert!(
        drain.stderr.contains("`patch` on nodes"),
        "{}",
        drain.stderr
    );
    before
        .assert_unchanged(&env, &[&node, &env.node("node-2")])
        .await;
}

#[tokio::test]
async fn without_listing_pods_status_names_the_right() {
    let env = TestEnv::two_nodes_with_web("rbac-nolist").await;
    let node = env.node("node-1");
    let role = without(shipped("kordon-readonly"), "", "pods", "list");
    let sa = bind(&env, "reader", role).await;

    let run = sa.kordon(&["status", &node]);

    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        run.stderr.contains(&format!(
            "permission denied while trying to list pods on node {node}"
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("cannot list resource \"pods\""),
        "{}",
        run.stderr
    );
}

/// Each node of a roll is a maintain: the roll role grants all the drain role does.
#[test]
fn the_roll_role_grants_everything_the_drain_role_does() {
    fn rights(role: &ClusterRole) -> BTreeSet<(String, String, String)> {
        let mut rights = BTreeSet::new();
        for rule in role.rules.iter().flatten() {
            assert!(rule.resource_names.is_none(), "{rule:?}");
            for group in rule.api_groups.iter().flatten() {
                for resource in rule.resources.iter().flatten() {
                    for verb in &rule.verbs {
                        rights.insert((group.clone(), resource.clone(), verb.clone()));
                    }
                }
            }
        }
        rights
    }
    let drain = rights(&shipped("kordon-drain"));
    let roll = rights(&shipped("kordon-roll"));
    let missing: Vec<_> = drain.difference(&roll).collect();
    assert!(missing.is_empty(), "kordon-roll lacks {missing:?}");
}
