//! Asks the API server, before anything changes, whether we may do what a step needs
//! (SelfSubjectAccessReview), so an RBAC gap is one sentence up front instead of a
//! half-done drain.
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
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

/// Permissions already granted in this process: a roll drains node after node with
/// the same needs, and asking again each time only costs requests.
#[derive(Default)]
pub struct Granted(std::sync::Mutex<std::collections::HashSet<Permission>>);

impl Granted {
    fn contains(&self, p: &Permission) -> bool {
        self.0.lock().is_ok_and(|g| g.contains(p))
    }

    fn insert(&self, p: &Permission) {
        if let Ok(mut g) = self.0.lock() {
            g.insert(p.clone());
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
    let api: Api<SelfSubjectAccessReview> = Api::all(conn.client.clone());
    // Each permission asked once, all at once: each review is one round trip.
    let mut asked = std::collections::HashSet::new();
    let unknown = wanted
        .iter()
        .filter(|p| !granted.contains(p) && asked.insert(*p));
    let reviews = unknown.map(|p| {
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
