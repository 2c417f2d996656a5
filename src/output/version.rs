//! `kordon version`: ours, then the server's, as `kubectl version` prints them.
use serde::Serialize;

use super::Report;

#[derive(Serialize)]
pub struct Versions {
    pub client: &'static str,
    pub server: String,
}

impl Report for Versions {
    fn text(&self) -> String {
        format!("kordon {}\nserver {}", self.client, self.server)
    }
}
