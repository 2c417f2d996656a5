//! Writing a NodeMaintenance's status: the phase, and the standard conditions derived
//! from it (`Progressing`, `Blocked`, `Complete`), next to any condition another actor
//! owns (the external step's). Written whole with the object's resourceVersion, so a
//! concurrent write by that actor is never lost: the API says 409 and the reconcile
//! runs again on the fresh object.
use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::PostParams;
use kube::{Api, ResourceExt};

use super::Ctx;
use crate::advice::Advice;
use crate::api::NodeMaintenance;
use crate::api::node_maintenance::{NodeMaintenanceStatus, StatusPhase};
use crate::flag::Flag;

pub const PROGRESSING: &str = "Progressing";
pub const BLOCKED: &str = "Blocked";
pub const COMPLETE: &str = "Complete";

/// Why a maintenance does not move on now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// CamelCase, e.g. `DrainRefused`.
    pub reason: &'static str,
    pub message: String,
}

/// Advice in a NodeMaintenance's words: the fields of its spec. A decision only the
/// CLI offers is named as such.
pub fn advice(advice: &Advice) -> String {
    advice_parts(advice).join("; ")
}

/// [`advice`] in parts: one per pod that needs a decision.
pub fn advice_parts(advice: &Advice) -> Vec<String> {
    let field = |f: &Flag| match f.field() {
        Some(field) => field.to_string(),
        None => format!("kordon's {} (no spec field allows it)", f.cli()),
    };
    match advice {
        Advice::Decide(pods) => pods
            .iter()
            .map(|(pod, flags)| {
                let fields: Vec<String> = flags.iter().map(field).collect();
                format!("{pod} needs {}", fields.join(" and "))
            })
            .collect(),
        Advice::Give(flag, to) => vec![format!("set {} to {to}", field(flag))],
        Advice::Omit(flag) => vec![format!("without {}", field(flag))],
        Advice::Raise(flag) => vec![format!("or raise {}", field(flag))],
    }
}

pub fn now() -> Time {
    Time(jiff::Timestamp::now())
}

/// The status with its conditions brought in line with its phase and `hold`.
pub fn with_conditions(
    mut status: NodeMaintenanceStatus,
    generation: Option<i64>,
    hold: Option<&Hold>,
) -> NodeMaintenanceStatus {
    let phase = status.phase.unwrap_or(StatusPhase::Pending);
    let progressing = matches!(
        phase,
        StatusPhase::Draining
            | StatusPhase::Maintaining
            | StatusPhase::AwaitingReady
            | StatusPhase::Verifying
    );
    let waiting = status
        .drain
        .as_ref()
        .filter(|_| phase == StatusPhase::Draining)
        .and_then(|d| d.held.first())
        .map(|h| Hold {
            reason: "DisruptionBudget",
            message: format!("{}: {}", h.pod, h.detail),
        });
    let blocked = hold.cloned().or(waiting);
    let phase_name = format!("{phase:?}");
    let set =
        |conditions: &mut Vec<Condition>, type_: &str, on: bool, reason: &str, message: &str| {
            set_condition(conditions, type_, on, reason, message, generation)
        };
    set(
        &mut status.conditions,
        PROGRESSING,
        progressing,
        &phase_name,
        &phase_message(phase),
    );
    match &blocked {
        Some(b) => set(&mut status.conditions, BLOCKED, true, b.reason, &b.message),
        None => set(&mut status.conditions, BLOCKED, false, "NotBlocked", ""),
    }
    let done = phase == StatusPhase::Done;
    set(
        &mut status.conditions,
        COMPLETE,
        done,
        &phase_name,
        if done {
            "maintenance done; the node is back"
        } else {
            ""
        },
    );
    status.observed_generation = generation;
    status
}

fn phase_message(phase: StatusPhase) -> String {
    match phase {
        StatusPhase::Pending => "not started",
        StatusPhase::Draining => "cordoned; evicting pods within their budgets",
        StatusPhase::Maintaining => "drained; the maintenance step runs",
        StatusPhase::AwaitingReady => {
            "maintenance done; waiting for the node and its DaemonSet pods to be Ready"
        }
        StatusPhase::Verifying => {
            "back in service; waiting for the workloads it held to be back at full Ready"
        }
        StatusPhase::Done => "done",
        StatusPhase::Failed => "failed; the node stays cordoned (see lastError)",
        StatusPhase::Abandoned => "abandoned at the drain's deadline; the node is back as it was",
    }
    .to_string()
}

/// Sets a condition, keeping its transition time when its status did not change.
pub(super) fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    on: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) {
    let status = if on { "True" } else { "False" }.to_string();
    let since = conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(now, |c| c.last_transition_time.clone());
    conditions.retain(|c| c.type_ != type_);
    conditions.push(Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message: message.to_string(),
        last_transition_time: since,
        observed_generation: generation,
    });
}

/// Whether another actor set condition `type_` to True.
pub fn is_true(status: &NodeMaintenanceStatus, type_: &str) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// Replaces the status, unless the object changed since it was read.
pub async fn write(
    ctx: &Ctx,
    nm: &NodeMaintenance,
    status: NodeMaintenanceStatus,
    hold: Option<&Hold>,
) -> Result<(), kube::Error> {
    let status = with_conditions(status, nm.metadata.generation, hold);
    if nm.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let phase = status.phase;
    let mut updated = nm.clone();
    updated.status = Some(status);
    let api: Api<NodeMaintenance> = Api::all(ctx.kordon.conn.client.clone());
    api.replace_status(&nm.name_any(), &PostParams::default(), &updated)
        .await?;
    ctx.recorded.wrote(nm, phase);
    Ok(())
}

/// The phase this process last wrote for each object (by uid). A reconcile runs on the
/// object as the watch has it, which can be older than a write of our own: a step
/// redone from there could undo the next one (a drain run again evicts the maintenance
/// Job's pod). Phases only go forward, so an object behind its record waits for the
/// watch instead.
#[derive(Default)]
pub struct Recorded(Mutex<HashMap<String, StatusPhase>>);

impl Recorded {
    fn wrote(&self, nm: &NodeMaintenance, phase: Option<StatusPhase>) {
        if let (Ok(mut r), Some(uid), Some(phase)) = (self.0.lock(), nm.uid(), phase) {
            r.insert(uid, phase);
        }
    }

    /// Whether the object shows an earlier phase than this process wrote for it.
    pub fn is_behind(&self, nm: &NodeMaintenance) -> bool {
        let shown = nm.status.as_ref().and_then(|s| s.phase);
        let Ok(r) = self.0.lock() else { return false };
        nm.uid()
            .and_then(|uid| r.get(&uid).copied())
            .is_some_and(|written| rank(Some(written)) > rank(shown))
    }

    /// Forgets a deleted object.
    pub fn forget(&self, nm: &NodeMaintenance) {
        if let (Ok(mut r), Some(uid)) = (self.0.lock(), nm.uid()) {
            r.remove(&uid);
        }
    }
}

/// How far a phase is along: phases only go forward.
fn rank(phase: Option<StatusPhase>) -> u8 {
    match phase {
        None | Some(StatusPhase::Pending) => 0,
        Some(StatusPhase::Draining) => 1,
        Some(StatusPhase::Maintaining) => 2,
        Some(StatusPhase::AwaitingReady) => 3,
        Some(StatusPhase::Verifying) => 4,
        Some(StatusPhase::Done | StatusPhase::Failed | StatusPhase::Abandoned) => 5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn condition<'a>(s: &'a NodeMaintenanceStatus, type_: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == type_).expect(type_)
    }

    #[test]
    fn conditions_follow_the_phase_and_keep_others() {
        let mut status = NodeMaintenanceStatus {
            phase: Some(StatusPhase::Pending),
            ..Default::default()
        };
        status.conditions.push(Condition {
            type_: "MaintenanceComplete".into(),
            status: "True".into(),
            reason: "Updated".into(),
            message: String::new(),
            last_transition_time: now(),
            observed_generation: None,
        });
        let hold = Hold {
            reason: "DrainRefused",
            message: "shop/solo needs spec.drain.force".into(),
        };
        let pending = with_conditions(status, Some(1), Some(&hold));
        assert_eq!(condition(&pending, BLOCKED).status, "True");
        assert_eq!(condition(&pending, BLOCKED).reason, "DrainRefused");
        assert_eq!(condition(&pending, PROGRESSING).status, "False");
        assert!(
            is_true(&pending, "MaintenanceComplete"),
            "another actor's condition stays"
        );

        let done = with_conditions(
            NodeMaintenanceStatus {
                phase: Some(StatusPhase::Done),
                ..pending.clone()
            },
            Some(1),
            None,
        );
        assert_eq!(condition(&done, COMPLETE).status, "True");
        assert_eq!(condition(&done, BLOCKED).status, "False");
        assert_eq!(done.conditions.len(), 4);
    }
}
