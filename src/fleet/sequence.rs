//! Sequence by a topology key (`--sequence topology.kubernetes.io/zone=b,a`, a
//! MaintenancePlan's `sequence`): every node of one domain (a value of the label) is
//! finished before any node of the next starts, so a bad change stays in one zone or
//! rack. Domains go in the stated order, the others after it by name, and nodes without
//! the label last. Finished is done or failed: a failure counts toward `maxFailures`,
//! which alone decides whether the fleet goes on. Pure: shared by `roll` and the
//! controller.
use std::collections::BTreeSet;
use std::str::FromStr;

use k8s_openapi::api::core::v1::Node;

use crate::selector;

/// The label whose values are the domains, and the order of the domains named first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequence {
    key: String,
    order: Vec<String>,
}

/// A node's domain, ordered as the sequence takes them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Domain {
    /// A value in the stated order, at this place.
    Stated(usize, String),
    /// A value the order does not name: after those it names, by value.
    Other(String),
    /// The node lacks the label: last.
    Unlabelled,
}

/// What is wrong with a sequence, in words that fit after the flag or the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    #[error("the label key is empty; write KEY or KEY=v1,v2, e.g. topology.kubernetes.io/zone=b,a")]
    EmptyKey,
    #[error("{0}")]
    Key(String),
    #[error("{0}")]
    Value(String),
    #[error("the order names an empty domain; list label values separated by commas")]
    EmptyValue,
    #[error("the order names \"{0}\" twice")]
    Twice(String),
}

impl Sequence {
    pub fn new(key: &str, order: Vec<String>) -> Result<Self, SequenceError> {
        if key.trim().is_empty() {
            return Err(SequenceError::EmptyKey);
        }
        let key = selector::key_of(key).map_err(SequenceError::Key)?;
        let mut seen = BTreeSet::new();
        for value in &order {
            if value.is_empty() {
                return Err(SequenceError::EmptyValue);
            }
            selector::value_of(value).map_err(SequenceError::Value)?;
            if !seen.insert(value) {
                return Err(SequenceError::Twice(value.clone()));
            }
        }
        Ok(Self { key, order })
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn order(&self) -> &[String] {
        &self.order
    }

    /// The node's domain.
    pub fn domain(&self, node: &Node) -> Domain {
        let labels = node.metadata.labels.as_ref();
        match labels.and_then(|l| l.get(&self.key)) {
            None => Domain::Unlabelled,
            Some(v) => match self.order.iter().position(|o| o == v) {
                Some(rank) => Domain::Stated(rank, v.clone()),
                None => Domain::Other(v.clone()),
            },
        }
    }

    /// The domain whose nodes may start now: the first, in order, that has a node not
    /// finished (waiting to start, or under way). `None`: every node is finished.
    pub fn open<'a>(&self, unfinished: impl IntoIterator<Item = &'a Node>) -> Option<Domain> {
        unfinished.into_iter().map(|n| self.domain(n)).min()
    }

    /// Whether `node` may start while `open` is the open domain.
    pub fn admits(&self, node: &Node, open: Option<&Domain>) -> bool {
        open.is_none_or(|d| self.domain(node) == *d)
    }

    /// The domains of these nodes, each once, in the order they go.
    pub fn domains<'a>(&self, nodes: impl IntoIterator<Item = &'a Node>) -> Vec<Domain> {
        let all: BTreeSet<Domain> = nodes.into_iter().map(|n| self.domain(n)).collect();
        all.into_iter().collect()
    }

    /// "topology.kubernetes.io/zone=b", or "no topology.kubernetes.io/zone" for the
    /// nodes without the label.
    pub fn describe(&self, domain: &Domain) -> String {
        match domain {
            Domain::Stated(_, v) | Domain::Other(v) => format!("{}={v}", self.key),
            Domain::Unlabelled => format!("no {}", self.key),
        }
    }

    /// The domains these nodes go in, in order: "zone=b, zone=a, zone=c, no zone".
    pub fn describe_all<'a>(&self, nodes: impl IntoIterator<Item = &'a Node>) -> String {
        let each: Vec<String> = self
            .domains(nodes)
            .iter()
            .map(|d| self.describe(d))
            .collect();
        each.join(", ")
    }
}

/// `KEY` or `KEY=v1,v2,...` as the CLI takes it.
impl FromStr for Sequence {
    type Err = SequenceError;

    fn from_str(text: &str) -> Result<Self, SequenceError> {
        match text.split_once('=') {
            None => Self::new(text, Vec::new()),
            Some((key, values)) => {
                let order = values.split(',').map(|v| v.trim().to_string()).collect();
                Self::new(key, order)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ZONE: &str = "topology.kubernetes.io/zone";

    fn node(name: &str, zone: Option<&str>) -> Node {
        let labels = match zone {
            Some(z) => json!({ "kubernetes.io/hostname": name, ZONE: z }),
            None => json!({ "kubernetes.io/hostname": name }),
        };
        serde_json::from_value(json!({ "metadata": { "name": name, "labels": labels } }))
            .expect("node")
    }

    fn names<'a>(nodes: impl IntoIterator<Item = &'a Node>) -> Vec<&'a str> {
        nodes
            .into_iter()
            .filter_map(|n| n.metadata.name.as_deref())
            .collect()
    }

    /// Nodes in zones a, b, c and one without a zone; the order says b, then a.
    fn fleet() -> Vec<Node> {
        vec![
            node("a-1", Some("a")),
            node("a-2", Some("a")),
            node("b-1", Some("b")),
            node("b-2", Some("b")),
            node("c-1", Some("c")),
            node("bare", None),
        ]
    }

    #[test]
    fn domains_go_in_the_stated_order_then_by_name_then_unlabelled() {
        let b_then_a: Sequence = format!("{ZONE}=b,a").parse().expect("valid");
        assert_eq!(
            b_then_a.describe_all(&fleet()),
            format!("{ZONE}=b, {ZONE}=a, {ZONE}=c, no {ZONE}")
        );
        let by_name: Sequence = ZONE.parse().expect("valid");
        assert_eq!(
            by_name.domains(&fleet()),
            [
                Domain::Other("a".into()),
                Domain::Other("b".into()),
                Domain::Other("c".into()),
                Domain::Unlabelled
            ]
        );
        // A stated domain no node is in is skipped.
        let with_d: Sequence = format!("{ZONE}=d,c").parse().expect("valid");
        assert_eq!(with_d.domain(&fleet()[4]), Domain::Stated(1, "c".into()));
        assert_eq!(with_d.open(&fleet()), Some(Domain::Stated(1, "c".into())));
    }

    #[test]
    fn no_node_of_the_next_domain_starts_until_every_node_of_this_one_is_finished() {
        let seq: Sequence = format!("{ZONE}=b,a").parse().expect("valid");
        let fleet = fleet();
        // Finished nodes (done, or failed and counted) are left out of `unfinished`.
        let step = |finished: &[&str]| {
            let unfinished: Vec<&Node> = fleet
                .iter()
                .filter(|n| !finished.contains(&n.metadata.name.as_deref().unwrap_or("")))
                .collect();
            let open = seq.open(unfinished.iter().copied());
            let may: Vec<&Node> = unfinished
                .into_iter()
                .filter(|n| seq.admits(n, open.as_ref()))
                .collect();
            names(may)
        };
        assert_eq!(step(&[]), ["b-1", "b-2"]);
        // b-1 done, b-2 still under way (not finished): a waits.
        assert_eq!(step(&["b-1"]), ["b-2"]);
        // b-2 failed: finished as far as the sequence goes.
        assert_eq!(step(&["b-1", "b-2"]), ["a-1", "a-2"]);
        assert_eq!(step(&["b-1", "b-2", "a-1", "a-2"]), ["c-1"]);
        assert_eq!(step(&["b-1", "b-2", "a-1", "a-2", "c-1"]), ["bare"]);
        let all = ["b-1", "b-2", "a-1", "a-2", "c-1", "bare"];
        assert!(step(&all).is_empty());
        assert_eq!(seq.open(std::iter::empty()), None);
    }

    #[test]
    fn a_key_and_an_order_are_checked_once() {
        let bad = |s: &str| s.parse::<Sequence>().expect_err(s).to_string();
        assert!(bad("").starts_with("the label key is empty"));
        assert!(bad("=a,b").starts_with("the label key is empty"));
        assert_eq!(bad("bad key!=a"), "\"bad key!\" is not a label key");
        assert_eq!(
            bad(&format!("{ZONE}=a,,b")),
            "the order names an empty domain; list label values separated by commas"
        );
        assert_eq!(bad(&format!("{ZONE}=a,b,a")), "the order names \"a\" twice");
        assert_eq!(bad(&format!("{ZONE}=a b")), "\"a b\" is not a label value");
        let ok: Sequence = format!("{ZONE}=b, a").parse().expect("spaces after commas");
        assert_eq!(
            (ok.key(), ok.order()),
            (ZONE, &["b".to_string(), "a".to_string()][..])
        );
    }
}
