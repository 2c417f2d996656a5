//! Fences against other disruptors while a node is in maintenance: Karpenter does not
//! voluntarily disrupt a node annotated `karpenter.sh/do-not-disrupt: "true"`, and the
//! Cluster Autoscaler does not scale down one annotated
//! `cluster-autoscaler.kubernetes.io/scale-down-disabled: "true"`. Without them either
//! may delete a node kordon has half drained, or one whose maintenance is running.
//!
//! What the annotations were before kordon came is recorded on the node itself
//! ([`FENCED`]), so whoever puts the node back (this process, a restarted one, a new
//! controller leader, `kordon uncordon`) restores them exactly: a user's own value
//! stays, an absent one is removed. Pure: the callers carry the changes out, in the
//! same patch as the cordon or the phase where they can.
//!
//! A cordon does not keep a DaemonSet's pods off a node: the DaemonSet controller adds
//! a toleration of `node.kubernetes.io/unschedulable` to every pod it creates. What it
//! does respect is a `NoSchedule` or `NoExecute` taint its template does not tolerate
//! (it creates no pod there). So a drain that evicts DaemonSet pods first puts
//! [`draining_taint`] on the node; the patch that ends the maintenance (kordon's
//! uncordon, or this fence coming down) takes it off (`cluster::nodes::patch`).
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Taint};

/// The key of kordon's own taint on a node whose DaemonSet pods it evicts.
pub const DRAINING_TAINT: &str = "kordon.dev/draining";

/// kordon's taint that keeps evicted DaemonSet pods from being recreated on the node.
/// `NoSchedule`, not `NoExecute`: a `NoExecute` taint would have the taint manager
/// delete every pod on the node that does not tolerate it, at once, past every
/// budget; `NoSchedule` only stops new pods (the DaemonSet controller and the
/// scheduler both check it), and the drain evicts the running ones in its own order.
pub fn draining_taint() -> Taint {
    Taint {
        key: DRAINING_TAINT.into(),
        value: Some("daemonsets".into()),
        effect: "NoSchedule".into(),
        time_added: None,
    }
}

/// Whether the node carries kordon's draining taint.
pub fn has_draining_taint(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key == DRAINING_TAINT))
}

/// On the node while it is fenced: the fences' values before kordon set them, as a
/// JSON object (`null` for absent).
pub const FENCED: &str = "kordon.dev/fenced";

/// The annotations that keep other disruptors away, and the value that does.
pub const FENCES: [&str; 2] = [
    "karpenter.sh/do-not-disrupt",
    "cluster-autoscaler.kubernetes.io/scale-down-disabled",
];
const ON: &str = "true";

/// Annotation changes, as a merge patch has them: `None` removes the key.
pub type Changes = BTreeMap<String, Option<String>>;

/// The fences' values before kordon set them.
pub type Prior = BTreeMap<String, Option<String>>;

/// Whether kordon's fence is on a node with these annotations.
pub fn is_up(annotations: &BTreeMap<String, String>) -> bool {
    annotations.contains_key(FENCED)
}

/// The changes that put the fences up. A node fenced already keeps the prior values it
/// recorded (a resumed maintenance must not record its own fence as the user's).
pub fn raise(annotations: &BTreeMap<String, String>) -> Changes {
    let prior = recorded(annotations).unwrap_or_else(|| {
        FENCES
            .iter()
            .map(|k| (k.to_string(), annotations.get(*k).cloned()))
            .collect()
    });
    let mut changes: Changes = FENCES
        .iter()
        .map(|k| (k.to_string(), Some(ON.to_string())))
        .collect();
    changes.insert(FENCED.to_string(), serde_json::to_string(&prior).ok());
    changes
}

/// The changes that take the fences down and restore what was there before; none on a
/// node kordon has not fenced. A record that cannot be read (someone edited it) leaves
/// the fences up and drops only the record: keeping a node fenced is the safe side, and
/// a person can lift it.
///
/// kordon's exclusion from load balancers goes with them ([`crate::exclusion::lift`]):
/// both are what kordon put on a node while it was out.
pub fn lower(annotations: &BTreeMap<String, String>) -> Changes {
    let mut changes = crate::exclusion::lift(annotations);
    if is_up(annotations) {
        changes.extend(lower_fences(annotations));
    }
    changes
}

fn lower_fences(annotations: &BTreeMap<String, String>) -> Changes {
    let mut changes: Changes = match recorded(annotations) {
        Some(prior) => FENCES
            .iter()
            .map(|k| (k.to_string(), prior.get(*k).cloned().flatten()))
            .collect(),
        None => {
            tracing::warn!("cannot read {FENCED}; the fences stay for a person to lift");
            Changes::new()
        }
    };
    changes.insert(FENCED.to_string(), None);
    changes
}

/// The changes for a node whose maintenance is (`true`) or is not out of service.
pub fn follow(out_of_service: bool, annotations: &BTreeMap<String, String>) -> Changes {
    if out_of_service {
        raise(annotations)
    } else {
        lower(annotations)
    }
}

/// Whether the fences stand as they should for a maintenance that is (or is not) out
/// of service: nothing to write then.
pub fn settled(out_of_service: bool, annotations: &BTreeMap<String, String>) -> bool {
    let fenced = FENCES
        .iter()
        .all(|k| annotations.get(*k).map(String::as_str) == Some(ON));
    if out_of_service {
        fenced && recorded(annotations).is_some()
    } else {
        !is_up(annotations) && crate::exclusion::lift(annotations).is_empty()
    }
}

fn recorded(annotations: &BTreeMap<String, String>) -> Option<Prior> {
    serde_json::from_str(annotations.get(FENCED)?).ok()
}

/// The annotations after a merge patch of these changes: what the node will carry.
pub fn applied(
    annotations: &BTreeMap<String, String>,
    changes: &Changes,
) -> BTreeMap<String, String> {
    let mut after = annotations.clone();
    for (k, v) in changes {
        match v {
            Some(v) => after.insert(k.clone(), v.clone()),
            None => after.remove(k),
        };
    }
    after
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const DND: &str = "karpenter.sh/do-not-disrupt";
    const SDD: &str = "cluster-autoscaler.kubernetes.io/scale-down-disabled";

    #[test]
    fn raising_and_lowering_leaves_the_node_exactly_as_it_was() {
        for before in [
            node(&[]),
            node(&[("team", "db")]),
            node(&[(DND, "false")]),
            node(&[(DND, "true"), (SDD, "anything")]),
        ] {
            let up = applied(&before, &raise(&before));
            assert_eq!(up.get(DND).map(String::as_str), Some("true"), "{before:?}");
            assert_eq!(up.get(SDD).map(String::as_str), Some("true"), "{before:?}");
            assert!(settled(true, &up) && !settled(false, &up));
            let down = applied(&up, &lower(&up));
            assert_eq!(down, before, "the user's values are back and ours are gone");
            assert!(settled(false, &down));
        }
    }

    #[test]
    fn a_resumed_maintenance_keeps_the_users_values_it_recorded_first() {
        let before = node(&[(SDD, "false")]);
        let up = applied(&before, &raise(&before));
        // Raised again (a restart, a resume): the record is not overwritten by the
        // fence kordon set itself.
        let again = applied(&up, &raise(&up));
        assert_eq!(again, up);
        assert_eq!(applied(&again, &lower(&again)), before);
    }

    #[test]
    fn a_node_kordon_did_not_fence_is_left_alone() {
        let users = node(&[(DND, "true")]);
        assert!(lower(&users).is_empty());
        assert!(settled(false, &users));
        assert!(
            !settled(true, &users),
            "the user's fence is not kordon's record"
        );
    }

    #[test]
    fn an_unreadable_record_keeps_the_fences_up_and_drops_the_record() {
        let broken = node(&[(DND, "true"), (SDD, "true"), (FENCED, "not json")]);
        let changes = lower(&broken);
        assert_eq!(changes, Changes::from([(FENCED.to_string(), None)]));
        let after = applied(&broken, &changes);
        assert_eq!(after.get(DND).map(String::as_str), Some("true"));
    }

    #[test]
    fn follow_raises_out_of_service_and_lowers_otherwise() {
        let before = node(&[]);
        assert_eq!(follow(true, &before), raise(&before));
        assert!(follow(false, &before).is_empty());
    }
}
