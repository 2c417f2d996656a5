//! The skeleton's promises: `kordon version` talks to the server, and a broken or
//! missing kubeconfig is one sentence and a non-zero exit (after kordon's own version,
//! as `kubectl version` prints its client's).
mod support;

use std::process::Command;

fn kordon() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kordon"))
}

#[test]
fn version_prints_client_and_server() {
    let out = kordon()
        .arg("--kubeconfig")
        .arg(support::kubeconfig())
        .arg("version")
        .output()
        .expect("run kordon");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&format!("kordon {}", env!("CARGO_PKG_VERSION"))));
    assert!(stdout.contains("server v1.33."), "{stdout}");
}

fn assert_one_sentence_error(out: &std::process::Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains(needle), "{stderr} should mention {needle}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("kordon {}", env!("CARGO_PKG_VERSION")),
        "kordon's own version comes first, whatever the server"
    );
}

#[test]
fn version_client_asks_no_server() {
    let out = kordon()
        .args([
            "--kubeconfig",
            "/nonexistent/kubeconfig",
            "version",
            "--client",
            "-o",
            "json",
        ])
        .output()
        .expect("run kordon");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        v,
        serde_json::json!({ "client": env!("CARGO_PKG_VERSION") })
    );
}

#[test]
fn completion_scripts_for_each_shell() {
    for (shell, marker) in [
        ("bash", "complete -F _kordon"),
        ("zsh", "#compdef kordon"),
        ("fish", "complete -c kordon"),
    ] {
        let out = kordon()
            .args(["completion", shell])
            .output()
            .expect("run kordon");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && script.contains(marker),
            "{shell}: {script:.200}"
        );
        assert!(
            script.contains("maintain"),
            "{shell} completes the subcommands"
        );
    }
    let out = kordon()
        .args(["completion", "tcsh"])
        .output()
        .expect("run kordon");
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[test]
fn missing_kubeconfig_is_one_sentence() {
    let out = kordon()
        .args(["--kubeconfig", "/nonexistent/kubeconfig", "version"])
        .output()
        .expect("run kordon");
    assert_one_sentence_error(&out, "/nonexistent/kubeconfig");
}

/// Runs `kordon version` with a kubeconfig holding `contents`.
fn version_with_kubeconfig(name: &str, contents: &str) -> std::process::Output {
    let path = std::env::temp_dir().join(format!("kordon-{name}-{}", std::process::id()));
    std::fs::write(&path, contents).expect("write");
    let out = kordon()
        .arg("--kubeconfig")
        .arg(&path)
        .arg("version")
        .output()
        .expect("run kordon");
    let _ = std::fs::remove_file(&path);
    out
}

#[test]
fn garbage_kubeconfig_is_one_sentence() {
    let out = version_with_kubeconfig("garbage", "this: [is not a kubeconfig");
    assert_one_sentence_error(&out, "cannot load kubeconfig");
}

#[test]
fn unreachable_server_is_one_sentence() {
    let out = version_with_kubeconfig(
        "unreachable",
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:1'}\n\
         users:\n- name: u\n  user: {token: t}\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\n\
         current-context: x\n",
    );
    assert_one_sentence_error(
        &out,
        "cannot reach the Kubernetes API server at https://127.0.0.1:1",
    );
}

#[test]
fn works_as_a_kubectl_plugin() {
    let dir = std::env::temp_dir().join(format!("kordon-plugin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let plugin = dir.join("kubectl-kordon");
    let _ = std::fs::remove_file(&plugin);
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_kordon"), &plugin).expect("symlink");
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("kubectl")
        .args(["kordon", "--kubeconfig"])
        .arg(support::kubeconfig())
        .arg("version")
        .env("PATH", path)
        .output()
        .expect("run kubectl kordon");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("server v1.33."));
}
