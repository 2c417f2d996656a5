//! The container image built from scratch by deploy/image/build.sh (umoci, no base
//! image, no container runtime), read back with skopeo: its config is what the chart
//! relies on (entrypoint, non-root user, labels), and the binary in it is static, so
//! it runs with nothing else in the image.
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn run(command: &mut Command) -> String {
    let out = command.output().expect("run");
    assert!(
        out.status.success(),
        "{command:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_image_runs_a_static_kordon_as_a_non_root_user() {
    let archive = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kordon-image.tar");
    run(Command::new(repo().join("deploy/image/build.sh"))
        .arg(&archive)
        .env("KORDON_IMAGE_PROFILE", "dev"));
    let image = format!("oci-archive:{}", archive.display());

    let config: Value = serde_json::from_str(&run(
        Command::new("skopeo").args(["inspect", "--config", &image])
    ))
    .expect("image config");
    assert_eq!(config["os"], json!("linux"));
    assert_eq!(config["architecture"], json!("amd64"));
    let process = &config["config"];
    assert_eq!(process["Entrypoint"], json!(["/kordon"]));
    assert_eq!(process["Cmd"], json!(["controller"]));
    assert_eq!(process["User"], json!("65532:65532"), "not root");
    let labels = &process["Labels"];
    assert_eq!(labels["org.opencontainers.image.title"], json!("kordon"));
    assert_eq!(
        labels["org.opencontainers.image.version"],
        json!(env!("CARGO_PKG_VERSION"))
    );

    // One layer: the binary and the user it runs as, nothing else.
    let manifest: Value =
        serde_json::from_str(&run(Command::new("skopeo").args(["inspect", &image])))
            .expect("image manifest");
    assert_eq!(
        manifest["Layers"].as_array().map(Vec::len),
        Some(1),
        "{manifest}"
    );

    // Where deploy/image/build.sh built it: under CARGO_TARGET_DIR when one is set.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| repo().join("target"), std::path::PathBuf::from);
    let binary = target.join("x86_64-unknown-linux-musl/debug/kordon");
    let ldd = Command::new("ldd").arg(&binary).output().expect("ldd");
    let said =
        String::from_utf8_lossy(&ldd.stdout).to_string() + &String::from_utf8_lossy(&ldd.stderr);
    assert!(
        said.contains("not a dynamic executable") || said.contains("statically linked"),
        "{said}"
    );
    let version = run(Command::new(&binary).arg("--version"));
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
}
