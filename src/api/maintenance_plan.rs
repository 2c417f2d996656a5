//! `MaintenancePlan` (kordon.dev/v1alpha1, cluster-scoped): the declarative `roll`.
//! The controller maintains the selected nodes a few at a time, within caps over the
//! whole fleet and per topology domain (a zone, a rack), by creating one
//! NodeMaintenance per node it starts.
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::node_maintenance::{DrainPolicy, MaintenanceStep, StatusPhase};

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kordon.dev",
    version = "v1alpha1",
    kind = "MaintenancePlan",
    plural = "maintenanceplans",
    shortname = "mp",
    status = "MaintenancePlanStatus",
    printcolumn = r#"{"name":"Selector","type":"string","jsonPath":".spec.nodeSelector"}"#,
    printcolumn = r#"{"name":"Done","type":"integer","jsonPath":".status.done"}"#,
    printcolumn = r#"{"name":"Active","type":"integer","jsonPath":".status.active"}"#,
    printcolumn = r#"{"name":"Failed","type":"integer","jsonPath":".status.failed"}"#,
    printcolumn = r#"{"name":"Waiting","type":"string","jsonPath":".status.waiting"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("self.metadata.name.size() <= 63").message("a MaintenancePlan's name is a label value on its NodeMaintenances: at most 63 characters")
)]
#[serde(rename_all = "camelCase")]
pub struct MaintenancePlanSpec {
    /// The nodes to maintain, as a label selector (`kubectl get nodes -l` syntax).
    pub node_selector: String,
    /// Only the nodes that say they need maintenance: those `nodeSelector` matches that
    /// carry the label `kordon.dev/maintenance-needed` (its value: when the need arose,
    /// as Unix seconds, set by kordon's node agent or by hand). Each value is maintained
    /// once: a node is done once its NodeMaintenance made for its current value is Done,
    /// and a new value starts it again. The plan is complete while every such node is
    /// done, and takes up the next as soon as a node is labelled.
    #[serde(default)]
    pub triggered: bool,
    /// How many selected nodes may be out of service at once: "2" or "25%" (rounded
    /// down, at least 1). Nodes out for any reason count: another plan's, a
    /// NodeMaintenance's, a `kordon roll`'s, and (see `countOthersOut`) someone else's.
    #[serde(default = "one")]
    pub max_unavailable: String,
    /// At most this many nodes out at once per value of a node label, e.g.
    /// `{"topology.kubernetes.io/zone": 1}`: never two in one zone.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub max_unavailable_per: BTreeMap<String, u32>,
    /// Only start nodes inside one of these windows (the CLI's `--window` syntax, e.g.
    /// "Mon-Fri 02:00-05:00 Europe/Berlin", with dates it does not open on:
    /// "... except 2026-12-24,2026-12-28..2027-01-01"); none: any time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<String>,
    /// Wait this long after a node is done before the next starts, e.g. "5m".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(super::duration::RULE).message(super::duration::RULE_MESSAGE))]
    pub pause_between: Option<String>,
    /// At most `starts` node starts in any `period` (the CLI's `--max-per PERIOD=N`),
    /// counted from the plan's NodeMaintenances of every round, so it holds across
    /// controller restarts; once spent, the plan waits until the oldest start in the
    /// period ages out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per: Option<MaxPer>,
    /// Finish every node of one domain (a value of the label `key`) before any node of
    /// the next starts (the CLI's `--sequence KEY=V1,V2`): the domains in `order` first,
    /// then the others by name, then nodes without the label. A failed node counts as
    /// finished (`maxFailures` decides whether the plan goes on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<SequenceSpec>,
    /// Stop starting nodes once this many have failed in the current round.
    #[serde(default = "one_failure")]
    pub max_failures: u32,
    /// No new node starts while set; nodes under way go on.
    #[serde(default)]
    pub paused: bool,
    /// How each node is drained.
    #[serde(default)]
    #[x_kube(validation = Rule::new(super::duration::DRAIN_RULE).message(super::duration::DRAIN_RULE_MESSAGE))]
    pub drain: DrainPolicy,
    /// What happens on each node while it is empty.
    pub step: MaintenanceStep,
    /// How long each node's health gates may take (see NodeMaintenance); a node whose
    /// workloads do not recover in time fails, and counts toward `maxFailures`.
    #[serde(default = "super::node_maintenance::gate_timeout")]
    #[x_kube(validation = Rule::new(super::duration::RULE).message(super::duration::RULE_MESSAGE))]
    pub gate_timeout: String,
    /// The wait for each node's volumes before its step (see NodeMaintenance).
    #[serde(default)]
    pub volume_detach: super::node_maintenance::VolumeDetach,
    /// Selected nodes someone else has out of service (cordoned, NotReady, tainted
    /// NoSchedule or NoExecute by another actor) count against the caps, and are not
    /// started until they are back: the fleet is as short of them as of a node kordon
    /// drains. `false`: only kordon's own count, and such a node is maintained in its
    /// turn (its cordon kept).
    #[serde(default = "yes")]
    pub count_others_out: bool,
    /// The selected nodes still to start carry a `PreferNoSchedule` taint
    /// (`kordon.dev/pending-maintenance`), so the pods the plan evicts land on nodes that
    /// are done where they can, not on one whose own drain would move them again.
    #[serde(default = "yes")]
    pub taint_pending: bool,
    /// A webhook told, as JSON, when a node starts, a budget holds one of its pods, a
    /// node fails, the plan stops starting nodes (a window, a pause, its failures) and
    /// the round completes (the roll's `--notify`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Notify>,
    /// Metric gates (the roll's `--prometheus`/`--pause-on-query` and
    /// `--alertmanager`/`--pause-on-alerts`): no new node starts while a query returns any
    /// series or a matching alert is active, nor while either cannot answer; asked before
    /// each start and during `pauseBetween`. Nodes under way go on. A new value of the
    /// annotation `kordon.dev/approve` on the plan lets one node start despite them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gates: Option<GatesSpec>,
}

/// The metric gates of a plan: a Prometheus, an Alertmanager, or both.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatesSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alertmanager: Option<AlertmanagerSpec>,
}

/// A Prometheus and the queries that hold the plan while they return any series.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusSpec {
    /// The base URL (http:// or https://), e.g. http://prometheus.monitoring:9090.
    pub url: String,
    /// PromQL expressions read as alert rules, e.g. "rate(http_errors_total[1m]) > 0.05":
    /// any series in the answer holds the plan.
    #[x_kube(validation = Rule::new("self.size() > 0").message("gates.prometheus.pauseOnQuery needs at least one query"))]
    pub pause_on_query: Vec<String>,
}

/// An Alertmanager and the label matchers whose active alerts hold the plan.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertmanagerSpec {
    /// The base URL (http:// or https://), e.g. http://alertmanager.monitoring:9093.
    pub url: String,
    /// Sets of matchers, e.g. "severity=critical,team=shop" (also !=, =~, !~): an active
    /// alert (not silenced, not inhibited) matching every matcher of any set holds the plan.
    #[x_kube(validation = Rule::new("self.size() > 0").message("gates.alertmanager.pauseOnAlerts needs at least one set of matchers"))]
    pub pause_on_alerts: Vec<String>,
}

/// The annotation on a plan whose new value lets one node start despite a failing gate.
pub const APPROVE_ANNOTATION: &str = "kordon.dev/approve";

/// On a plan's NodeMaintenance that was Done when a pod on its node crashed or failed
/// during the soak that followed (`pauseBetween`): what happened. The plan counts the
/// node as failed (toward `maxFailures`); the node stays in service.
pub const SOAK_FAILED: &str = "kordon.dev/soak-failed";

/// On a node that needs maintenance, with the time the need was first seen (Unix
/// seconds) as its value: set by kordon's node agent from a sentinel, or by a person.
/// A plan with `triggered` selects only the nodes that carry it, and maintains each
/// value once; a later need gets a new value.
pub const TRIGGER_LABEL: &str = "kordon.dev/maintenance-needed";

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Notify {
    /// An http:// or https:// URL; each notification is one POST, retried on a
    /// connection error, a 5xx or a 429.
    pub url: String,
}

/// A rate budget: at most `starts` node starts in any `period`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MaxPer {
    /// The period, e.g. "24h".
    #[x_kube(validation = Rule::new(PERIOD_RULE).message(PERIOD_RULE_MESSAGE))]
    pub period: String,
    /// How many nodes may start in any such period: at least 1.
    #[x_kube(validation = Rule::new("self >= 1").message("maxPer.starts must be at least 1"))]
    pub starts: u32,
}

const PERIOD_RULE: &str = "duration(self) > duration('0s')";
const PERIOD_RULE_MESSAGE: &str = "a period such as 24h or 90m, more than 0";

/// A sequence of topology domains.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SequenceSpec {
    /// The node label whose values are the domains, e.g. topology.kubernetes.io/zone.
    #[x_kube(validation = Rule::new("self.size() > 0").message("sequence.key names a node label"))]
    pub key: String,
    /// The domains that go first, in this order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub order: Vec<String>,
}

fn yes() -> bool {
    true
}

fn one() -> String {
    "1".into()
}

fn one_failure() -> u32 {
    1
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MaintenancePlanStatus {
    /// The round: a hash of what each node's maintenance is (drain policy and step). A
    /// new one starts a new round; nodes Done in this round are skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<String>,
    /// Selected nodes done in this round.
    #[serde(default)]
    pub done: u32,
    /// Nodes under way (a NodeMaintenance not finished).
    #[serde(default)]
    pub active: u32,
    #[serde(default)]
    pub failed: u32,
    /// Selected nodes not started yet.
    #[serde(default)]
    pub pending: u32,
    /// Why no more nodes start now (window, cap, paused, failures), if so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// What kind of wait `waiting` describes, for scripts and alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<PlanWait>,
    /// When the next window opens, while outside every window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_window: Option<Time>,
    /// Each selected node: its NodeMaintenance of this round and that one's phase (a
    /// node is done for the round once it is Done; the object stays as the record).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub nodes: BTreeMap<String, PlanNode>,
    /// Selected nodes someone else has out of service, and why (`cordoned`, `NotReady`,
    /// `tainted KEY:EFFECT`): each takes a place in the caps (`spec.countOthersOut`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub out_by_others: Vec<OutByOthers>,
    /// When the last node finished, for `pauseBetween`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_finished: Option<Time>,
    /// The value of the `kordon.dev/approve` annotation that last let a node start
    /// despite a failing gate: each value starts one node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Why a plan starts no more nodes now.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PlanWait {
    /// `spec.paused`.
    Paused,
    /// `maxFailures` nodes failed: the plan starts none until the spec changes.
    Halted,
    /// Outside every maintenance window.
    Window,
    /// Within `pauseBetween` of the last node's finish.
    PauseBetween,
    /// `maxPer` is spent: the next node starts once the oldest start in the period
    /// ages out.
    Rate,
    /// `sequence`: the nodes left wait for the domain under way to finish.
    Sequence,
    /// At its caps, or the next node waits for its workloads' budgets.
    Caps,
    /// Nodes another plan has out count against this one's caps.
    OtherPlans,
    /// A metric gate fails (`spec.gates`): `waiting` names the query and its series, or
    /// the alert and its labels.
    Gate,
    /// The spec cannot be carried out (a selector, a duration, a window).
    InvalidSpec,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanNode {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<StatusPhase>,
    /// Why the node's maintenance waits now (a budget, a gate, a refusal), if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
}

/// A node someone else has out of service, and why, as the caps count it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct OutByOthers {
    pub node: String,
    pub reason: String,
}
