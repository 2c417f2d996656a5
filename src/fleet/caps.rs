//! Which nodes may start now under a cap over the whole fleet and caps per topology
//! domain (a zone, a rack: any node label). Pure, shared by the MaintenancePlan
//! controller and, later, `roll`.
use std::collections::BTreeMap;

/// A selected node and what it takes of the caps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub node: String,
    /// Out of service now (under way, failed and cordoned, or out for another run): it
    /// takes a place in every cap that covers it.
    pub out: bool,
    /// Waiting to start.
    pub pending: bool,
    /// The node's value of each capped label (`None`: the node lacks the label).
    pub domains: BTreeMap<String, Option<String>>,
}

/// The pending nodes to start now, in the order given, so that at most `cap` nodes and
/// at most `per[label]` nodes per value of `label` are out at once. A node without a
/// capped label counts as its own domain.
pub fn choose(slots: &[Slot], cap: usize, per: &BTreeMap<String, u32>) -> Vec<String> {
    let mut out = slots.iter().filter(|s| s.out).count();
    let mut taken: BTreeMap<(&str, &str), u32> = BTreeMap::new();
    for s in slots.iter().filter(|s| s.out) {
        for (label, value) in &s.domains {
            if let Some(v) = value {
                *taken.entry((label, v)).or_default() += 1;
            }
        }
    }
    let mut started = Vec::new();
    for s in slots.iter().filter(|s| s.pending && !s.out) {
        if out >= cap {
            break;
        }
        let fits =
            per.iter().all(
                |(label, max)| match s.domains.get(label).and_then(Option::as_deref) {
                    Some(v) => taken.get(&(label.as_str(), v)).copied().unwrap_or(0) < *max,
                    None => *max > 0,
                },
            );
        if !fits {
            continue;
        }
        for (label, value) in &s.domains {
            if let Some(v) = value {
                *taken.entry((label, v)).or_default() += 1;
            }
        }
        out += 1;
        started.push(s.node.clone());
    }
    started
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
        assert_eq!(choose(&fleet, 2, &per), ["a1", "b1"]);
        assert_eq!(choose(&fleet, 5, &per), ["a1", "b1", "c1"]);
        // A node out in zone a keeps a2 waiting; the cap counts it too.
        let fleet = [
            slot("a1", "a", true),
            slot("a2", "a", false),
            slot("b1", "b", false),
        ];
        assert_eq!(choose(&fleet, 2, &per), ["b1"]);
        assert_eq!(choose(&fleet, 1, &per), Vec::<String>::new());
    }

    #[test]
    fn without_per_domain_caps_only_the_fleet_cap_holds() {
        let fleet = [
            slot("a1", "a", false),
            slot("a2", "a", false),
            slot("a3", "a", false),
        ];
        assert_eq!(choose(&fleet, 2, &BTreeMap::new()), ["a1", "a2"]);
    }
}
