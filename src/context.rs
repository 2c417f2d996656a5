//! What the work of one process shares: the connection, the one view of the cluster,
//! the rights already granted, and the turns that pace evictions. Passed to every
//! drain (a roll's drains share one), instead of process-wide statics.
use crate::cluster::access::Granted;
use crate::cluster::view::View;
use crate::cluster::{ClusterError, Connection, ConnectionOptions};
use crate::drain::Turns;

pub struct Context {
    pub conn: Connection,
    pub view: View,
    pub granted: Granted,
    /// Names what this process creates in the cluster (see [`crate::drain::shared`]).
    pub run: String,
    pub(crate) turns: Turns,
}

impl Context {
    pub fn new(conn: Connection) -> Self {
        Self {
            view: View::new(&conn),
            conn,
            granted: Granted::default(),
            run: format!(
                "{:x}",
                (jiff::Timestamp::now().as_millisecond() as u64 & 0xffff_ffff)
                    ^ u64::from(std::process::id())
            ),
            turns: Turns::default(),
        }
    }

    /// Connects as [`Connection::open`] does.
    pub async fn open(options: &ConnectionOptions) -> Result<Self, ClusterError> {
        Ok(Self::new(Connection::open(options).await?))
    }
}
