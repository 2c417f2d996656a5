//! Counting a tool's own API requests: the tool runs as a dedicated service account,
//! and the API server's audit log (testbed/audit-policy.yaml) attributes each request
//! to it.
use std::path::PathBuf;

use super::TestEnv;

/// A cluster-admin service account of the test's namespace, and a kubeconfig that
/// authenticates as it. Returns the kubeconfig's path and the user name the audit log
/// records.
pub fn tool_identity(env: &TestEnv) -> (PathBuf, String) {
    let user = format!("system:serviceaccount:{}:tool", env.ns());
    let run = |args: &[&str]| {
        let out = env.kubectl().args(args).output().expect("kubectl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    run(&["create", "serviceaccount", "tool", "-n", env.ns()]);
    run(&[
        "create",
        "clusterrolebinding",
        env.ns(),
        "--clusterrole=cluster-admin",
        &format!("--serviceaccount={}:tool", env.ns()),
    ]);
    let token = run(&["create", "token", "tool", "-n", env.ns(), "--duration=2h"]);
    (super::kubeconfig_with_token(env.ns(), &token), user)
}

fn log_path() -> PathBuf {
    super::kubeconfig()
        .parent()
        .expect("dir")
        .join("logs/audit.log")
}

/// One audited request.
#[derive(Debug, Clone)]
pub struct Request {
    pub verb: String,
    pub resource: String,
    pub namespace: Option<String>,
    pub uri: String,
}

impl Request {
    /// A query parameter of the request, URL-decoded.
    pub fn param(&self, name: &str) -> Option<String> {
        let query = self.uri.split_once('?')?.1;
        query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == name).then(|| decode(v))
        })
    }
}

fn decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The audit log from a point on.
pub struct Audit {
    from: u64,
}

impl Audit {
    /// Marks the log's current end: later reads see only what follows.
    pub fn start() -> Self {
        Self {
            from: std::fs::metadata(log_path()).map(|m| m.len()).unwrap_or(0),
        }
    }

    /// Every request `user` made since the start.
    pub fn requests_by(&self, user: &str) -> Vec<Request> {
        let text = std::fs::read(log_path()).unwrap_or_default();
        let start = (self.from as usize).min(text.len());
        String::from_utf8_lossy(&text[start..])
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            // A watch is logged when its response starts (and again when it ends); any
            // other request when it completes.
            .filter(|e| {
                e["user"]["username"] == user
                    && match e["verb"].as_str() {
                        Some("watch") => e["stage"] == "ResponseStarted",
                        _ => e["stage"] == "ResponseComplete",
                    }
            })
            .map(|e| Request {
                verb: e["verb"].as_str().unwrap_or_default().to_string(),
                resource: e["objectRef"]["resource"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                namespace: e["objectRef"]["namespace"].as_str().map(str::to_string),
                uri: e["requestURI"].as_str().unwrap_or_default().to_string(),
            })
            .collect()
    }
}
