//! kordon under the roles it ships (`deploy/rbac/`): a service account of the test's
//! namespace bound to one of them, as read from the file, or with one right taken
//! away, and a kubeconfig that authenticates as it.
use std::path::PathBuf;
use std::process::Command;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

use super::{Run, TestEnv};

/// The shipped ClusterRole `name`, parsed from `deploy/rbac/<name>.yaml`.
pub fn shipped(name: &str) -> ClusterRole {
    let path = super::repo_root().join(format!("deploy/rbac/{name}.yaml"));
    let text = std::fs::read_to_string(&path).expect("read the shipped role");
    let role: ClusterRole = serde_saphyr::from_str(&text).expect("a ClusterRole");
    assert_eq!(
        role.metadata.name.as_deref(),
        Some(name),
        "{}",
        path.display()
    );
    role
}

/// The role without `verb` on `resource` (`pods/eviction` for a subresource) of API
/// group `group`. Other resources of the same rule keep every verb. Panics when the
/// role does not grant that right, so a test cannot pass by removing nothing.
pub fn without(mut role: ClusterRole, group: &str, resource: &str, verb: &str) -> ClusterRole {
    let grants = |r: &PolicyRule| {
        r.api_groups.iter().flatten().any(|g| g == group)
            && r.resources.iter().flatten().any(|res| res == resource)
            && r.verbs.iter().any(|v| v == verb)
    };
    let rules = role.rules.take().unwrap_or_default();
    assert!(
        rules.iter().any(grants),
        "the role grants no `{verb}` on {resource}"
    );
    let mut kept = Vec::new();
    for rule in rules {
        if !grants(&rule) {
            kept.push(rule);
            continue;
        }
        let others: Vec<String> = rule
            .resources
            .iter()
            .flatten()
            .filter(|r| *r != resource)
            .cloned()
            .collect();
        if !others.is_empty() {
            kept.push(PolicyRule {
                resources: Some(others),
                ..rule.clone()
            });
        }
        let verbs: Vec<String> = rule.verbs.iter().filter(|v| *v != verb).cloned().collect();
        if !verbs.is_empty() {
            kept.push(PolicyRule {
                resources: Some(vec![resource.to_string()]),
                verbs,
                ..rule
            });
        }
    }
    role.rules = Some(kept);
    role
}

/// A service account bound to a role; the role and its binding (cluster-wide, so not
/// removed with the namespace) are deleted when this is dropped.
pub struct Bound {
    pub kubeconfig: PathBuf,
    /// The role's and the binding's name.
    name: String,
}

/// Creates the service account `account` in the test's namespace, the role renamed
/// `<namespace>-<role>` (so tests in parallel do not share it), and a binding of one to
/// the other.
pub async fn bind(env: &TestEnv, account: &str, mut role: ClusterRole) -> Bound {
    let name = format!(
        "{}-{}",
        env.ns(),
        role.metadata.name.as_deref().unwrap_or("role")
    );
    role.metadata.name = Some(name.clone());
    let sa: ServiceAccount =
        serde_json::from_value(json!({ "metadata": { "name": account } })).expect("sa");
    env.create(&sa).await;
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": { "name": name },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name },
        "subjects": [{ "kind": "ServiceAccount", "name": account, "namespace": env.ns() }],
    }))
    .expect("binding");
    // Made first, so that a failure below still removes what was created.
    let mut bound = Bound {
        kubeconfig: PathBuf::new(),
        name: name.clone(),
    };
    Api::<ClusterRole>::all(env.client.clone())
        .create(&PostParams::default(), &role)
        .await
        .expect("create role");
    Api::<ClusterRoleBinding>::all(env.client.clone())
        .create(&PostParams::default(), &binding)
        .await
        .expect("create binding");
    bound.kubeconfig = env.account_kubeconfig(account, &[], &name);
    bound
}

impl Bound {
    /// Runs kordon as the service account.
    pub fn kordon(&self, args: &[&str]) -> Run {
        Run::from(
            Command::new(env!("CARGO_BIN_EXE_kordon"))
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .args(args)
                .output()
                .expect("run kordon"),
        )
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.kubeconfig);
        let _ = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(super::kubeconfig())
            .args(["delete", "--wait=false", "--ignore-not-found"])
            .arg(format!("clusterrolebinding/{}", self.name))
            .arg(format!("clusterrole/{}", self.name))
            .output();
    }
}
