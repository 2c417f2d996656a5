//! `kordon version`: ours, then the server's, as `kubectl version` prints them.
use serde::Serialize;

use super::Report;

#[derive(Serialize)]
pub struct Versions {
    pub client: &'static str,
    /// `None` with `--client`, or when no server answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
}

impl Report for Versions {
    fn text(&self) -> String {
        match &self.server {
            Some(server) => format!("kordon {}\nserver {server}", self.client),
            None => format!("kordon {}", self.client),
        }
    }
}
