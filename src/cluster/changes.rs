//! Waking on the watches a loop reads, and on no others: the controller runs many
//! drains in one process, and a drain woken by every node heartbeat and every other
//! drain's pods would pay for the cluster rather than for what it touches.
use tokio::sync::watch::Receiver;

/// The event counts of several watches, each as seen by its holder.
pub struct Changes(Vec<Receiver<u64>>);

impl Changes {
    /// Receivers that have seen every event so far, one per watch however often it is
    /// named. Take them before looking at the stores, wait on them after.
    pub fn of(receivers: impl IntoIterator<Item = Receiver<u64>>) -> Self {
        let mut all: Vec<Receiver<u64>> = Vec::new();
        for mut rx in receivers {
            if !all.iter().any(|seen| seen.same_channel(&rx)) {
                rx.mark_unchanged();
                all.push(rx);
            }
        }
        Self(all)
    }

    /// Returns at the next event of any of the watches. A watch that has stopped
    /// never wakes, nor does an empty set.
    pub async fn changed(&mut self) {
        let waits = self.0.iter_mut().map(|rx| {
            Box::pin(async move {
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            })
        });
        let waits: Vec<_> = waits.collect();
        if waits.is_empty() {
            return std::future::pending().await;
        }
        futures::future::select_all(waits).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn wakes(changes: &mut Changes) -> bool {
        tokio::time::timeout(Duration::from_millis(50), changes.changed())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn an_event_of_any_watch_wakes_and_one_seen_before_does_not() {
        let (a, rx_a) = tokio::sync::watch::channel(0u64);
        let (b, rx_b) = tokio::sync::watch::channel(0u64);
        a.send_modify(|n| *n += 1);
        let mut changes = Changes::of([rx_a.clone(), rx_b, rx_a]);
        assert_eq!(changes.0.len(), 2, "one receiver per watch");
        assert!(
            !wakes(&mut changes).await,
            "an event before the subscription"
        );
        b.send_modify(|n| *n += 1);
        assert!(wakes(&mut changes).await, "the second watch's event");
        assert!(!wakes(&mut changes).await, "the same event twice");
        a.send_modify(|n| *n += 1);
        assert!(wakes(&mut changes).await, "the first watch's event");
    }

    #[tokio::test]
    async fn a_stopped_watch_or_none_at_all_never_wakes() {
        let (a, rx_a) = tokio::sync::watch::channel(0u64);
        drop(a);
        assert!(!wakes(&mut Changes::of([rx_a])).await);
        assert!(!wakes(&mut Changes::of([])).await);
    }
}
