//! Bad input, as a new user types it: every mistake is one sentence on stderr, the exit
//! code scripts can branch on (2 for bad input, whether clap's parsers, a later check
//! or the API server found it out; 1 for what only the cluster can tell), and nothing
//! changed: the node stays schedulable, carries no
//! kordon annotation, and its pods are the same pods.
//!
//! Mistakes in the command line itself are refused before any request, so their rows
//! run without a cluster too; the rest need one to be found out.
mod support;

use std::process::{Command, Stdio};

use support::{Run, TestEnv};

/// Stands for the test's node in a row's arguments.
const NODE: &str = "NODE";

/// One bad command line and what kordon must answer.
struct Case {
    args: &'static [&'static str],
    code: i32,
    says: &'static str,
    /// Found out only by asking the API server (or by reading the kubeconfig).
    cluster: bool,
}

const fn parse(args: &'static [&'static str], says: &'static str) -> Case {
    Case {
        args,
        code: 2,
        says,
        cluster: false,
    }
}

/// Refused before any request, by a check after parsing.
const fn early(args: &'static [&'static str], says: &'static str) -> Case {
    Case {
        args,
        code: 2,
        says,
        cluster: false,
    }
}

const fn cluster(args: &'static [&'static str], code: i32, says: &'static str) -> Case {
    Case {
        args,
        code,
        says,
        cluster: true,
    }
}

/// Every flag of every command, tried with a value that can only be a mistake.
#[rustfmt::skip]
const CASES: &[Case] = &[
    // Node names, for every command that takes them.
    parse(&["drain", "bad name!"], "\"bad name!\" is not a valid node name: it contains ' '"),
    parse(&["status", "Node-1"], "\"Node-1\" is not a valid node name: it contains the capital 'N'"),
    parse(&["cordon", "node_1"], "\"node_1\" is not a valid node name"),
    parse(&["uncordon", "-node"], "unexpected argument '-n'"), // clap reads it as flags
    parse(&["uncordon", "node-"], "\"node-\" starts or ends with '-'"),
    parse(&["plan", "a..b"], "\"a..b\" is not a valid node name"),
    parse(&["maintain", "bad/node", "--", "true"], "\"bad/node\" is not a valid node name"),
    parse(&["roll", "node?", "--", "true"], "\"node?\" is not a valid node name"),
    // Output and global flags.
    parse(&["-o", "xml", "status"], "invalid value 'xml' for '--output"),
    parse(&["status", "--lock-namespace=Kube_System"], "\"Kube_System\" is not a valid namespace name"),
    // drain (maintain and roll share these flags).
    parse(&["drain", NODE, "--concurrency", "0"], "--concurrency 0: must be at least 1"),
    parse(&["drain", NODE, "--concurrency", "many"], "--concurrency many: must be a whole number"),
    parse(&["drain", NODE, "--grace-period", "-7"], "--grace-period -7: must be -1"),
    parse(&["drain", NODE, "--grace-period", "30s"], "--grace-period 30s: must be -1"),
    parse(&["drain", NODE, "--timeout", "5parsecs"], "--timeout 5parsecs: unknown time unit \"parsecs\""),
    parse(&["drain", NODE, "--timeout", ""], "--timeout \"\": value was empty"),
    parse(&["drain", NODE, "--timeout", "1000years"], "--timeout 1000years: must be at most a year"),
    parse(&["drain", NODE, "--budget", "none"], "invalid value 'none' for '--budget"),
    parse(&["drain", NODE, "--dry-run=maybe"], "invalid value 'maybe' for '--dry-run"),
    parse(&["drain", NODE, "--deadline", "soon"], "--deadline soon:"),
    parse(&["drain", NODE, "--delete-past-budget", "web"], "required arguments were not provided: --deadline"),
    parse(&["drain", NODE, "--deadline", "1m", "--delete-past-budget", "Web"], "\"Web\" is not a valid namespace name"),
    parse(&["drain", NODE, "--deadline", "1m", "--delete-past-budget", ":app=web"], "names no namespace"),
    parse(&["drain", NODE, "--deadline", "1m", "--on-deadline", "panic"], "invalid value 'panic' for '--on-deadline"),
    early(&["drain", NODE, "--deadline", "10m", "--timeout", "5m"], "--deadline 10m is not before --timeout 5m"),
    parse(&["drain", NODE, "--deregistration-delay", "5s"], "required arguments were not provided: --exclude-from-load-balancers"),
    parse(&["drain", NODE, "--exclude-from-load-balancers", "--deregistration-delay", "later"], "--deregistration-delay later:"),
    parse(&["drain", NODE, "--forse"], "unexpected argument '--forse' found; tip: a similar argument exists: '--force'"),
    parse(&["cordon", NODE, "-l", "a=b"], "cannot be used with"),
    parse(&["drain", NODE, "--drain-order", "app"], "--drain-order app: write SELECTOR=N"),
    parse(&["drain", NODE, "--drain-order", "app=db"], "the order \"db\" is not a whole number"),
    parse(&["plan", NODE, "--drain-order", "=3"], "--drain-order =3: the selector is empty"),
    parse(&["maintain", NODE, "--drain-order", "bad key!=x=1", "--", "true"], "\"bad key\" is not a label key"),
    parse(&["roll", NODE, "--drain-order", "app in (a=2", "--", "true"], "a \"(\" without its \")\""),
    // agent
    parse(&["agent", "--node", "Node_1"], "\"Node_1\" is not a valid node name"),
    parse(&["agent", "--node", NODE, "--check-every", "0s"], "--check-every 0s: must be more than 0"),
    parse(&["host-exec", "--root", "/"], "required arguments were not provided"),
    // maintain
    parse(&["maintain", NODE, "--ready-timeout", "0s", "--", "true"], "--ready-timeout 0s: must be more than 0"),
    parse(&["maintain", NODE, "--volume-detach-timeout", "soon", "--", "true"], "--volume-detach-timeout soon:"),
    parse(&["maintain", NODE, "--on-detach-timeout", "ignore", "--", "true"], "invalid value 'ignore' for '--on-detach-timeout"),
    early(&["maintain", NODE], "say what the maintenance is"),
    early(&["maintain", NODE, "--manual"], "--manual waits for Enter on a terminal"),
    parse(&["maintain", NODE, "--manual", "--", "true"], "cannot be used with"),
    // roll
    parse(&["roll", NODE, "--max-unavailable", "half", "--", "true"], "not \"half\""),
    parse(&["roll", NODE, "--max-unavailable-per", "zone=0", "--", "true"], "\"zone=0\" needs a label and at least 1 node"),
    parse(&["roll", NODE, "--max-unavailable-per", "zone", "--", "true"], "\"zone\" is not LABEL=N"),
    parse(&["roll", NODE, "--max-failures", "0", "--", "true"], "--max-failures 0: must be at least 1"),
    parse(&["roll", NODE, "--order", "random", "--", "true"], "invalid value 'random' for '--order"),
    parse(&["roll", NODE, "--window", "Someday 25:00-26:00", "--", "true"], "invalid window \"Someday 25:00-26:00\""),
    parse(&["roll", NODE, "--pause-between", "a while", "--", "true"], "--pause-between \"a while\":"),
    parse(&["roll", NODE, "--max-per", "0s=2", "--", "true"], "--max-per 0s=2: the period must be more than 0"),
    parse(&["roll", NODE, "--max-per", "1h=0", "--", "true"], "--max-per 1h=0: at most 0 starts would never let a node go"),
    parse(&["roll", NODE, "--max-per", "5", "--", "true"], "--max-per 5: write PERIOD=N, e.g. 24h=5"),
    parse(&["roll", NODE, "--max-per", "soon=2", "--", "true"], "--max-per soon=2: the period \"soon\":"),
    parse(&["roll", NODE, "--max-per", "1h=lots", "--", "true"], "\"lots\" is not a number of node starts"),
    parse(&["roll", NODE, "--sequence", "", "--", "true"], "--sequence \"\": the label key is empty"),
    parse(&["roll", NODE, "--sequence", "=a,b", "--", "true"], "--sequence =a,b: the label key is empty"),
    parse(&["roll", NODE, "--sequence", "bad key!=a", "--", "true"], "\"bad key!\" is not a label key"),
    parse(&["roll", NODE, "--sequence", "zone=a,,b", "--", "true"], "--sequence zone=a,,b: the order names an empty domain"),
    parse(&["roll", NODE, "--prometheus", "prometheus:9090", "--pause-on-query", "up == 0", "--", "true"], "\"prometheus:9090\" is not an http:// or https:// URL with a host"),
    parse(&["roll", NODE, "--prometheus", "http://p:9090", "--pause-on-query", " ", "--", "true"], "a query is empty"),
    parse(&["roll", NODE, "--alertmanager", "http://a:9093", "--pause-on-alerts", "severity", "--", "true"], "\"severity\" in \"severity\" is not NAME=VALUE (or !=, =~, !~)"),
    parse(&["roll", NODE, "--alertmanager", "http://a:9093", "--pause-on-alerts", "severity=critical,1x=a", "--", "true"], "\"1x=a\" in \"severity=critical,1x=a\" needs a label name"),
    early(&["roll", NODE, "--pause-on-query", "up == 0", "--", "true"], "--pause-on-query needs --prometheus URL"),
    early(&["roll", NODE, "--prometheus", "http://p:9090", "--", "true"], "--prometheus needs at least one --pause-on-query"),
    early(&["roll", NODE, "--alertmanager", "http://a:9093", "--", "true"], "--alertmanager needs at least one --pause-on-alerts"),
    parse(&["roll", NODE, "--sequence", "zone=a,b,a", "--", "true"], "--sequence zone=a,b,a: the order names \"a\" twice"),
    parse(&["roll", NODE, "--lock-timeout", "-5s", "--", "true"], "unexpected argument '-5'"),
    parse(&["roll", NODE, "--lock-duration", "0s", "--", "true"], "--lock-duration 0s: must be at least 1s"),
    parse(&["roll", NODE, "--gate-timeout", "0s", "--", "true"], "--gate-timeout 0s: must be more than 0"),
    parse(&["roll", NODE, "--count-others-out=no", "--", "true"], "--count-others-out no: must be true or false"),
    parse(&["roll", NODE, "--notify", "hooks.example.com/x", "--", "true"], "webhook \"hooks.example.com/x\" is not an http:// or https:// URL with a host"),
    early(&["roll", NODE, "--dry-run", "--", "true"], "roll has no --dry-run"),
    // controller
    parse(&["controller", "--lease-duration", "500ms"], "--lease-duration 500ms: must be at least 1s"),
    parse(&["controller", "--leader-election-namespace", "Kordon"], "\"Kordon\" is not a valid namespace name"),
    parse(&["controller", "--metrics-address", "nowhere"], "--metrics-address nowhere: invalid socket address"),
    // What only the kubeconfig or the API server can tell.
    cluster(&["--kubeconfig", "/nonexistent/kubeconfig", "drain", NODE], 1, "cannot load kubeconfig \"/nonexistent/kubeconfig\""),
    cluster(&["--context", "nope", "cordon", NODE], 1, "failed to load current context: nope"),
    cluster(&["plan", NODE, "--from-file", "/nonexistent/dump.json"], 1, "cannot read /nonexistent/dump.json"),
    cluster(&["drain", "no-such-node.example"], 1, "node \"no-such-node.example\" not found"),
    cluster(&["cordon", NODE, "no-such-node.example"], 1, "node \"no-such-node.example\" not found"),
    cluster(&["drain", "-l", "a in (b"], 2, "invalid label selector \"a in (b\""),
    cluster(&["status", "-l", "a in (b"], 2, "invalid label selector \"a in (b\""),
    cluster(&["cordon"], 2, "name at least one node, or pass --selector"),
    cluster(&["drain", NODE, "--pod-selector", "a in (b"], 2, "invalid pod selector \"a in (b\""),
    cluster(&["drain", NODE, "--deadline", "1m", "--delete-past-budget", "*:a in (b"], 2, "invalid delete-past-budget rule"),
    cluster(&["roll", NODE, "--max-unavailable", "0", "--", "true"], 2, "--max-unavailable of 0 would never let a node go"),
    cluster(&["roll", NODE, "--max-unavailable", "0%", "--", "true"], 2, "--max-unavailable of 0 would never let a node go"),
    cluster(&["roll", NODE, "--manual", "--max-unavailable", "2"], 2, "--manual waits for Enter on a terminal"),
    // approve
    cluster(&["approve", "--lock-namespace", "no-roll-here"], 1, "no roll is running under --lock-namespace no-roll-here: nothing to approve"),
    cluster(&["approve", "no-such-plan"], 1, "there is no MaintenancePlan no-such-plan"),
];

/// Runs kordon with a row's arguments, `node` standing for [`NODE`], and `kubeconfig`
/// through the environment (so that a row may pass its own `--kubeconfig`).
fn run(case: &Case, node: &str, kubeconfig: &std::path::Path) -> Run {
    let args: Vec<&str> = case
        .args
        .iter()
        .map(|a| if *a == NODE { node } else { a })
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_kordon"))
        .args(&args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run kordon");
    Run::from(out)
}

fn assert_refused(case: &Case, run: &Run) {
    let line = run.stderr.trim_end();
    assert_eq!(run.code, Some(case.code), "{:?}: {run:#?}", case.args);
    assert_eq!(line.lines().count(), 1, "{:?}: one line: {line}", case.args);
    assert!(line.starts_with("error: "), "{:?}: {line}", case.args);
    assert!(
        line.contains(case.says),
        "{:?}: {line}\nshould say: {}",
        case.args,
        case.says
    );
    // A drain prints its plan before the API server has judged a rule's selector.
    if !case.cluster {
        assert!(run.stdout.is_empty(), "{:?}: {}", case.args, run.stdout);
    }
}

#[test]
fn mistakes_in_the_command_line_are_refused_without_a_cluster() {
    let nowhere = std::path::Path::new("/nonexistent/kubeconfig");
    for case in CASES.iter().filter(|c| !c.cluster) {
        assert_refused(case, &run(case, "node-1", nowhere));
    }
}

#[test]
fn no_command_prints_the_help_and_exits_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_kordon"))
        .output()
        .expect("run kordon");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Usage: kordon"));
}

#[tokio::test]
async fn every_bad_input_is_one_sentence_and_changes_nothing() {
    let env = TestEnv::two_nodes_with_web("bad-input").await;
    let node = env.node("node-1");
    let pods = env.pod_uids().await;
    for case in CASES {
        let run = run(case, &node, support::kubeconfig());
        assert_refused(case, &run);
        for name in [env.node("node-1"), env.node("node-2")] {
            let n = env.get_node(&name).await;
            let unschedulable = n.spec.and_then(|s| s.unschedulable).unwrap_or(false);
            assert!(!unschedulable, "{:?} cordoned {name}", case.args);
            let marks: Vec<String> = n
                .metadata
                .annotations
                .unwrap_or_default()
                .into_keys()
                .filter(|k| k.starts_with("kordon.dev/"))
                .collect();
            assert!(marks.is_empty(), "{:?} left {marks:?} on {name}", case.args);
        }
        assert_eq!(env.pod_uids().await, pods, "{:?} moved pods", case.args);
    }
}

/// Output to a pipe or a file has no ANSI escape, logs included; on a terminal logs
/// are coloured unless `NO_COLOR` is set.
#[tokio::test]
async fn no_colour_off_a_terminal_or_with_no_color() {
    let env = TestEnv::two_nodes_with_web("no-colour").await;
    let node = env.node("node-1");
    // -vv: kube's debug log lines on stderr, the ones that carried colour.
    let piped = env.run_kordon(&["-vv", "status", &node]);
    piped.assert_ok();
    assert!(!piped.stderr.is_empty(), "expected log lines on stderr");
    assert!(!piped.stdout.contains("\x1b["), "{:?}", piped.stdout);
    assert!(!piped.stderr.contains("\x1b["), "{:?}", piped.stderr);

    // On a terminal (`script` gives the command a pseudo-terminal).
    let on_terminal = |no_color: Option<&str>| {
        let command = format!(
            "{} --kubeconfig {} -vv status {node}",
            env!("CARGO_BIN_EXE_kordon"),
            support::kubeconfig().display()
        );
        let mut script = Command::new("script");
        script.args(["-qec", &command, "/dev/null"]);
        script.env_remove("NO_COLOR").env_remove("RUST_LOG");
        if let Some(v) = no_color {
            script.env("NO_COLOR", v);
        }
        let out = script.output().expect("run script");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        on_terminal(None).contains("\x1b["),
        "a terminal gets colour"
    );
    assert!(!on_terminal(Some("1")).contains("\x1b["), "NO_COLOR=1");
    assert!(
        on_terminal(Some("")).contains("\x1b["),
        "an empty NO_COLOR is unset"
    );
}

/// `-o yaml` is the `-o json` document, for every report that has one.
#[tokio::test]
async fn yaml_is_the_json_document() {
    let env = TestEnv::two_nodes_with_web("yaml").await;
    let node = env.node("node-1");
    let commands: [&[&str]; 3] = [
        &["status", &node],
        &["cordon", &node, "--dry-run=client"],
        &["plan", &node, "--ignore-daemonsets"],
    ];
    for args in commands {
        let document = |format: &str| {
            let mut full = vec!["-o", format];
            full.extend_from_slice(args);
            let run = env.run_kordon(&full);
            assert!(matches!(run.code, Some(0 | 3)), "{full:?}: {run:#?}");
            run.stdout
        };
        let json: serde_json::Value =
            serde_json::from_str(&document("json")).expect("-o json parses");
        let yaml_text = document("yaml");
        let yaml: serde_json::Value = serde_saphyr::from_str(&yaml_text).expect("-o yaml parses");
        assert_eq!(yaml, json, "{args:?}:\n{yaml_text}");
    }
    assert!(!env.is_cordoned(&node).await);
}
