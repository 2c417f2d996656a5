//! The rights a drain needs, asked before anything changes, and those it can do
//! without.

use k8s_openapi::api::core::v1::Pod;

use super::{DrainError, DrainOptions, Plan};
use crate::classify::Verdict;
use crate::cluster::access::Permission;
use crate::context::Context;
use crate::plan::guards::Guard;

/// Cordoning, watching pods and budgets, evicting (or deleting) pods in each
/// namespace the plan touches, restarting Deployments for `--surge`, and listing
/// Services for `--exclude-from-load-balancers`.
pub(super) fn needed_permissions(plan: &Plan, opts: &DrainOptions) -> Vec<Permission> {
    let mut wanted = vec![
        Permission::cluster("patch", "", "nodes"),
        Permission::cluster("watch", "", "pods"),
    ];
    // Whether any Service has external load balancers to deregister the node from.
    if opts.load_balancers.is_some() {
        wanted.push(Permission::cluster("list", "", "services"));
    }
    let evicted: Vec<&Pod> = plan
        .pods
        .iter()
        .filter(|(_, v)| matches!(v, Verdict::Evict(_)))
        .map(|(p, _)| p)
        .collect();
    for ns in namespaces(&evicted) {
        wanted.push(Permission::namespaced(
            "watch",
            "policy",
            "poddisruptionbudgets",
            None,
            &ns,
        ));
        wanted.push(if opts.disable_eviction {
            Permission::namespaced("delete", "", "pods", None, &ns)
        } else {
            Permission::namespaced("create", "", "pods", Some("eviction"), &ns)
        });
        // The ladder may delete pods past their budgets here.
        let ladder = &opts.ladder;
        if ladder.engaged() && !opts.disable_eviction {
            let named = ladder
                .delete
                .iter()
                .any(|r| r.namespace.as_deref().is_none_or(|n| n == ns));
            if named || ladder.unhealthy {
                wanted.push(Permission::namespaced("delete", "", "pods", None, &ns));
            }
        }
    }
    for guard in plan.guards.values() {
        if let Guard::Implicit(w) = guard
            && opts.shared_budgets.is_some()
            && !opts.disable_eviction
        {
            let ns = &w.id.namespace;
            for verb in ["create", "patch"] {
                wanted.push(Permission::namespaced(
                    verb,
                    "policy",
                    "poddisruptionbudgets",
                    None,
                    ns,
                ));
            }
            for verb in ["create", "list", "patch", "delete"] {
                wanted.push(Permission::namespaced(
                    verb,
                    "coordination.k8s.io",
                    "leases",
                    None,
                    ns,
                ));
            }
        }
        if let Guard::Surge(w) = guard {
            wanted.push(Permission::namespaced(
                "patch",
                "apps",
                "deployments",
                None,
                &w.id.namespace,
            ));
        }
    }
    wanted
}

/// The namespaces among `namespaces` whose Services and EndpointSlices kordon may
/// watch. Without those rights a replacement counts once Ready, as kubectl's does:
/// said once, not refused.
pub(super) async fn routable(
    ctx: &Context,
    namespaces: &[String],
) -> Result<Vec<String>, DrainError> {
    let wanted = |ns: &String| {
        [("", "services"), ("discovery.k8s.io", "endpointslices")]
            .into_iter()
            .flat_map(|(group, resource)| {
                ["list", "watch"]
                    .map(|verb| Permission::namespaced(verb, group, resource, None, ns))
            })
            .collect::<Vec<_>>()
    };
    let all: Vec<Permission> = namespaces.iter().flat_map(wanted).collect();
    let missing = ctx.missing(&all).await?;
    if !missing.is_empty() {
        let rights: Vec<String> = missing.iter().map(Permission::describe).collect();
        tracing::warn!(
            "missing {}: replacements there count once Ready, not once their Services reach them",
            rights.join(", ")
        );
    }
    Ok(namespaces
        .iter()
        .filter(|ns| !missing.iter().any(|p| p.namespace.as_ref() == Some(*ns)))
        .cloned()
        .collect())
}

/// The namespaces of the pods, each once.
pub(super) fn namespaces(pods: &[&Pod]) -> Vec<String> {
    let mut namespaces: Vec<String> = pods
        .iter()
        .filter_map(|p| p.metadata.namespace.clone())
        .collect();
    namespaces.sort();
    namespaces.dedup();
    namespaces
}
