//! The escalation ladder on the real control plane: past `--deadline`, only the pods a
//! rule names (or, when allowed, held pods that are not Ready) are deleted past their
//! budgets, each with its audit trail; `--on-deadline abandon` puts the node back as it
//! was and deletes nothing.
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Api;
use serde_json::{Value, json};
use support::fixtures::{self, PodOptions};
use support::watcher::ReadyWatcher;
use support::{TestEnv, eventually};

/// node-1 and node-2, and `apps` Deployments of two (one pod per node), each under a
/// budget that allows nothing now: `minAvailable: 2` over its pods and one pod on
/// node-2 that never becomes Ready, so 2 of 3 expected are healthy.
async fn held_by_budgets(name: &str, apps: &[&str]) -> (TestEnv, String) {
    let mut env = TestEnv::new(name).await;
    let node = env.add_node("node-1").await;
    let other = env.add_node("node-2").await;
    for app in apps {
        env.create(&fixtures::deployment(env.ns(), app, 2, &fixtures::SPREAD))
            .await;
    }
    env.hold_with_budgets(apps, &other).await;
    (env, node)
}

async fn wait_for_pods(env: &TestEnv, count: usize) {
    let pods = env.pods();
    eventually("every pod to run", Duration::from_secs(30), || async {
        pods.list(&Default::default())
            .await
            .map(|l| l.items.len() == count)
            .unwrap_or(false)
    })
    .await;
}

/// The pod of `app` on the node.
async fn pod_of(env: &TestEnv, node: &str, app: &str) -> Pod {
    env.pods_on(node)
        .await
        .into_iter()
        .find(|p| p.metadata.labels.as_ref().and_then(|l| l.get("app")) == Some(&app.into()))
        .unwrap_or_else(|| panic!("no {app} pod on {node}"))
}

/// Makes the selected pods Running but not Ready, as a failing readiness probe would
/// (KWOK's stages only know Pending and Ready): a pod still Pending is evicted without
/// asking its budget. Waits for KWOK to have given them an IP first, so its
/// create stage does not overwrite this.
async fn running_unready(env: &TestEnv, selector: &str) {
    use kube::api::{ListParams, Patch, PatchParams};
    let pods = env.pods();
    let lp = ListParams::default().labels(selector);
    eventually(
        "the pods to have an IP",
        Duration::from_secs(30),
        || async {
            pods.list(&lp).await.is_ok_and(|l| {
                l.items
                    .iter()
                    .all(|p| p.status.as_ref().is_some_and(|s| s.pod_ip.is_some()))
            })
        },
    )
    .await;
    let status = json!({ "status": {
        "phase": "Running",
        "conditions": [{ "type": "Ready", "status": "False", "reason": "ReadinessProbeFailed" }],
    }});
    for p in pods.list(&lp).await.expect("list pods").items {
        pods.patch_status(&name(&p), &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("patch pod status");
    }
}

fn name(p: &Pod) -> String {
    p.metadata.name.clone().unwrap_or_default()
}

/// Warning Events with this reason about the named object, in a namespace.
async fn warnings(namespace: &str, reason: &str, about: &str) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(support::client().await, namespace);
    let listed = api.list(&Default::default()).await.expect("list events");
    listed
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason) && e.type_.as_deref() == Some("Warning"))
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(about))
        .collect()
}

fn kordon_annotations(env_node: &k8s_openapi::api::core::v1::Node) -> BTreeMap<String, String> {
    env_node
        .metadata
        .annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k.starts_with("kordon.dev/"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_deadline_only_the_pods_a_rule_names_are_deleted_with_an_audit_trail() {
    let (env, node) = held_by_budgets("ladder-del", &["web", "cache"]).await;
    let web = pod_of(&env, &node, "web").await;
    let cache = pod_of(&env, &node, "cache").await;
    let watcher = ReadyWatcher::start(env.pods(), "app=web").await;
    let rule = format!("{}:app=cache", env.ns());

    let run = env.run_kordon(&[
        "drain",
        &node,
        "--deadline",
        "3s",
        "--delete-past-budget",
        &rule,
        "--timeout",
        "25s",
    ]);
    assert_eq!(
        run.code,
        Some(4),
        "web is still held at the timeout: {run:#?}"
    );
    let cache_key = format!("{}/{}", env.ns(), name(&cache));
    assert!(
        run.stdout.contains(&format!(
            "deadline ladder: {cache_key} deleted past its budget (The disruption budget cache-pdb"
        )) && run
            .stdout
            .contains(&format!("allowed by --delete-past-budget {rule}")),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains(&name(&web)) && run.stderr.contains("web-pdb"),
        "the timeout names what still blocks: {}",
        run.stderr
    );

    // Only the pod the rule names is gone; the other is the same pod, Ready throughout.
    let left: Vec<Pod> = env.pods_on(&node).await;
    assert_eq!(
        left.iter()
            .map(|p| p.metadata.uid.clone())
            .collect::<Vec<_>>(),
        vec![web.metadata.uid.clone()],
        "only web's pod is left on {node}"
    );
    assert!(watcher.min_ready() >= 2, "web kept its budget");

    // The audit trail: the node lists the deletion, and both pod and node have a Warning.
    let listed = kordon_annotations(&env.get_node(&node).await);
    let deleted: Value = serde_json::from_str(
        listed
            .get("kordon.dev/deleted-past-budget")
            .expect("the node lists what was deleted past a budget"),
    )
    .expect("json");
    assert_eq!(deleted.as_array().map(Vec::len), Some(1), "{deleted}");
    assert_eq!(deleted[0]["pod"], json!(cache_key));
    assert_eq!(
        deleted[0]["allowedBy"],
        json!({ "by": "rule", "rule": rule })
    );
    assert!(deleted[0]["at"].is_string());
    eventually("the Warning events", Duration::from_secs(10), || async {
        !warnings(env.ns(), "DeletedPastBudget", &name(&cache))
            .await
            .is_empty()
            && !warnings("default", "DeletedPastBudget", &node)
                .await
                .is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandon_at_the_deadline_puts_the_node_back_and_deletes_nothing() {
    let (env, node) = held_by_budgets("ladder-abandon", &["web"]).await;
    let before_node = env.get_node(&node).await;
    let before = env.pod_uids().await;
    let rule = format!("{}:app=nothing-here", env.ns());

    let run = env.run_kordon(&[
        "drain",
        &node,
        "--deadline",
        "3s",
        "--on-deadline",
        "abandon",
        "--delete-past-budget",
        &rule,
        "-o",
        "json",
    ]);
    assert_eq!(run.code, Some(5), "an abandoned drain exits 5: {run:#?}");
    let doc = run.json();
    assert_eq!(
        (&doc["kind"], &doc["reason"], &doc["exit"]),
        (
            &serde_json::json!("Error"),
            &serde_json::json!("Abandoned"),
            &serde_json::json!(5)
        ),
        "{doc:#}"
    );
    assert!(
        run.stderr.contains("abandoned at its 3s deadline")
            && run.stderr.contains("web-pdb")
            && run.stderr.contains("is uncordoned again"),
        "{}",
        run.stderr
    );
    let after_node = env.get_node(&node).await;
    assert!(!env.is_cordoned(&node).await, "kordon's cordon is lifted");
    assert_eq!(
        kordon_annotations(&after_node),
        kordon_annotations(&before_node),
        "no mark of kordon's is left on the node"
    );
    assert_eq!(env.pod_uids().await, before, "no pod was deleted");
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(support::client().await, env.ns());
    let ours = pdbs
        .list(&kube::api::ListParams::default().labels("app.kubernetes.io/managed-by=kordon"))
        .await
        .expect("list budgets");
    assert!(ours.items.is_empty(), "kordon's shared budgets are gone");

    // Someone else's cordon is theirs: an abandoned drain leaves it.
    env.kubectl()
        .args(["cordon", &node])
        .output()
        .expect("kubectl cordon");
    let run = env.run_kordon(&[
        "drain",
        &node,
        "--deadline",
        "2s",
        "--on-deadline",
        "abandon",
    ]);
    assert_eq!(run.code, Some(5), "{run:#?}");
    assert!(run.stderr.contains("stays cordoned"), "{}", run.stderr);
    assert!(env.is_cordoned(&node).await);
    assert_eq!(env.pod_uids().await, before, "no pod was deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_pods_that_are_not_ready_are_named_and_deleted_only_when_allowed() {
    // web (2 Ready) and warming (2 Running, never Ready), one of each per node, under one
    // budget of maxUnavailable 1: 2 of the 3 required are healthy, so nothing may go,
    // and warming's pods are held only because the budget is short already.
    let mut env = TestEnv::new("ladder-unready").await;
    let node = env.add_node("node-1").await;
    env.add_node("node-2").await;
    env.create(&fixtures::deployment(env.ns(), "web", 2, &fixtures::SPREAD))
        .await;
    let never_ready = PodOptions {
        ready_delay: Some("1h"),
        ..fixtures::SPREAD
    };
    env.create(&fixtures::deployment(env.ns(), "warming", 2, &never_ready))
        .await;
    env.create::<PodDisruptionBudget>(&fixtures::pdb_over(
        "all-pdb",
        &["web", "warming"],
        ("maxUnavailable", json!(1)),
    ))
    .await;
    env.wait_ready("app=web", 2).await;
    wait_for_pods(&env, 4).await;
    running_unready(&env, "app=warming").await;
    let web = pod_of(&env, &node, "web").await;
    let warming = pod_of(&env, &node, "warming").await;

    let run = env.run_kordon(&["drain", &node, "--timeout", "5s"]);
    assert_eq!(run.code, Some(4), "{run:#?}");
    assert!(
        run.stderr
            .contains(&format!("{} (not Ready, held by", name(&warming))),
        "the pod that serves nothing is named as such: {}",
        run.stderr
    );
    assert_eq!(env.pods_on(&node).await.len(), 2, "nothing was deleted");

    let run = env.run_kordon(&[
        "drain",
        &node,
        "--deadline",
        "2s",
        "--delete-unhealthy-past-budget",
        "--timeout",
        "20s",
    ]);
    assert_eq!(run.code, Some(4), "web is still held: {run:#?}");
    assert!(
        run.stdout
            .contains("allowed by --delete-unhealthy-past-budget (not Ready)"),
        "{}",
        run.stdout
    );
    let left = env.pods_on(&node).await;
    assert_eq!(
        left.iter()
            .map(|p| p.metadata.uid.clone())
            .collect::<Vec<_>>(),
        vec![web.metadata.uid.clone()],
        "only the Ready pod is left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_roll_abandons_a_node_at_its_deadline_and_puts_it_back() {
    let (env, node) = held_by_budgets("ladder-roll", &["web"]).await;
    let before_node = env.get_node(&node).await;
    let before = env.pod_uids().await;

    let run = env.run_kordon(&[
        "roll",
        &node,
        "--lock-namespace",
        env.ns(),
        "--lock-duration",
        "3s",
        "--deadline",
        "3s",
        "--on-deadline",
        "abandon",
        "--",
        "true",
    ]);
    assert_ne!(run.code, Some(0), "{run:#?}");
    assert!(
        run.stdout.contains("ABANDONED")
            && run
                .stderr
                .contains("abandoned at its drain deadline and put back"),
        "{run:#?}"
    );
    assert!(!env.is_cordoned(&node).await, "the roll's cordon is lifted");
    assert_eq!(
        kordon_annotations(&env.get_node(&node).await),
        kordon_annotations(&before_node),
        "the roll's mark is gone"
    );
    assert_eq!(env.pod_uids().await, before, "no pod was deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ladder_input_is_one_sentence_and_changes_nothing() {
    let (env, node) = held_by_budgets("ladder-bad", &["web"]).await;
    let before = env.pod_uids().await;
    let bad_selector = format!("{}:app in (", env.ns());
    let cases: [(Vec<&str>, &str); 3] = [
        (
            vec!["--deadline", "1s", "--delete-past-budget", &bad_selector],
            "invalid delete-past-budget rule",
        ),
        (
            vec!["--deadline", "2m", "--timeout", "1m"],
            "--deadline 2m is not before --timeout 1m",
        ),
        (
            vec!["--on-deadline", "abandon"],
            "required arguments were not provided",
        ),
    ];
    for (flags, message) in cases {
        let mut args = vec!["drain", node.as_str()];
        args.extend(flags);
        let run = env.run_kordon(&args);
        assert_ne!(run.code, Some(0), "{args:?}: {run:#?}");
        assert!(run.stderr.contains(message), "{args:?}: {}", run.stderr);
        assert!(
            !env.is_cordoned(&node).await,
            "{args:?} left the node as it was"
        );
    }
    assert_eq!(env.pod_uids().await, before);
}

/// The deletion times of the pods matching `selector`, as an independent watch sees
/// them: the API server sets `deletionTimestamp` to the moment the pod's grace ends.
fn deletion_times(
    pods: Api<Pod>,
    selector: &str,
) -> (
    std::sync::Arc<std::sync::Mutex<BTreeMap<String, jiff::Timestamp>>>,
    tokio::task::JoinHandle<()>,
) {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let seen = std::sync::Arc::new(std::sync::Mutex::new(BTreeMap::new()));
    let record = seen.clone();
    let stream = watcher(pods, watcher::Config::default().labels(selector))
        .default_backoff()
        .applied_objects();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            let Ok(p) = event else { continue };
            if let Some(t) = &p.metadata.deletion_timestamp
                && let Ok(mut seen) = record.lock()
            {
                seen.entry(name(&p)).or_insert(t.0);
            }
        }
    });
    (seen, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_deleted_past_its_budget_gets_its_whole_grace_before_the_deadline() {
    // db's pods take 12 s to stop (and KWOK keeps them terminating 10 s); a 16 s
    // deadline must delete the held one at 3 s (its grace and a second to spare), not
    // at 16 s.
    let mut env = TestEnv::new("ladder-grace").await;
    let node = env.add_node("node-1").await;
    let other = env.add_node("node-2").await;
    let long_grace = PodOptions {
        grace_period: Some(12),
        delete_delay: Some("10s"),
        ..fixtures::SPREAD
    };
    env.create(&fixtures::deployment(env.ns(), "db", 2, &long_grace))
        .await;
    env.hold_with_budgets(&["db"], &other).await;
    let db = pod_of(&env, &node, "db").await;
    let (deleted, watch) = deletion_times(env.pods(), "app=db");
    let rule = format!("{}:app=db", env.ns());

    let before = jiff::Timestamp::now();
    let run = env.run_kordon(&[
        "drain",
        &node,
        "--deadline",
        "16s",
        "--delete-past-budget",
        &rule,
        "--timeout",
        "60s",
        "-o",
        "json",
    ]);
    let after = jiff::Timestamp::now();
    watch.abort();
    run.assert_ok();
    let doc = &run.json()[0];
    let escalations = doc["deletedPastBudget"]
        .as_array()
        .expect("deletedPastBudget");
    assert_eq!(escalations.len(), 1, "{doc:#}");
    let e = &escalations[0];
    assert_eq!(e["pod"], json!(format!("{}/{}", env.ns(), name(&db))));
    assert_eq!(e["graceSeconds"], json!(12), "{e:#}");
    let time =
        |v: &Value| -> jiff::Timestamp { v.as_str().expect("a time").parse().expect("RFC 3339") };
    let (at, deadline) = (time(&e["at"]), time(&e["deadline"]));
    // The deadline is 16 s after the drain started, which is inside this run.
    let secs = |s: i64| jiff::SignedDuration::from_secs(s);
    assert!(
        deadline >= before + secs(16) && deadline <= after + secs(16),
        "deadline {deadline} for a run from {before} to {after}"
    );
    assert!(
        at + secs(12) <= deadline,
        "deleted at {at}: its 12 s grace must end by the deadline {deadline}"
    );
    // The API server's own record: the pod's grace ends (its deletionTimestamp) by the
    // deadline, and not needlessly early: the deletion came at the deadline less its
    // grace, not at the start (the timestamp is whole seconds).
    let ends = deleted
        .lock()
        .expect("lock")
        .get(&name(&db))
        .copied()
        .expect("the watch saw the db pod deleted");
    assert!(ends <= deadline, "grace ends {ends}, deadline {deadline}");
    assert!(
        ends >= before + secs(14),
        "grace ends {ends}: deleted before the ladder's moment (run from {before})"
    );
}
