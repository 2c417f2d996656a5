//! Asks the API server, before anything changes, whether we may do what a step needs
//! (a SelfSubjectRulesReview per namespace, then a SelfSubjectAccessReview for what
//! its rules do not show), so an RBAC gap is one sentence up front instead of a
//! half-done drain.
use std::collections::HashMap;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, ResourceRule, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
    SelfSubjectRulesReview, SelfSubjectRulesReviewSpec,
};
use kube::Api;
use kube::api::PostParams;

use super::{ClusterError, Connection};

/// One permission: `verb` on `resource` (with optional subresource), in a namespace
/// or cluster-wide.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Permission {
    pub verb: &'static str,
    pub group: &'static str,
    pub resource: &'static str,
    pub subresource: Option<&'static str>,
    pub namespace: Option<String>,
}

impl Permission {
    pub fn cluster(verb: &'static str, group: &'static str, resource: &'static str) -> Self {
        Self {
            verb,
            group,
            resource,
            subresource: None,
            namespace: None,
        }
    }

    pub fn namespaced(
        verb: &'static str,
        group: &'static str,
        resource: &'static str,
        subresource: Option<&'static str>,
        namespace: &str,
    ) -> Self {
        Self {
            verb,
            group,
            resource,
            subresource,
            namespace: Some(namespace.to_string()),
        }
    }

    pub fn describe(&self) -> String {
        let resource = match self.subresource {
            Some(sub) => format!("{}/{sub}", self.resource),
            None => self.resource.to_string(),
        };
        let scope = match &self.namespace {
            Some(ns) => format!("in namespace {ns}"),
            None => "cluster-wide".to_string(),
        };
        format!("`{}` on {resource} {scope}", self.verb)
    }
}

/// Permissions already granted in this process, and the rules reviewed in each
/// namespace: a drain checks its rights in a namespace more than once, a roll drains
/// node after node with the same needs, and asking again each time only costs
/// requests.
#[derive(Default)]
pub struct Granted {
    granted: std::sync::Mutex<std::collections::HashSet<Permission>>,
    rules: std::sync::Mutex<HashMap<String, Vec<ResourceRule>>>,
}

impl Granted {
    fn contains(&self, p: &Permission) -> bool {
        self.granted.lock().is_ok_and(|g| g.contains(p))
    }

    fn insert(&self, p: &Permission) {
        if let Ok(mut g) = self.granted.lock() {
            g.insert(p.clone());
        }
    }

    fn rules(&self, namespace: &str) -> Option<Vec<ResourceRule>> {
        self.rules.lock().ok()?.get(namespace).cloned()
    }

    fn keep_rules(&self, namespace: &str, rules: &[ResourceRule]) {
        if let Ok(mut kept) = self.rules.lock() {
            kept.insert(namespace.to_string(), rules.to_vec());
        }
    }
}

/// Fails with [`ClusterError::Forbidden`] naming every permission that is missing.
pub async fn require(
    conn: &Connection,
    granted: &Granted,
    action: &str,
    wanted: &[Permission],
) -> Result<(), ClusterError> {
    let missing = missing(conn, granted, wanted).await?;
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ClusterError::Forbidden {
            action: action.to_string(),
            message: format!(
                "missing {}",
                missing
                    .iter()
                    .map(Permission::describe)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
    }
}

/// The permissions of `wanted` that are not granted, for what kordon can do without.
pub async fn missing(
    conn: &Connection,
    granted: &Granted,
    wanted: &[Permission],
) -> Result<Vec<Permission>, ClusterError> {
    let mut asked = std::collections::HashSet::new();
    let unknown: Vec<&Permission> = wanted
        .iter()
        .filter(|p| !granted.contains(p) && asked.insert(*p))
        .collect();
    // One rules review per namespace confirms most of a namespace's permissions at
    // once; what it does not confirm (cluster-wide ones, or rules it cannot list) is
    // asked one by one.
    let mut namespaces: Vec<&str> = unknown
        .iter()
        .filter_map(|p| p.namespace.as_deref())
        .collect();
    namespaces.sort_unstable();
    namespaces.dedup();
    let reviews = namespaces.iter().map(|ns| async move {
        match granted.rules(ns) {
            Some(rules) => rules,
            None => {
                let rules = rules_in(conn, ns).await;
                granted.keep_rules(ns, &rules);
                rules
            }
        }
    });
    let rules: HashMap<&str, Vec<ResourceRule>> = namespaces
        .iter()
        .copied()
        .zip(futures::future::join_all(reviews).await)
        .collect();
    let (confirmed, unsure): (Vec<&Permission>, Vec<&Permission>) =
        unknown.into_iter().partition(|p| {
            p.namespace
                .as_deref()
                .and_then(|ns| rules.get(ns))
                .is_some_and(|rules| rules.iter().any(|r| grants(r, p)))
        });
    for p in confirmed {
        granted.insert(p);
    }
    let api: Api<SelfSubjectAccessReview> = Api::all(conn.client.clone());
    let reviews = unsure.into_iter().map(|p| {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(p.verb.to_string()),
                    group: Some(p.group.to_string()),
                    resource: Some(p.resource.to_string()),
                    subresource: p.subresource.map(str::to_string),
                    namespace: p.namespace.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let api = &api;
        async move {
            let answer = api
                .create(&PostParams::default(), &review)
                .await
                .map_err(|e| {
                    conn.error("check permissions (create selfsubjectaccessreviews)", e)
                })?;
            Ok::<_, ClusterError>((p, answer.status.is_some_and(|s| s.allowed)))
        }
    });
    let mut missing = Vec::new();
    for (p, allowed) in futures::future::try_join_all(reviews).await? {
        if allowed {
            granted.insert(p);
        } else {
            missing.push(p.clone());
        }
    }
    Ok(missing)
}

/// The rules that apply to us in a namespace (SelfSubjectRulesReview); none when the
/// review fails, which leaves every permission there to be asked one by one.
async fn rules_in(conn: &Connection, namespace: &str) -> Vec<ResourceRule> {
    let api: Api<SelfSubjectRulesReview> = Api::all(conn.client.clone());
    let review = SelfSubjectRulesReview {
        spec: SelfSubjectRulesReviewSpec {
            namespace: Some(namespace.to_string()),
        },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &review).await {
        Ok(answer) => answer.status.map(|s| s.resource_rules).unwrap_or_default(),
        Err(e) => {
            tracing::debug!(namespace, error = %e, "rules review failed; asking one by one");
            Vec::new()
        }
    }
}

/// Whether a rule grants the permission, matched as RBAC does: `*` or the exact verb
/// and group; `*`, the exact resource (`pods/eviction`) or `*/subresource`; and no
/// narrowing to named objects.
fn grants(rule: &ResourceRule, p: &Permission) -> bool {
    let any = |list: Option<&Vec<String>>, want: &str| {
        list.into_iter().flatten().any(|x| x == "*" || x == want)
    };
    let resource = match p.subresource {
        Some(sub) => format!("{}/{sub}", p.resource),
        None => p.resource.to_string(),
    };
    let resource_matches = rule.resources.iter().flatten().any(|r| {
        r == "*"
            || *r == resource
            || p.subresource
                .is_some_and(|sub| r.strip_prefix("*/") == Some(sub))
    });
    rule.verbs.iter().any(|v| v == "*" || v == p.verb)
        && any(rule.api_groups.as_ref(), p.group)
        && resource_matches
        && rule.resource_names.as_ref().is_none_or(Vec::is_empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> ResourceRule {
        let own = |x: &[&str]| Some(x.iter().map(|s| (*s).to_string()).collect());
        ResourceRule {
            verbs: verbs.iter().map(|s| (*s).to_string()).collect(),
            api_groups: own(groups),
            resources: own(resources),
            resource_names: None,
        }
    }

    #[test]
    fn rules_grant_as_rbac_matches_them() {
        let evict = Permission::namespaced("create", "", "pods", Some("eviction"), "web");
        let delete = Permission::namespaced("delete", "", "pods", None, "web");
        assert!(grants(
            &rule(&["create"], &[""], &["pods/eviction"]),
            &evict
        ));
        assert!(grants(&rule(&["create"], &[""], &["*/eviction"]), &evict));
        assert!(grants(&rule(&["*"], &["*"], &["*"]), &evict));
        // A pods rule does not reach the eviction subresource, nor another group.
        assert!(!grants(&rule(&["create"], &[""], &["pods"]), &evict));
        assert!(!grants(
            &rule(&["create"], &["apps"], &["pods/eviction"]),
            &evict
        ));
        assert!(!grants(&rule(&["get", "list"], &[""], &["pods"]), &delete));
        let mut named = rule(&["delete"], &[""], &["pods"]);
        named.resource_names = Some(vec!["one".into()]);
        assert!(!grants(&named, &delete));
    }
}
