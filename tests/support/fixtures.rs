//! One builder per kind of object the tests need, so no test carries its own YAML.
//! Every workload selects its test's nodes by the [`super::ENV_LABEL`] label.
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use serde_json::{Value, json};

use super::ENV_LABEL;

/// A fake node's shape. KWOK keeps capacity, labels and taints as given.
#[derive(Clone)]
pub struct NodeSpec {
    pub cpu: &'static str,
    pub memory: &'static str,
    pub pods: &'static str,
    pub taints: Vec<Value>,
    /// KWOK never posts the node's status after it is Ready (as a real kubelet posts an
    /// unchanged one only every 5 minutes); its Lease is still renewed.
    pub status_frozen: bool,
}

impl Default for NodeSpec {
    fn default() -> Self {
        Self {
            cpu: "4",
            memory: "16Gi",
            pods: "110",
            taints: Vec::new(),
            status_frozen: false,
        }
    }
}

pub fn node(name: &str, env: &str, spec: &NodeSpec) -> Node {
    let resources = json!({ "cpu": spec.cpu, "memory": spec.memory, "pods": spec.pods });
    let mut annotations = json!({ "kwok.x-k8s.io/node": "fake" });
    if spec.status_frozen {
        annotations["kordon.dev/test-status-frozen"] = json!("true");
    }
    serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "annotations": annotations,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "type": "kwok",
                ENV_LABEL: env,
            },
        },
        "spec": { "taints": spec.taints },
        "status": { "allocatable": resources, "capacity": resources },
    }))
    .expect("node fixture")
}

/// Pod-level knobs shared by every workload kind.
#[derive(Clone, Default)]
pub struct PodOptions {
    /// Time from scheduled to Ready (KWOK's pod-ready stage), e.g. "1s".
    pub ready_delay: Option<&'static str>,
    /// Time from deletion to gone, capped by the grace period.
    pub delete_delay: Option<&'static str>,
    pub grace_period: Option<i64>,
    pub empty_dir: bool,
    /// Spread one-per-node-first over the test's schedulable nodes.
    pub spread: bool,
    /// Only this node (full name).
    pub pin_to: Option<String>,
    /// The container's CPU request, e.g. "600m".
    pub cpu: Option<&'static str>,
    /// More annotations on the pod.
    pub annotations: &'static [(&'static str, &'static str)],
}

/// One pod per node first, over the test's schedulable nodes.
pub const SPREAD: PodOptions = PodOptions {
    ready_delay: None,
    delete_delay: None,
    grace_period: None,
    empty_dir: false,
    spread: true,
    pin_to: None,
    cpu: None,
    annotations: &[],
};

/// A pod template running "nginx" on the test's nodes.
pub fn pod_template(env: &str, app: &str, opts: &PodOptions) -> Value {
    let mut annotations = serde_json::Map::new();
    if let Some(d) = opts.ready_delay {
        annotations.insert("pod-ready.stage.kwok.x-k8s.io/delay".into(), d.into());
    }
    if let Some(d) = opts.delete_delay {
        annotations.insert("pod-delete.stage.kwok.x-k8s.io/delay".into(), d.into());
    }
    for (key, value) in opts.annotations {
        annotations.insert(key.to_string(), json!(value));
    }
    let mut container = json!({ "name": "nginx", "image": "nginx:1.27" });
    if let Some(cpu) = opts.cpu {
        container["resources"] = json!({ "requests": { "cpu": cpu } });
    }
    let mut spec = json!({
        "nodeSelector": { ENV_LABEL: env },
        "containers": [],
    });
    if let Some(node) = &opts.pin_to {
        spec["nodeSelector"]["kubernetes.io/hostname"] = json!(node);
    }
    if opts.empty_dir {
        container["volumeMounts"] = json!([{ "name": "cache", "mountPath": "/cache" }]);
        spec["volumes"] = json!([{ "name": "cache", "emptyDir": {} }]);
    }
    spec["containers"] = json!([container]);
    if let Some(g) = opts.grace_period {
        spec["terminationGracePeriodSeconds"] = json!(g);
    }
    if opts.spread {
        // Honor taints, so a cordoned node drops out of the spread and its pods'
        // replacements may all land on the remaining nodes.
        spec["topologySpreadConstraints"] = json!([{
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "DoNotSchedule",
            "nodeTaintsPolicy": "Honor",
            "labelSelector": { "matchLabels": { "app": app } },
        }]);
    }
    json!({
        "metadata": { "labels": { "app": app }, "annotations": annotations },
        "spec": spec,
    })
}

pub fn deployment(env: &str, name: &str, replicas: i32, opts: &PodOptions) -> Deployment {
    serde_json::from_value(json!({
        "metadata": { "name": name, "labels": { "app": name } },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": pod_template(env, name, opts),
        },
    }))
    .expect("deployment fixture")
}

/// A PodDisruptionBudget over `app=<app>`; `budget` is e.g. `("maxUnavailable", 1)`.
pub fn pdb(name: &str, app: &str, budget: (&str, Value)) -> PodDisruptionBudget {
    pdb_over(name, &[app], budget)
}

/// A PodDisruptionBudget over the pods of several apps.
pub fn pdb_over(name: &str, apps: &[&str], budget: (&str, Value)) -> PodDisruptionBudget {
    let mut spec = json!({ "selector": { "matchExpressions": [
        { "key": "app", "operator": "In", "values": apps },
    ] } });
    spec[budget.0] = budget.1;
    serde_json::from_value(json!({ "metadata": { "name": name }, "spec": spec }))
        .expect("pdb fixture")
}

/// A bare pod (no controller) pinned to `node`.
pub fn bare_pod(name: &str, node: &str, opts: &PodOptions) -> Pod {
    let mut pod = pod_template("", name, opts);
    pod["metadata"]["name"] = json!(name);
    pod["spec"]["nodeName"] = json!(node);
    pod["spec"]
        .as_object_mut()
        .expect("spec")
        .remove("nodeSelector");
    serde_json::from_value(pod).expect("pod fixture")
}

pub fn daemonset(env: &str, name: &str) -> k8s_openapi::api::apps::v1::DaemonSet {
    serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": {
            "selector": { "matchLabels": { "app": name } },
            "template": pod_template(env, name, &PodOptions::default()),
        },
    }))
    .expect("daemonset fixture")
}

pub fn statefulset(
    env: &str,
    name: &str,
    replicas: i32,
    opts: &PodOptions,
) -> k8s_openapi::api::apps::v1::StatefulSet {
    serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "selector": { "matchLabels": { "app": name } },
            "template": pod_template(env, name, opts),
        },
    }))
    .expect("statefulset fixture")
}

/// A Job with one pod; KWOK completes Job pods a second after they run.
pub fn job(env: &str, name: &str) -> k8s_openapi::api::batch::v1::Job {
    let mut template = pod_template(env, name, &PodOptions::default());
    template["spec"]["restartPolicy"] = json!("Never");
    serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": { "template": template, "backoffLimit": 0 },
    }))
    .expect("job fixture")
}
