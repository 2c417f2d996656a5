//! A cluster-wide lock on a `coordination.k8s.io` Lease, as leader election does it:
//! whoever holds an unexpired lease runs; the holder renews it; a holder that died
//! loses it when it expires. Writes carry the resourceVersion they read, so two runs
//! racing for a free lease cannot both win.
use std::collections::BTreeMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::{PostParams, Resource};
use tokio::sync::watch;

use super::{ClusterError, Connection};
use crate::advice::Advice;
use crate::flag::Flag;

/// Where the lock lives and who asks for it.
#[derive(Debug, Clone)]
pub struct LockSpec {
    pub namespace: String,
    pub name: String,
    /// Shown to anyone who finds the lock taken: user, host, process, run.
    pub holder: String,
    pub duration: Duration,
}

/// The lease as last read: who holds it, until when, and the record its holder keeps in
/// its annotations.
#[derive(Debug, Clone, Default)]
pub struct LeaseState {
    pub holder: Option<String>,
    pub renewed: Option<Timestamp>,
    pub expires: Option<Timestamp>,
    pub annotations: BTreeMap<String, String>,
}

impl LeaseState {
    pub fn of(lease: &Lease) -> Self {
        let spec = lease.spec.as_ref();
        let holder = spec
            .and_then(|s| s.holder_identity.clone())
            .filter(|h| !h.is_empty());
        let renewed = spec
            .and_then(|s| s.renew_time.as_ref().or(s.acquire_time.as_ref()))
            .map(|t| t.0);
        let seconds = spec.and_then(|s| s.lease_duration_seconds).unwrap_or(0);
        Self {
            expires: renewed.map(|r| r + SignedDuration::from_secs(i64::from(seconds))),
            holder,
            renewed,
            annotations: lease.metadata.annotations.clone().unwrap_or_default(),
        }
    }

    /// [`LockError::Held`] when someone else holds the lease now.
    pub fn refusal(&self, namespace: &str, name: &str) -> Option<LockError> {
        let now = Timestamp::now();
        if !self.is_held(now) {
            return None;
        }
        let expires = self.expires.unwrap_or(now);
        Some(LockError::Held {
            namespace: namespace.to_string(),
            name: name.to_string(),
            holder: self.holder.clone().unwrap_or_default(),
            renewed_ago: seconds(now.duration_since(self.renewed.unwrap_or(now))),
            expires_in: seconds(expires.duration_since(now)),
        })
    }

    /// Held by someone whose lease has not expired.
    pub fn is_held(&self, now: Timestamp) -> bool {
        self.holder.is_some() && self.expires.is_some_and(|e| e > now)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another kordon run holds the lock (lease {namespace}/{name}): {holder}, renewed {renewed_ago} ago; it expires in {expires_in} unless renewed; try again later"
    )]
    Held {
        namespace: String,
        name: String,
        holder: String,
        renewed_ago: String,
        expires_in: String,
    },
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

impl LockError {
    pub fn advice(&self) -> Vec<Advice> {
        match self {
            Self::Held { .. } => vec![Advice::Give(Flag::LockTimeout, "wait for it")],
            Self::Cluster(e) => e.advice(),
        }
    }
}

/// Reads the lease; `None` when it was never created.
pub async fn read(
    conn: &Connection,
    namespace: &str,
    name: &str,
) -> Result<Option<LeaseState>, ClusterError> {
    let api: Api<Lease> = Api::namespaced(conn.client.clone(), namespace);
    api.get_opt(name)
        .await
        .map(|l| l.as_ref().map(LeaseState::of))
        .map_err(|e| conn.error(format!("read lease {namespace}/{name}"), e))
}

/// A lock this process holds, renewed in the background until released or dropped.
pub struct HeldLock {
    api: Api<Lease>,
    spec: LockSpec,
    renewer: tokio::task::JoinHandle<()>,
    lost: watch::Receiver<bool>,
}

/// Waits until no one else holds the lease, up to `wait` (polling at its expiry, since
/// that is when it can change hands), and returns it as then read; past `wait`, names
/// the holder in [`LockError::Held`].
pub async fn wait_free(
    conn: &Connection,
    namespace: &str,
    name: &str,
    wait: Duration,
) -> Result<Option<LeaseState>, LockError> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let state = read(conn, namespace, name).await?;
        let Some(refusal) = state.as_ref().and_then(|s| s.refusal(namespace, name)) else {
            return Ok(state);
        };
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if remaining.is_zero() {
            return Err(refusal);
        }
        let now = Timestamp::now();
        let expires = state.and_then(|s| s.expires).unwrap_or(now);
        let until_expiry = expires.duration_since(now).unsigned_abs();
        tokio::time::sleep(until_expiry.min(remaining) + Duration::from_millis(200)).await;
    }
}

/// Takes the lock, writing `annotations` into the lease; refuses with
/// [`LockError::Held`] when someone else holds it (wait with [`wait_free`] first).
pub async fn acquire(
    conn: &Connection,
    spec: &LockSpec,
    annotations: BTreeMap<String, String>,
) -> Result<HeldLock, LockError> {
    let api: Api<Lease> = Api::namespaced(conn.client.clone(), &spec.namespace);
    loop {
        let current = api
            .get_opt(&spec.name)
            .await
            .map_err(|e| conn.error(format!("read lease {}/{}", spec.namespace, spec.name), e))?;
        let now = Timestamp::now();
        let state = current.as_ref().map(LeaseState::of).unwrap_or_default();
        if let Some(refusal) = state.refusal(&spec.namespace, &spec.name) {
            return Err(refusal);
        }
        let mut lease = current.unwrap_or_else(|| Lease {
            metadata: ObjectMeta {
                name: Some(spec.name.clone()),
                namespace: Some(spec.namespace.clone()),
                ..Default::default()
            },
            spec: None,
        });
        lease
            .metadata
            .annotations
            .get_or_insert_default()
            .extend(annotations.clone());
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(spec.holder.clone()),
            lease_duration_seconds: Some(duration_seconds(spec.duration)),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(
                lease
                    .spec
                    .as_ref()
                    .and_then(|s| s.lease_transitions)
                    .unwrap_or(0)
                    + 1,
            ),
            ..Default::default()
        });
        let written = if lease.meta().resource_version.is_some() {
            api.replace(&spec.name, &PostParams::default(), &lease)
                .await
        } else {
            api.create(&PostParams::default(), &lease).await
        };
        match written {
            Ok(written) => {
                let (tx, lost) = watch::channel(false);
                let renewer = tokio::spawn(renew(api.clone(), spec.clone(), written, tx));
                return Ok(HeldLock {
                    api,
                    spec: spec.clone(),
                    renewer,
                    lost,
                });
            }
            // Someone else wrote in between: read again and decide again.
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => {
                return Err(conn
                    .error(
                        format!(
                            "take lease {}/{} (create/update leases)",
                            spec.namespace, spec.name
                        ),
                        e,
                    )
                    .into());
            }
        }
    }
}

fn seconds(d: SignedDuration) -> String {
    format!("{}s", d.as_secs().max(0))
}

fn duration_seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs().max(1)).unwrap_or(i32::MAX)
}

/// Renews at a third of the duration, writing over the lease it last wrote (one
/// request); a lease found taken by someone else (or not renewable until it expired)
/// is reported lost.
async fn renew(api: Api<Lease>, spec: LockSpec, mut last: Lease, lost: watch::Sender<bool>) {
    let period = spec.duration / 3;
    let mut last_renewed = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(period).await;
        match renew_once(&api, &spec, &mut last).await {
            Ok(true) => last_renewed = tokio::time::Instant::now(),
            Ok(false) => {
                let _ = lost.send(true);
                return;
            }
            Err(e) => {
                // A lost connection is the outage the view tells once; the lease's
                // expiry below is what matters then.
                let lost_server = matches!(e, kube::Error::HyperError(_) | kube::Error::Service(_));
                if lost_server {
                    tracing::debug!(
                        "renewing lease {}/{} failed: {e}",
                        spec.namespace,
                        spec.name
                    );
                } else {
                    tracing::warn!(
                        "renewing lease {}/{} failed: {e}",
                        spec.namespace,
                        spec.name
                    );
                }
                if last_renewed.elapsed() >= spec.duration {
                    let _ = lost.send(true);
                    return;
                }
            }
        }
    }
}

/// `Ok(false)` when the lease is no longer ours. A write that finds the lease changed
/// since (409) reads it again and retries once.
async fn renew_once(
    api: &Api<Lease>,
    spec: &LockSpec,
    last: &mut Lease,
) -> Result<bool, kube::Error> {
    for fresh_read in [false, true] {
        if fresh_read {
            match api.get_opt(&spec.name).await? {
                Some(lease) => *last = lease,
                None => return Ok(false),
            }
        }
        let Some(lease_spec) = last.spec.as_mut() else {
            return Ok(false);
        };
        if lease_spec.holder_identity.as_deref() != Some(spec.holder.as_str()) {
            return Ok(false);
        }
        lease_spec.renew_time = Some(MicroTime(Timestamp::now()));
        match api.replace(&spec.name, &PostParams::default(), last).await {
            Ok(written) => {
                *last = written;
                return Ok(true);
            }
            Err(kube::Error::Api(s)) if s.code == 409 && !fresh_read => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

impl HeldLock {
    /// Becomes true if the lock was lost (taken over, or not renewed in time).
    pub fn lost(&self) -> watch::Receiver<bool> {
        self.lost.clone()
    }

    /// Gives the lock up, leaving `annotations` as the record of the run.
    pub async fn release(self, annotations: BTreeMap<String, String>) -> Result<(), kube::Error> {
        self.renewer.abort();
        for _ in 0..5 {
            let Some(mut lease) = self.api.get_opt(&self.spec.name).await? else {
                return Ok(());
            };
            let ours = lease
                .spec
                .as_ref()
                .and_then(|s| s.holder_identity.as_deref())
                == Some(self.spec.holder.as_str());
            if !ours {
                return Ok(());
            }
            lease
                .metadata
                .annotations
                .get_or_insert_default()
                .extend(annotations.clone());
            if let Some(s) = lease.spec.as_mut() {
                s.holder_identity = None;
                s.renew_time = None;
                s.acquire_time = None;
            }
            match self
                .api
                .replace(&self.spec.name, &PostParams::default(), &lease)
                .await
            {
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                other => return other.map(|_| ()),
            }
        }
        Ok(())
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}
