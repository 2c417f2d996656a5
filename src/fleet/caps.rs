//! Which nodes may start now under a cap over the whole fleet, caps per topology
//! domain (a zone, a rack: any node label), and the rule that two nodes holding pods
//! of one workload whose budget allows a single disruption are never out together
//! (one would only wait on the other's budget, out of service for nothing). Pure,
//! shared by the MaintenancePlan controller and `roll`.
use std::collections::{BTreeMap, BTreeSet};

use crate::workload::WorkloadId;

/// A selected node and what it takes of the caps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Slot {
    pub node: String,
    /// Out of service now (under way, failed and cordoned, or out for another run): it
    /// takes a place in every cap that covers it.
    pub out: bool,
    /// Waiting to start.
    pub pending: bool,
    /// The node's value of each capped label (`None`: the node lacks the label).
    pub domains: BTreeMap<String, Option<String>>,
    /// The workloads with pods on the node (out: those its drain touched).
    pub workloads: BTreeSet<WorkloadId>,
    /// Those of them whose budget allows a single disruption at a time.
    pub single: BTreeSet<WorkloadId>,
}

/// Why a pending node may not start beside the nodes out now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conflict {
    /// The fleet cap is reached.
    Full,
    /// The node's domain has its cap out already.
    Domain { label: String, value: String },
    /// A node out holds pods of this workload, which allows one disruption at a time.
    Workload(WorkloadId),
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Full => write!(f, "the cap is reached"),
            Self::Domain { label, value } => write!(f, "{label}={value} is at its cap"),
            Self::Workload(w) => write!(
                f,
                "{w} allows one disruption at a time and a node out holds it"
            ),
        }
    }
}

/// What the nodes out (and those chosen so far) take of the caps.
pub struct Caps<'a> {
    cap: usize,
    per: &'a BTreeMap<String, u32>,
    out: usize,
    taken: BTreeMap<(String, String), u32>,
    workloads: BTreeSet<WorkloadId>,
    single: BTreeSet<WorkloadId>,
}

impl<'a> Caps<'a> {
    /// The caps with the slots that are out taken.
    pub fn new(slots: &[Slot], cap: usize, per: &'a BTreeMap<String, u32>) -> Self {
        let mut caps = Self {
            cap,
            per,
            out: 0,
            taken: BTreeMap::new(),
            workloads: BTreeSet::new(),
            single: BTreeSet::new(),
        };
        for s in slots.iter().filter(|s| s.out) {
            caps.take(s);
        }
        caps
    }

    pub fn full(&self) -> bool {
        self.out >= self.cap
    }

    /// Whether the node may start beside what is taken; the first conflict if not.
    /// A node without a capped label counts as its own domain.
    pub fn admits(&self, s: &Slot) -> Result<(), Conflict> {
        if self.full() {
            return Err(Conflict::Full);
        }
        for (label, max) in self.per {
            let fits = match s.domains.get(label).and_then(Option::as_deref) {
                Some(v) => self.count(label, v) < *max,
                None => *max > 0,
            };
            if !fits {
                return Err(Conflict::Domain {
                    label: label.clone(),
                    value: s.domains.get(label).cloned().flatten().unwrap_or_default(),
                });
            }
        }
        let shared = s
            .single
            .intersection(&self.workloads)
            .chain(s.workloads.intersection(&self.single))
            .next();
        match shared {
            Some(w) => Err(Conflict::Workload(w.clone())),
            None => Ok(()),
        }
    }

    /// The node goes out.
    pub fn take(&mut self, s: &Slot) {
        for (label, value) in &s.domains {
            if let Some(v) = value {
                *self.taken.entry((label.clone(), v.clone())).or_default() += 1;
            }
        }
        self.workloads.extend(s.workloads.iter().cloned());
        self.single.extend(s.single.iter().cloned());
        self.out += 1;
    }

    fn count(&self, label: &str, value: &str) -> u32 {
        self.taken
            .get(&(label.to_string(), value.to_string()))
            .copied()
            .unwrap_or(0)
    }
}

/// The pending nodes to start now, in the order given, so that at most `cap` nodes and
/// at most `per[label]` nodes per value of `label` are out at once, and no two out
/// share a workload that allows one disruption; with why the first node left waits.
pub fn choose(
    slots: &[Slot],
    cap: usize,
    per: &BTreeMap<String, u32>,
) -> (Vec<String>, Option<(String, Conflict)>) {
    let mut caps = Caps::new(slots, cap, per);
    let mut started = Vec::new();
    let mut waits = None;
    for s in slots.iter().filter(|s| s.pending && !s.out) {
        match caps.admits(s) {
            Ok(()) => {
                caps.take(s);
                started.push(s.node.clone());
            }
            Err(Conflict::Full) => break,
            Err(why) => {
                waits.get_or_insert((s.node.clone(), why));
            }
        }
    }
    if waits.is_none() && caps.full() {
        let next = slots
            .iter()
            .find(|s| s.pending && !s.out && !started.contains(&s.node));
        waits = next.map(|s| (s.node.clone(), Conflict::Full));
    }
    (started, waits)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZONE: &str = "topology.kubernetes.io/zone";

    fn slot(node: &str, zone: &str, out: bool) -> Slot {
        Slot {
            node: node.into(),
            out,
            pending: !out,
            domains: [(ZONE.to_string(), Some(zone.to_string()))].into(),
            ..Slot::default()
        }
    }

    #[test]
    fn never_two_in_one_zone_and_never_more_than_the_cap() {
        let per: BTreeMap<String, u32> = [(ZONE.to_string(), 1)].into();
        let fleet = [
            slot("a1", "a", false),
            slot("a2", "a", false),
            slot("b1", "b", false),
            slot("b2", "b", false),
            slot("c1", "c", false),
        ];
        assert_eq!(choose(&fleet, 2, &per).0, ["a1", "b1"]);
        assert_eq!(choose(&fleet, 5, &per).0, ["a1", "b1", "c1"]);
        // A node out in zone a keeps a2 waiting; the cap counts it too.
        let fleet = [
            slot("a1", "a", true),
            slot("a2", "a", false),
            slot("b1", "b", false),
        ];
        assert_eq!(choose(&fleet, 2, &per).0, ["b1"]);
        assert_eq!(choose(&fleet, 1, &per).0, Vec::<String>::new());
    }

    #[test]
    fn without_per_domain_caps_only_the_fleet_cap_holds() {
        let fleet = [
            slot("a1", "a", false),
            slot("a2", "a", false),
            slot("a3", "a", false),
        ];
        assert_eq!(choose(&fleet, 2, &BTreeMap::new()).0, ["a1", "a2"]);
    }

    fn id(name: &str) -> WorkloadId {
        WorkloadId {
            kind: crate::workload::WorkloadKind::Deployment,
            namespace: "default".into(),
            name: name.into(),
        }
    }

    #[test]
    fn never_two_nodes_out_with_one_workload_that_allows_one_disruption() {
        let holding = |node: &str, out: bool, workloads: &[&str], single: &[&str]| Slot {
            node: node.into(),
            out,
            pending: !out,
            workloads: workloads.iter().map(|w| id(w)).collect(),
            single: single.iter().map(|w| id(w)).collect(),
            ..Slot::default()
        };
        // db allows one disruption: a and c both hold it; web allows more.
        let fleet = [
            holding("a", false, &["db", "web"], &["db"]),
            holding("b", false, &["web"], &[]),
            holding("c", false, &["db"], &["db"]),
        ];
        let (started, waits) = choose(&fleet, 3, &BTreeMap::new());
        assert_eq!(started, ["a", "b"]);
        assert_eq!(waits, Some(("c".into(), Conflict::Workload(id("db")))));
        // While a is out (its drain touched db), c waits; b does not.
        let fleet = [
            holding("a", true, &["db", "web"], &[]),
            holding("b", false, &["web"], &[]),
            holding("c", false, &["db"], &["db"]),
        ];
        assert_eq!(choose(&fleet, 3, &BTreeMap::new()).0, ["b"]);
    }
}
