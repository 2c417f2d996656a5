//! Out of external load balancers before the drain: a cloud's service controller takes
//! a node labelled [`LABEL`] out of every Service of type LoadBalancer, so new
//! connections stop arriving at a node whose pods are about to leave, and the load
//! balancer drains the ones it has (its deregistration delay). Without it, an external
//! load balancer keeps sending to the node until its health checks fail, and the
//! requests in between fail.
//!
//! The label is kordon's only while kordon's record ([`EXCLUDED_AT`]) is on the node:
//! the two go in one request (`cluster::nodes::patch`), so they cannot part. A label
//! someone else put on stays theirs: kordon neither waits for it nor lifts it. Pure.
use std::collections::BTreeMap;
use std::time::Duration;

/// The well-known label the service controller honours.
pub const LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// On a node kordon excluded, with the label: when (RFC 3339), so a resumed drain waits
/// only for what is left of the deregistration delay.
pub const EXCLUDED_AT: &str = "kordon.dev/excluded-from-load-balancers-at";

/// Where a node stands towards external load balancers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exclusion {
    /// In them: kordon's label is not on it.
    Included,
    /// Excluded by kordon at this time.
    Ours { since: jiff::Timestamp },
    /// Someone else's label: out of them already, and theirs to lift.
    Theirs,
}

impl Exclusion {
    /// From the node's labels and annotations.
    pub fn of(labels: &BTreeMap<String, String>, annotations: &BTreeMap<String, String>) -> Self {
        match (labels.contains_key(LABEL), annotations.get(EXCLUDED_AT)) {
            (false, _) => Self::Included,
            // A record that cannot be read (edited by hand) counts as long ago: nothing
            // is left to wait for, and the label is still lifted with the record.
            (true, Some(at)) => Self::Ours {
                since: at.parse().unwrap_or(jiff::Timestamp::UNIX_EPOCH),
            },
            (true, None) => Self::Theirs,
        }
    }

    /// How long the drain still waits before it evicts: the delay from when kordon
    /// excluded the node; nothing for a node someone else excluded.
    pub fn left_to_wait(self, delay: Duration, now: jiff::Timestamp) -> Duration {
        match self {
            Self::Ours { since } => {
                let passed = now.duration_since(since).unsigned_abs();
                delay.saturating_sub(passed)
            }
            Self::Included | Self::Theirs => Duration::ZERO,
        }
    }
}

/// The annotation change that excludes a node now (the label rides with it); none when
/// it is out of load balancers already.
pub fn exclude(exclusion: Exclusion, now: jiff::Timestamp) -> BTreeMap<String, Option<String>> {
    match exclusion {
        Exclusion::Included => [(EXCLUDED_AT.to_string(), Some(now.to_string()))].into(),
        Exclusion::Ours { .. } | Exclusion::Theirs => BTreeMap::new(),
    }
}

/// The annotation change that lifts kordon's exclusion (the label goes with it); none
/// on a node kordon did not exclude.
pub fn lift(annotations: &BTreeMap<String, String>) -> BTreeMap<String, Option<String>> {
    match annotations.contains_key(EXCLUDED_AT) {
        true => [(EXCLUDED_AT.to_string(), None)].into(),
        false => BTreeMap::new(),
    }
}

/// The label changes that go with these annotation changes: the label is set with
/// kordon's record and removed with it.
pub fn labels_for(
    annotations: &BTreeMap<String, Option<String>>,
) -> BTreeMap<String, Option<String>> {
    match annotations.get(EXCLUDED_AT) {
        Some(set) => [(LABEL.to_string(), set.as_ref().map(|_| "true".to_string()))].into(),
        None => BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn apply(
        labels: &mut BTreeMap<String, String>,
        annotations: &mut BTreeMap<String, String>,
        changes: &BTreeMap<String, Option<String>>,
    ) {
        for (target, changes) in [
            (&mut *labels, labels_for(changes)),
            (annotations, changes.clone()),
        ] {
            for (k, v) in changes {
                match v {
                    Some(v) => target.insert(k, v),
                    None => target.remove(&k),
                };
            }
        }
    }

    #[test]
    fn excluding_and_lifting_leaves_the_node_as_it_was() {
        let now: jiff::Timestamp = "2026-12-06T07:00:00Z".parse().expect("time");
        let (mut labels, mut annotations) = (map(&[("pool", "a")]), map(&[]));
        let before = (labels.clone(), annotations.clone());
        assert_eq!(Exclusion::of(&labels, &annotations), Exclusion::Included);
        apply(
            &mut labels,
            &mut annotations,
            &exclude(Exclusion::Included, now),
        );
        assert_eq!(labels.get(LABEL).map(String::as_str), Some("true"));
        assert_eq!(
            Exclusion::of(&labels, &annotations),
            Exclusion::Ours { since: now }
        );
        let lifting = lift(&annotations);
        apply(&mut labels, &mut annotations, &lifting);
        assert_eq!((labels, annotations), before);
    }

    #[test]
    fn someone_elses_label_is_neither_waited_for_nor_lifted() {
        let labels = map(&[(LABEL, "")]);
        let annotations = map(&[]);
        let theirs = Exclusion::of(&labels, &annotations);
        assert_eq!(theirs, Exclusion::Theirs);
        let now = jiff::Timestamp::now();
        assert!(exclude(theirs, now).is_empty());
        assert!(lift(&annotations).is_empty());
        assert_eq!(
            theirs.left_to_wait(Duration::from_secs(30), now),
            Duration::ZERO
        );
    }

    #[test]
    fn a_resumed_drain_waits_only_for_what_is_left_of_the_delay() {
        let since: jiff::Timestamp = "2026-12-06T07:00:00Z".parse().expect("time");
        let ours = Exclusion::Ours { since };
        let delay = Duration::from_secs(30);
        let later = |s: i64| since + jiff::SignedDuration::from_secs(s);
        assert_eq!(ours.left_to_wait(delay, later(0)), delay);
        assert_eq!(ours.left_to_wait(delay, later(20)), Duration::from_secs(10));
        assert_eq!(ours.left_to_wait(delay, later(45)), Duration::ZERO);
    }

    #[test]
    fn an_unreadable_record_waits_no_longer_and_is_still_lifted() {
        let labels = map(&[(LABEL, "true")]);
        let annotations = map(&[(EXCLUDED_AT, "yesterday")]);
        let found = Exclusion::of(&labels, &annotations);
        assert_eq!(
            found.left_to_wait(Duration::from_secs(30), jiff::Timestamp::now()),
            Duration::ZERO
        );
        assert_eq!(
            labels_for(&lift(&annotations)),
            [(LABEL.to_string(), None)].into()
        );
    }
}
