//! Cluster access: a client from kubeconfig, API errors turned into sentences a user
//! can act on, and the few reads and writes the workflow needs on nodes, leases and
//! events.
pub mod access;
pub mod attachments;
pub mod changes;
mod connect;
mod error;
pub mod events;
pub mod lease;
pub mod load_balancers;
pub mod nodes;
pub mod usage;
pub mod view;

pub use connect::{Connection, ConnectionOptions, Reachability, Reconnect, Teller};
pub use error::ClusterError;
