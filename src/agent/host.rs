//! Commands on the node's host. Each runs through `kordon host-exec`: a fresh process
//! of the agent's own binary that enters the host's root file system (mounted into the
//! pod) and becomes the command, so the agent's image needs no shell or nsenter. With
//! the pod's host PID, network and IPC namespaces, the command sees the host as a shell
//! on it would.
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// How much of a command's output is kept: its end, where the error usually is.
const TAIL: usize = 2048;

/// Where host commands run.
#[derive(Debug, Clone)]
pub struct Host {
    /// The binary that enters the host (`kordon` itself, which has `host-exec`).
    pub exe: PathBuf,
    /// The host's root file system as the agent sees it, e.g. `/host`.
    pub root: PathBuf,
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ran {
    pub exit_code: Option<i32>,
    /// Why there is no exit code.
    pub error: Option<String>,
    /// The end of its output, stdout and stderr as they came.
    pub output: String,
}

impl Host {
    /// Runs `argv` on the host; past `limit` its whole process group is killed.
    pub async fn run(&self, argv: &[String], limit: Duration) -> Ran {
        let failed = |error: String| Ran {
            exit_code: None,
            error: Some(error),
            output: String::new(),
        };
        let (reader, writer) = match std::io::pipe() {
            Ok(pipe) => pipe,
            Err(e) => return failed(format!("could not start: {e}")),
        };
        let mut command = tokio::process::Command::new(&self.exe);
        command
            .arg("host-exec")
            .arg("--root")
            .arg(&self.root)
            .arg("--")
            .args(argv)
            .stdin(Stdio::null())
            .process_group(0)
            .kill_on_drop(true);
        match writer.try_clone() {
            Ok(copy) => command.stdout(copy).stderr(writer),
            Err(e) => return failed(format!("could not start: {e}")),
        };
        let spawned = command.spawn();
        // Our ends of the pipe's write side go with the command, so the reader sees the
        // end of the output when the command's processes are gone.
        drop(command);
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => return failed(format!("could not start: {e}")),
        };
        let tail = Arc::new(Mutex::new(Vec::new()));
        let reading = tokio::task::spawn_blocking({
            let tail = tail.clone();
            move || keep_tail(reader, &tail)
        });
        let (exit_code, error) = match tokio::time::timeout(limit, child.wait()).await {
            Ok(Ok(status)) => match status.code() {
                Some(code) => (Some(code), None),
                None => (None, Some(format!("was killed ({status})"))),
            },
            Ok(Err(e)) => (None, Some(format!("could not be waited for: {e}"))),
            Err(_) => {
                if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                    let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                }
                let _ = child.wait().await;
                let limit = humantime::format_duration(limit);
                (None, Some(format!("ran past its timeout of {limit}")))
            }
        };
        // A process it left behind may hold the output open: what came so far is kept.
        let _ = tokio::time::timeout(Duration::from_secs(1), reading).await;
        let output = tail.lock().map(|t| tail_text(&t)).unwrap_or_default();
        Ran {
            exit_code,
            error,
            output,
        }
    }
}

fn keep_tail(mut reader: impl std::io::Read, tail: &Mutex<Vec<u8>>) {
    let mut buf = [0_u8; 4096];
    while let Ok(n) = reader.read(&mut buf) {
        if n == 0 {
            return;
        }
        let Ok(mut kept) = tail.lock() else { return };
        kept.extend_from_slice(&buf[..n]);
        let over = kept.len().saturating_sub(TAIL);
        kept.drain(..over);
    }
}

fn tail_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_end_of_a_long_output_is_kept() {
        let long: Vec<u8> = (0..5000)
            .map(|i| b'a' + u8::try_from(i % 26).unwrap_or(0))
            .collect();
        let tail = Mutex::new(Vec::new());
        keep_tail(&long[..], &tail);
        let kept = tail.lock().map(|t| t.clone()).unwrap_or_default();
        assert_eq!(kept.len(), TAIL);
        assert_eq!(kept[..], long[long.len() - TAIL..]);
    }
}
