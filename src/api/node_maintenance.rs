//! `NodeMaintenance` (kordon.dev/v1alpha1, cluster-scoped): "take this node out of
//! service, do this, bring it back", written as an object and carried out by
//! `kordon controller` with the CLI's guard, plan, ladder and state machine.
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};

use crate::phase::Phase;

use crate::policy::{AfterDeadline, BudgetMode, OnDetachTimeout};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// On a node while a NodeMaintenance holds it out of service: the object's name.
/// `roll` and `maintain` leave such a node alone, and a roll counts it against its cap.
pub const HELD_BY: &str = "kordon.dev/node-maintenance";

/// The NodeMaintenance holding the node out of service, if one does.
pub fn holder_of(node: &k8s_openapi::api::core::v1::Node) -> Option<&str> {
    node.metadata
        .annotations
        .as_ref()?
        .get(HELD_BY)
        .map(String::as_str)
}

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "kordon.dev",
    version = "v1alpha1",
    kind = "NodeMaintenance",
    plural = "nodemaintenances",
    shortname = "nm",
    status = "NodeMaintenanceStatus",
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".spec.nodeName"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Evicted","type":"integer","jsonPath":".status.drain.evicted"}"#,
    printcolumn = r#"{"name":"Waiting","type":"integer","jsonPath":".status.drain.waiting"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".spec.reason","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    // The node agent watches only its own node's: `fieldSelector=spec.nodeName=NODE`.
    selectable = ".spec.nodeName"
)]
#[serde(rename_all = "camelCase")]
pub struct NodeMaintenanceSpec {
    /// The node to take out of service.
    #[x_kube(validation = Rule::new("self == oldSelf").message("nodeName is immutable: create another NodeMaintenance"))]
    pub node_name: String,
    /// Why, for people: shown in Events on the node and by `kubectl get -o wide`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How the node is drained: the CLI's drain flags.
    #[serde(default)]
    #[x_kube(validation = Rule::new(super::duration::DRAIN_RULE).message(super::duration::DRAIN_RULE_MESSAGE))]
    pub drain: DrainPolicy,
    /// What happens while the node is empty; exactly one.
    pub step: MaintenanceStep,
    /// How long each health gate may take before the maintenance fails: the node's
    /// DaemonSet pods Ready again before it takes pods, then every workload its drain
    /// touched back at full Ready with its budgets allowing disruptions (what a plan
    /// waits for before the next node), e.g. "10m".
    #[serde(default = "gate_timeout")]
    #[x_kube(validation = Rule::new(super::duration::RULE).message(super::duration::RULE_MESSAGE))]
    pub gate_timeout: String,
    /// The wait, after the drain and before the step, until no VolumeAttachment names
    /// the node.
    #[serde(default)]
    pub volume_detach: VolumeDetach,
}

pub fn gate_timeout() -> String {
    "10m".into()
}

/// The wait for the node's volumes (`--volume-detach-timeout`, `--on-detach-timeout`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeDetach {
    /// How long to wait, e.g. "5m"; "0s" does not wait.
    #[serde(default = "detach_timeout")]
    #[x_kube(validation = Rule::new(super::duration::RULE).message(super::duration::RULE_MESSAGE))]
    pub timeout: String,
    /// `Fail` (the node stays cordoned) or `Proceed` (a Warning Event, then the step).
    #[serde(default)]
    pub on_timeout: OnDetachTimeout,
}

fn detach_timeout() -> String {
    "5m".into()
}

impl Default for VolumeDetach {
    fn default() -> Self {
        Self {
            timeout: detach_timeout(),
            on_timeout: OnDetachTimeout::Fail,
        }
    }
}

/// The CLI's drain flags, as fields.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct DrainPolicy {
    /// Leave DaemonSet pods in place (`--ignore-daemonsets`). Default true: a
    /// declarative maintenance has no one to ask.
    pub ignore_daemon_sets: bool,
    /// Evict pods with emptyDir volumes; their data is lost.
    pub delete_empty_dir_data: bool,
    /// Evict pods no controller manages; they are gone for good.
    pub force: bool,
    /// Evict pods other tools mark never to disrupt.
    pub ignore_do_not_disrupt: bool,
    /// Only drain pods matching this label selector.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<String>,
    /// Evict DaemonSet pods too, after every other pod, with the node tainted
    /// `kordon.dev/draining:NoSchedule` until it is back (`--evict-daemonsets`). A pod
    /// whose DaemonSet tolerates that taint stays. Left out when false, so a
    /// MaintenancePlan's round (a hash of its drain policy) stays what it was.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub evict_daemon_sets: bool,
    /// The tiers pods are evicted in, as KEP-4212's drainPlan names them
    /// (`--drain-order`): a pod takes the largest `order` of the entries that select it
    /// (0 for none), lower orders go first, and within one order lower priority first.
    /// A tier starts once every pod of the one before is gone.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub drain_order: Vec<DrainOrderEntry>,
    /// Seconds each pod gets to terminate; unset uses the pod's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grace_period_seconds: Option<u32>,
    /// Give up draining after this long, e.g. "30m"; unset waits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// `Implicit` (PodDisruptionBudgets plus an implicit budget per workload without
    /// one) or `PdbOnly` (as kubectl drain).
    pub budget: BudgetMode,
    /// Restart a lone Deployment replica's Deployment so its replacement is Ready first.
    pub surge: bool,
    /// Accept that a workload may drop to zero Ready pods.
    pub allow_disruption: bool,
    /// Drain even when some replacements fit on no other node.
    pub allow_pending: bool,
    /// What happens to pods a budget still holds at a deadline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ladder: Option<LadderPolicy>,
    /// Take the node out of external load balancers before the drain
    /// (`node.kubernetes.io/exclude-from-external-load-balancers`), back at uncordon.
    /// Default true: the controller always puts the node back, so the label cannot be
    /// left behind.
    pub exclude_from_load_balancers: bool,
    /// How long load balancers get to deregister the node before the first eviction,
    /// when a Service of type LoadBalancer exists, e.g. "30s".
    pub deregistration_delay: String,
}

impl Default for DrainPolicy {
    fn default() -> Self {
        Self {
            ignore_daemon_sets: true,
            delete_empty_dir_data: false,
            force: false,
            ignore_do_not_disrupt: false,
            pod_selector: None,
            evict_daemon_sets: false,
            drain_order: Vec::new(),
            grace_period_seconds: None,
            timeout: None,
            budget: BudgetMode::Implicit,
            surge: false,
            allow_disruption: false,
            allow_pending: false,
            ladder: None,
            exclude_from_load_balancers: true,
            deregistration_delay: "30s".into(),
        }
    }
}

/// One tier of the drain order (`--drain-order SELECTOR=N`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrainOrderEntry {
    /// The pods this entry orders, as a Deployment's selector is written.
    pub pod_selector: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    /// Lower goes first; pods no entry selects are 0.
    pub order: i32,
}

/// The escalation ladder (`--deadline` and its rules).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LadderPolicy {
    /// e.g. "20m".
    pub deadline: String,
    /// NAMESPACE, NAMESPACE:SELECTOR or *:SELECTOR.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delete_past_budget: Vec<String>,
    #[serde(default)]
    pub delete_unhealthy_past_budget: bool,
    #[serde(default)]
    pub on_deadline: AfterDeadline,
}

/// What happens while the node is empty. Exactly one member is set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.hold), has(self.job), has(self.reboot), has(self.command), has(self.external)].filter(x, x).size() == 1").message("set exactly one of hold, job, reboot, command, external"))]
pub struct MaintenanceStep {
    /// The node stays cordoned and drained while the object exists; deleting the
    /// object brings it back (medik8s' model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<HoldStep>,
    /// A pod run as a Job on the node (system-upgrade-controller's model): done when the
    /// Job succeeds, failed (the node stays cordoned) when it fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobStep>,
    /// Done when the node has rebooted (its bootID changed) and is Ready again. kordon's
    /// node agent (`kordon agent`), where it runs, reboots the node; without it,
    /// something else must.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot: Option<RebootStep>,
    /// A command on the node's host, run by kordon's node agent (`kordon agent`, the
    /// chart's `agent.enabled`): done when it exits 0, failed (the node stays cordoned)
    /// otherwise; its exit code and the tail of its output go into `status.hostStep`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandStep>,
    /// Done when another actor sets the condition `conditionType` to True on this
    /// object's status (a driver operator, an OS updater).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalStep>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct HoldStep {}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobStep {
    /// Where the Job runs.
    pub namespace: String,
    /// The pod that does the work. kordon pins it to the node (`nodeName`), lets it
    /// tolerate the cordon, and defaults `restartPolicy` to Never. An OS update needs a
    /// privileged pod with the host's filesystem (hostPID, a hostPath of /), in a
    /// namespace whose Pod Security level allows it.
    #[schemars(schema_with = "any_object")]
    pub template: k8s_openapi::api::core::v1::PodTemplateSpec,
    /// Retries before the Job counts as failed (its backoffLimit; default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_limit: Option<i32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RebootStep {
    /// How long the reboot may take, e.g. "30m"; unset waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(super::duration::RULE).message(super::duration::RULE_MESSAGE))]
    pub timeout: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommandStep {
    /// The program and its arguments, run in the host's root file system (e.g.
    /// `["sh", "-c", "apt-get update && apt-get -y upgrade"]`).
    #[x_kube(validation = Rule::new("self.size() > 0").message("name the program to run"))]
    pub command: Vec<String>,
    /// How long it may run before the agent stops it and the step fails, e.g. "30m".
    #[serde(default = "CommandStep::default_timeout")]
    #[x_kube(validation = Rule::new(super::duration::RULE).message(super::duration::RULE_MESSAGE))]
    pub timeout: String,
}

impl CommandStep {
    fn default_timeout() -> String {
        "30m".into()
    }

    /// `timeout` read, or what is wrong with it, named by its field.
    pub fn time_limit(&self) -> Result<std::time::Duration, String> {
        super::duration::parse(&self.timeout).map_err(|e| format!("spec.step.command.timeout: {e}"))
    }
}

/// On a node: what kordon's node agent did there for a NodeMaintenance's step, as
/// JSON ([`HostStep`]). The agent writes it on its own node, the only object it may
/// change; the controller reads it and copies it into the NodeMaintenance's status.
pub const HOST_STEP: &str = "kordon.dev/host-step";

/// What the node agent did for one NodeMaintenance's step on the host.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostStep {
    /// The NodeMaintenance it acted for, by uid: a step is run once per object, and a
    /// record of an earlier one means nothing to the next.
    pub uid: String,
    /// `reboot` or `command`.
    pub step: HostStepKind,
    pub started_at: Time,
    /// Unset while it runs (or, for a reboot, when the node went down under it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why it has no exit code: it could not start, ran past its timeout, or the agent
    /// restarted while it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The last lines of its output (stdout and stderr), at most 2 KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum HostStepKind {
    Reboot,
    Command,
}

impl HostStep {
    /// The record on `node` for the NodeMaintenance with `uid`, if the agent wrote one.
    pub fn on(node: &k8s_openapi::api::core::v1::Node, uid: &str) -> Option<Self> {
        let raw = node.metadata.annotations.as_ref()?.get(HOST_STEP)?;
        serde_json::from_str::<Self>(raw)
            .ok()
            .filter(|s| s.uid == uid)
    }

    /// How it ended: `None` while it runs, `Err` with why when it failed.
    pub fn outcome(&self) -> Option<Result<(), String>> {
        let tail = self
            .output
            .as_deref()
            .filter(|o| !o.trim().is_empty())
            .map(|o| format!("; its output ends: {}", o.trim()))
            .unwrap_or_default();
        match (&self.error, self.exit_code) {
            (Some(error), _) => Some(Err(format!("{error}{tail}"))),
            (None, Some(0)) => Some(Ok(())),
            (None, Some(code)) => Some(Err(format!("exited with {code}{tail}"))),
            (None, None) => None,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalStep {
    /// The condition the other actor sets to True when its work is done.
    #[serde(default = "ExternalStep::default_condition")]
    pub condition_type: String,
}

impl ExternalStep {
    pub const DEFAULT_CONDITION: &str = "MaintenanceComplete";
    fn default_condition() -> String {
        Self::DEFAULT_CONDITION.to_string()
    }
}

impl Default for ExternalStep {
    fn default() -> Self {
        Self {
            condition_type: Self::default_condition(),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeMaintenanceStatus {
    /// Pending, Draining, Maintaining, AwaitingReady, Verifying, Done, Failed or
    /// Abandoned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<StatusPhase>,
    /// `Progressing`, `Blocked`, `Complete`, and the external step's condition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Someone else had cordoned the node before: it stays cordoned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub was_unschedulable: Option<bool>,
    /// What kordon's node agent did on the host for a `reboot` or `command` step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_step: Option<HostStep>,
    /// The node's bootID when the maintenance step began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id_before: Option<String>,
    /// The node's Ready heartbeat when the maintenance step began: a stale Ready from
    /// before the step does not count it back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_before: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainProgress>,
    /// Why the drain was refused before anything changed (pods that need a flag,
    /// replacements that fit nowhere).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<String>,
    /// When no VolumeAttachment named the node any more (or the wait gave up and the
    /// step went on, as `volumeDetach.onTimeout: Proceed` allows): the step's work
    /// starts only after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes_detached_at: Option<Time>,
    /// The workloads whose pods the drain evicts: the last gate waits for each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workloads: Vec<crate::workload::WorkloadId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_since: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum StatusPhase {
    /// Not started: waiting for its turn or for a refusal to be resolved.
    Pending,
    Draining,
    Maintaining,
    AwaitingReady,
    Verifying,
    Done,
    /// A step failed; the node stays cordoned (see lastError).
    Failed,
    /// The drain's ladder gave up at its deadline; the node is back as it was.
    Abandoned,
}

impl NodeMaintenance {
    /// Whether it has its node out of service now: under way, or failed while the node
    /// still carries its name (a failure at the last gate left the node back in
    /// service). `node` is needed only for a failed one. Pending has nothing out yet.
    pub fn has_node_out(&self, node: Option<&k8s_openapi::api::core::v1::Node>) -> bool {
        match self.status.as_ref().and_then(|s| s.phase) {
            Some(StatusPhase::Failed) => {
                let name = self.metadata.name.as_deref();
                node.and_then(holder_of).is_some_and(|h| Some(h) == name)
            }
            Some(StatusPhase::Pending) | None => false,
            Some(p) => !p.finished(),
        }
    }
}

impl StatusPhase {
    /// No more work: the object only waits to be deleted.
    pub fn finished(self) -> bool {
        matches!(self, Self::Done | Self::Failed | Self::Abandoned)
    }

    /// Where the node is in its maintenance, while under way or done.
    pub fn progress(self) -> Option<Phase> {
        match self {
            Self::Draining => Some(Phase::Draining),
            Self::Maintaining => Some(Phase::Maintaining),
            Self::AwaitingReady => Some(Phase::AwaitingReady),
            Self::Verifying => Some(Phase::Verifying),
            Self::Done => Some(Phase::Done),
            Self::Pending | Self::Failed | Self::Abandoned => None,
        }
    }
}

/// The status shows the phases of the one driver (`workflow::driver`), before
/// `Pending` and beside `Failed` and `Abandoned`.
impl From<Phase> for StatusPhase {
    fn from(p: Phase) -> Self {
        match p {
            Phase::Draining => Self::Draining,
            Phase::Maintaining => Self::Maintaining,
            Phase::AwaitingReady => Self::AwaitingReady,
            Phase::Verifying => Self::Verifying,
            Phase::Done => Self::Done,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrainProgress {
    /// Pods the drain evicts.
    pub total: u32,
    pub evicted: u32,
    /// Pods a budget holds now.
    pub waiting: u32,
    /// Each held pod with what holds it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<HeldPod>,
    /// The node out of external load balancers, and what the drain waits for before
    /// it evicts (`spec.drain.excludeFromLoadBalancers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancers: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeldPod {
    pub pod: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<String>,
    /// e.g. "The disruption budget web needs 3 healthy pods and has 3 currently".
    pub detail: String,
}

/// A whole pod template is validated by the API server when the Job is created, not in
/// this CRD's schema (where it would be thousands of lines).
fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// Conditions as a map keyed by type, so the external actor's condition and kordon's
/// own are each owned by their writer.
fn conditions_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = generator.subschema_for::<Vec<Condition>>();
    if let Some(object) = schema.as_object_mut() {
        object.insert("x-kubernetes-list-type".into(), "map".into());
        object.insert(
            "x-kubernetes-list-map-keys".into(),
            serde_json::json!(["type"]),
        );
    }
    schema
}
