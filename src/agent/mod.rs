//! `kordon agent`: the node agent, one per node (a DaemonSet), acting for its own node
//! only. It runs a NodeMaintenance's host step once the node is drained (`reboot`
//! through the host's init, or `command`), and raises the node's trigger label when a
//! sentinel says the node needs maintenance. It writes only its own Node (a
//! ValidatingAdmissionPolicy in the chart holds it to that): the record of each step
//! in an annotation the controller copies into the NodeMaintenance's status, and the
//! trigger label. It reads its node and the NodeMaintenances that name it, by field
//! selector, so its cost does not grow with the cluster.
pub mod decide;
pub mod host;
pub mod sentinel;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use tokio::sync::Notify;

use crate::api::NodeMaintenance;
use crate::api::node_maintenance::{HOST_STEP, HostStep, HostStepKind};
use crate::cluster::nodes::{self, DryRun};
use crate::cluster::{ClusterError, Connection};
use crate::names::NodeName;
use decide::Work;
use host::{Host, Ran};
use sentinel::{Sentinel, TRIGGER_LABEL};

/// How long the reboot command may take to return: `systemctl reboot` returns once
/// the shutdown is queued.
const REBOOT_LIMIT: Duration = Duration::from_secs(120);

/// What the agent does, and where.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub node: NodeName,
    pub host: Host,
    /// Run on the host for a `reboot` step.
    pub reboot_command: Vec<String>,
    /// Any one of them saying so makes the node need maintenance.
    pub sentinels: Vec<Sentinel>,
    /// How often the sentinels are looked at.
    pub check_every: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("the watch of node {0} ended")]
    WatchEnded(NodeName),
}

/// Runs until the watches end (the process is stopped).
pub async fn run(conn: &Connection, options: &AgentOptions) -> Result<(), AgentError> {
    let node_name = options.node.clone();
    let changed = Arc::new(Notify::new());
    let nodes: Api<Node> = Api::all(conn.client.clone());
    let by_name = watcher::Config::default().fields(&format!("metadata.name={node_name}"));
    let node_store = follow(nodes, by_name, changed.clone());
    let maintenances: Api<NodeMaintenance> = Api::all(conn.client.clone());
    let naming = watcher::Config::default().fields(&format!("spec.nodeName={node_name}"));
    let maintenance_store = follow(maintenances, naming, changed.clone());
    for store in [
        node_store.wait_until_ready().await,
        maintenance_store.wait_until_ready().await,
    ] {
        store.map_err(|_| AgentError::WatchEnded(node_name.clone()))?;
    }
    tracing::info!("agent for node {node_name}: watching its NodeMaintenances");
    let mut check = tokio::time::interval(options.check_every);
    let mut ran_here = BTreeSet::new();
    loop {
        let look_at_sentinels = tokio::select! {
            () = changed.notified() => false,
            _ = check.tick() => !options.sentinels.is_empty(),
        };
        let Some(node) = node_store.get(&ObjectRef::new(node_name.as_str())) else {
            tracing::warn!("node {node_name} is not in the cluster");
            continue;
        };
        let mine = maintenance_store.state();
        if let Some(work) = decide::next(&node, &mine, &ran_here) {
            if let Err(e) = carry_out(conn, options, work, &mut ran_here).await {
                tracing::warn!("{e}");
            }
            continue;
        }
        if look_at_sentinels {
            let needed = needs_maintenance(options, &node).await;
            let under_way = decide::under_way(&mine);
            let now = jiff::Timestamp::now();
            if let Some(value) = sentinel::trigger_change(&node, needed, under_way, now) {
                match &value {
                    Some(v) => {
                        tracing::info!("node {node_name} needs maintenance: {TRIGGER_LABEL}={v}")
                    }
                    None => tracing::info!("node {node_name} no longer needs maintenance"),
                }
                if let Err(e) =
                    nodes::set_label(conn, &node_name, TRIGGER_LABEL, value.as_deref()).await
                {
                    tracing::warn!("{e}");
                }
            }
        }
    }
}

/// A reflector of `api` as `config` scopes it, kept in a background task that wakes
/// `changed` on every event.
fn follow<K>(api: Api<K>, config: watcher::Config, changed: Arc<Notify>) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config)).default_backoff();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => changed.notify_one(),
                Err(e) => tracing::debug!("watch: {e}"),
            }
        }
    });
    store
}

/// Records the step on the node before it runs (a reboot may end the agent mid-way,
/// and the record is what keeps it from running twice), runs it, and records how it
/// ended. A step whose first record could not be written did not run: it is tried
/// again at the next look. One that did is in `ran_here`.
async fn carry_out(
    conn: &Connection,
    options: &AgentOptions,
    work: Work,
    ran_here: &mut BTreeSet<String>,
) -> Result<(), ClusterError> {
    let node = &options.node;
    let (uid, kind, argv, limit) = match work {
        Work::Interrupted(record) => {
            tracing::warn!(
                "node {node}: a command {}",
                record.error.as_deref().unwrap_or_default()
            );
            let record = HostStep {
                finished_at: Some(now()),
                ..record
            };
            write(conn, node, &record).await?;
            ran_here.insert(record.uid);
            return Ok(());
        }
        Work::Reboot { uid, name } => {
            tracing::info!("node {node}: rebooting for NodeMaintenance {name}");
            (
                uid,
                HostStepKind::Reboot,
                options.reboot_command.clone(),
                REBOOT_LIMIT,
            )
        }
        Work::Command {
            uid,
            name,
            argv,
            limit,
        } => {
            tracing::info!(
                "node {node}: running `{}` for NodeMaintenance {name}",
                argv.join(" ")
            );
            (uid, HostStepKind::Command, argv, limit)
        }
    };
    let started = HostStep {
        uid,
        step: kind,
        started_at: now(),
        finished_at: None,
        exit_code: None,
        error: None,
        output: None,
    };
    write(conn, node, &started).await?;
    ran_here.insert(started.uid.clone());
    let Ran {
        exit_code,
        error,
        output,
    } = options.host.run(&argv, limit).await;
    tracing::info!(
        "node {node}: `{}` ended: exit code {exit_code:?}, {error:?}",
        argv.join(" ")
    );
    let ended = HostStep {
        finished_at: Some(now()),
        exit_code,
        error,
        output: (!output.is_empty()).then_some(output),
        ..started
    };
    write(conn, node, &ended).await
}

async fn write(conn: &Connection, node: &NodeName, record: &HostStep) -> Result<(), ClusterError> {
    let json = serde_json::to_string(record).unwrap_or_default();
    let annotations = [(HOST_STEP.to_string(), Some(json))].into_iter().collect();
    nodes::patch(conn, node, None, &annotations, DryRun::None)
        .await
        .map(|_| ())
}

/// Whether any sentinel says the node needs maintenance. A sentinel that cannot be
/// looked at says no, and is logged.
async fn needs_maintenance(options: &AgentOptions, node: &Node) -> bool {
    for sentinel in &options.sentinels {
        let says = match sentinel {
            Sentinel::File(file) => Sentinel::file_under(&options.host.root, file).exists(),
            Sentinel::Condition(type_) => sentinel::condition_true(node, type_),
            Sentinel::Command(argv) => {
                let ran = options
                    .host
                    .run(argv, options.check_every.max(Duration::from_secs(10)))
                    .await;
                if let Some(error) = &ran.error {
                    tracing::warn!("sentinel `{}` {error}", argv.join(" "));
                }
                ran.exit_code == Some(0)
            }
        };
        if says {
            return true;
        }
    }
    false
}

fn now() -> Time {
    Time(jiff::Timestamp::now())
}
