//! Out of external load balancers before the drain, on the real control plane: with
//! `--exclude-from-load-balancers` (and by default in a NodeMaintenance) the node
//! carries `node.kubernetes.io/exclude-from-external-load-balancers` before its first
//! pod is evicted, the drain gives the load balancers their deregistration delay when a
//! Service of type LoadBalancer exists, and the label is gone once the node is back.
//! Someone else's label is neither waited for nor lifted. An independent watch times
//! the label and the evictions.
mod support;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use support::TestEnv;
use support::nm::{Controller, create, delete, wait_condition};

const LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";
const RECORD: &str = "kordon.dev/excluded-from-load-balancers-at";

/// When a watched object first showed `holds`, as this process's clock saw it.
struct First {
    at: Arc<Mutex<Option<Instant>>>,
    task: tokio::task::JoinHandle<()>,
}

impl First {
    fn watch<K>(api: Api<K>, config: watcher::Config, holds: fn(&K) -> bool) -> Self
    where
        K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
        K::DynamicType: Default,
    {
        let at = Arc::new(Mutex::new(None));
        let record = at.clone();
        let stream = watcher(api, config).default_backoff().applied_objects();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                if let Ok(k) = event
                    && holds(&k)
                    && let Ok(mut first) = record.lock()
                {
                    first.get_or_insert_with(Instant::now);
                }
            }
        });
        Self { at, task }
    }

    fn at(&self) -> Option<Instant> {
        *self.at.lock().expect("lock")
    }
}

impl Drop for First {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn excluded(node: &Node) -> bool {
    node.metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(LABEL))
}

fn leaving(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// The label's value and kordon's record on the node now.
async fn exclusion(env: &TestEnv, node: &str) -> (Option<String>, bool) {
    let n = env.get_node(node).await;
    let label = n.metadata.labels.unwrap_or_default().remove(LABEL);
    let record = n
        .metadata
        .annotations
        .unwrap_or_default()
        .contains_key(RECORD);
    (label, record)
}

fn label(env: &TestEnv, node: &str, value: &str) {
    env.label_node(node, &[&format!("{LABEL}={value}")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_leaves_load_balancers_before_its_pods_and_comes_back_at_uncordon() {
    let env = TestEnv::two_nodes_with_web("lb-drain").await;
    let (node, other) = (env.node("node-2"), env.node("node-1"));

    // No Service of type LoadBalancer in the cluster (an earlier run's may still be
    // going with its namespace): nothing to deregister from, so no wait; the label
    // still goes on first.
    let services = Api::<Service>::all(env.client.clone());
    support::eventually(
        "no Service of type LoadBalancer",
        std::time::Duration::from_secs(120),
        || async {
            services.list(&Default::default()).await.is_ok_and(|l| {
                l.items.iter().all(|s| {
                    s.spec.as_ref().and_then(|s| s.type_.as_deref()) != Some("LoadBalancer")
                })
            })
        },
    )
    .await;
    let run = env.run_kordon(&["drain", &other, "--exclude-from-load-balancers"]);
    run.assert_ok();
    assert!(
        run.stderr.contains("no Service of type LoadBalancer")
            || run.stdout.contains("no Service of type LoadBalancer"),
        "{run:#?}"
    );
    assert_eq!(exclusion(&env, &other).await, (Some("true".into()), true));
    env.run_kordon(&["uncordon", &other]).assert_ok();
    assert_eq!(
        exclusion(&env, &other).await,
        (None, false),
        "lifted at uncordon"
    );
    env.wait_ready("app=web", 2).await;

    // With one, the drain waits its deregistration delay between the label and the
    // first eviction.
    let lb: Service = serde_json::from_value(json!({
        "metadata": { "name": "web-lb", "namespace": env.ns() },
        "spec": { "type": "LoadBalancer", "selector": { "app": "web" }, "ports": [{ "port": 80 }] }
    }))
    .expect("service");
    env.create(&lb).await;
    let by_name = watcher::Config::default().fields(&format!("metadata.name={node}"));
    let label_seen = First::watch(Api::<Node>::all(env.client.clone()), by_name, excluded);
    let on_node = watcher::Config::default()
        .labels("app=web")
        .fields(&format!("spec.nodeName={node}"));
    let evicted = First::watch(env.pods(), on_node, leaving);
    let delay = std::time::Duration::from_secs(4);
    let run = env.run_kordon(&[
        "drain",
        &node,
        "--exclude-from-load-balancers",
        "--deregistration-delay",
        "4s",
    ]);
    run.assert_ok();
    let said = format!("{}{}", run.stdout, run.stderr);
    assert!(
        said.contains("waiting 4s for them to deregister the node"),
        "{run:#?}"
    );
    let (label_at, evicted_at) = (label_seen.at(), evicted.at());
    let (Some(label_at), Some(evicted_at)) = (label_at, evicted_at) else {
        panic!("the watch saw the label at {label_at:?} and the first eviction at {evicted_at:?}");
    };
    // Both times come from one watch each, with the same latency; the wait is a lower
    // bound that no scheduling delay can shorten.
    assert!(
        evicted_at.duration_since(label_at) >= delay - std::time::Duration::from_millis(500),
        "the first pod left {:?} after the label, before the 4s delay",
        evicted_at.duration_since(label_at)
    );
    env.run_kordon(&["uncordon", &node]).assert_ok();
    assert_eq!(exclusion(&env, &node).await, (None, false));
    Api::<Service>::namespaced(env.client.clone(), env.ns())
        .delete("web-lb", &Default::default())
        .await
        .expect("delete the Service");
}

#[tokio::test]
async fn someone_elses_label_is_kept_and_kordons_goes_even_under_their_cordon() {
    let mut env = TestEnv::two_nodes_with_web("lb-theirs").await;
    let node = env.node("node-2");
    label(&env, &node, "ops");
    let run = env.run_kordon(&[
        "maintain",
        &node,
        "--exclude-from-load-balancers",
        "--",
        "true",
    ]);
    run.assert_ok();
    let said = format!("{}{}", run.stdout, run.stderr);
    assert!(said.contains("by someone else's"), "{run:#?}");
    assert_eq!(
        exclusion(&env, &node).await,
        (Some("ops".into()), false),
        "theirs stays"
    );

    // Their cordon on another node stays after maintain; kordon's label does not.
    let third = env.add_node("node-3").await;
    let out = env
        .kubectl()
        .args(["cordon", &third])
        .output()
        .expect("kubectl cordon");
    assert!(out.status.success(), "{out:?}");
    env.run_kordon(&[
        "maintain",
        &third,
        "--exclude-from-load-balancers",
        "--",
        "true",
    ])
    .assert_ok();
    assert!(env.is_cordoned(&third).await, "their cordon stays");
    assert_eq!(
        exclusion(&env, &third).await,
        (None, false),
        "kordon's label went"
    );
}

#[tokio::test]
async fn a_roll_excludes_each_node_while_it_is_out() {
    let env = TestEnv::two_nodes_with_web("lb-roll").await;
    let node = env.node("node-2");
    let file = std::env::temp_dir().join(format!("kordon-lb-{}", env.id));
    let script = format!(
        "kubectl --kubeconfig {} get node \"$KORDON_NODE\" -o jsonpath='{{.metadata.labels}}' > {}",
        support::kubeconfig().display(),
        file.display()
    );
    env.run_kordon(&[
        "roll",
        &node,
        "--exclude-from-load-balancers",
        // Another test's Service of type LoadBalancer may be there meanwhile.
        "--deregistration-delay",
        "1s",
        "--lock-namespace",
        env.ns(),
        "--",
        "sh",
        "-c",
        &script,
    ])
    .assert_ok();
    let during: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("the command ran"))
            .expect("labels");
    let _ = std::fs::remove_file(&file);
    assert_eq!(
        during[LABEL], "true",
        "out of load balancers during the work: {during}"
    );
    assert_eq!(
        exclusion(&env, &node).await,
        (None, false),
        "back after the roll"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_maintenance_excludes_by_default_and_withdrawing_lifts_it() {
    let env = TestEnv::two_nodes_with_web("lb-nm").await;
    let node = env.node("node-1");
    let _controller = Controller::start(&env);
    // Another test's Service of type LoadBalancer may be there meanwhile.
    let spec = json!({ "step": { "hold": {} }, "drain": { "deregistrationDelay": "1s" } });
    let name = create(&env, "lb", &node, spec).await;
    let held = wait_condition(&name, "Blocked", "Held").await;
    assert_eq!(exclusion(&env, &node).await, (Some("true".into()), true));
    let said = held
        .status
        .as_ref()
        .and_then(|s| s.drain.as_ref())
        .and_then(|d| d.load_balancers.clone());
    assert!(
        said.as_deref()
            .is_some_and(|s| s.contains("out of external load balancers")),
        "the status says so: {said:?}"
    );
    delete(&name).await;
    assert_eq!(exclusion(&env, &node).await, (None, false));
}
