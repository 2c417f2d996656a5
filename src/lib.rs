//! kordon takes Kubernetes nodes out of service and back with zero downtime for the
//! workloads on them: cordon, drain, maintenance, uncordon.
//!
//! Deciding (what a node's state is, which pod may go) is pure code over `k8s-openapi`
//! objects; doing (patching, evicting, watching) lives in [`cluster`] and is kept thin.
#![forbid(unsafe_code)]
// A function over ~100 lines (clippy.toml) mixes steps that want names of their own.
#![warn(clippy::too_many_lines)]

pub mod advice;
pub mod agent;
pub mod api;
pub mod budget;
pub mod classify;
pub mod cluster;
pub mod context;
pub mod controller;
pub mod drain;
pub mod endpoints;
pub mod error;
pub mod evict;
pub mod exclusion;
pub mod fence;
pub mod flag;
pub mod fleet;
pub mod guard;
pub mod http;
pub mod interrupt;
pub mod metric_gate;
pub mod names;
pub mod node_state;
pub mod notify;
pub mod output;
pub mod phase;
pub mod placement;
pub mod plan;
pub mod pod;
pub mod policy;
pub mod selector;
pub mod snapshot;
pub mod status;
pub mod tiers;
pub mod workflow;
pub mod workload;
