//! Whether a pod receives its Services' traffic, and when a new one may be counted as
//! serving. A pod that is Ready is not yet reachable: the EndpointSlice controller
//! must list it as a ready endpoint of every Service that selects it, and each node's
//! kube-proxy must then program it. A drain that counts a replacement the moment it is
//! Ready can evict the next pod while clients still reach only the old one, so it
//! counts a replacement once its Services list it (and kube-proxy has had a sync
//! period to program it).
use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label the EndpointSlice controller puts on each slice, naming its Service.
const SERVICE_NAME: &str = "kubernetes.io/service-name";

/// How long after a Service lists a new pod as ready before it counts as serving: two
/// of kube-proxy's default minimum sync periods (`--iptables-min-sync-period`, and
/// the nftables and IPVS modes' `minSyncPeriod`, 1 s). A proxy applies at most one
/// change per period, so the new endpoint reaches its rules within one period, and the
/// next eviction's removal is applied at once only when that sync is a period old:
/// otherwise a pod that exits on SIGTERM keeps receiving connections it cannot answer.
pub const SETTLE: Duration = Duration::from_secs(2);

/// How long a Ready pod may wait to be listed before it counts anyway: a Service
/// whose endpoints no controller maintains must not hold a drain for ever.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A pod evicted while it was an endpoint that stopped sooner than this had requests
/// routed to it after it stopped: the EndpointSlice controller and one kube-proxy sync
/// period at least stand between its eviction and its removal from every node's rules.
pub const EARLY_STOP: Duration = Duration::from_secs(2);

/// Where a pod stands with the Services that select it (none: it is unexposed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reach {
    /// Services that list it as a ready endpoint.
    pub listed: Vec<String>,
    /// Services that select it but do not (yet) list it as ready.
    pub unlisted: Vec<String>,
}

/// The pod's [`Reach`] among its namespace's Services and EndpointSlices. A Service
/// without a selector (its endpoints are kept by hand) or of type ExternalName is not
/// waited for. An endpoint without a `ready` condition is ready, as the API says
/// consumers should read it.
pub fn reach<'a>(
    pod: &Pod,
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> Reach {
    let slices: Vec<&EndpointSlice> = slices.into_iter().collect();
    let uid = pod.metadata.uid.as_deref();
    let empty = BTreeMap::new();
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    let mut reach = Reach::default();
    for service in services {
        let Some(spec) = service.spec.as_ref() else {
            continue;
        };
        let selector = match &spec.selector {
            Some(s) if !s.is_empty() => s,
            _ => continue,
        };
        if spec.type_.as_deref() == Some("ExternalName")
            || service.metadata.namespace != pod.metadata.namespace
            || !selector.iter().all(|(k, v)| labels.get(k) == Some(v))
        {
            continue;
        }
        let name = service.metadata.name.clone().unwrap_or_default();
        let ready_endpoint = slices
            .iter()
            .filter(|s| s.metadata.namespace == service.metadata.namespace)
            .filter(|s| s.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME)) == Some(&name))
            .flat_map(|s| &s.endpoints)
            .filter(|e| e.target_ref.as_ref().and_then(|r| r.uid.as_deref()) == uid)
            .any(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true));
        if ready_endpoint {
            reach.listed.push(name);
        } else {
            reach.unlisted.push(name);
        }
    }
    reach
}

/// Whether a Ready pod counts as serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    Yes,
    /// Not yet; ask again after this long at the latest.
    After(Duration),
}

/// Decides whether a Ready pod counts as serving from its [`Reach`], how long it has
/// been listed (`None`: not seen listed, or there from the start and so counted at
/// once), and how long it has been Ready.
pub fn counted(reach: &Reach, listed_for: Option<Duration>, ready_for: Duration) -> Counted {
    let patience = || match PATIENCE.checked_sub(ready_for) {
        Some(left) if !left.is_zero() => Counted::After(left),
        _ => Counted::Yes,
    };
    if !reach.unlisted.is_empty() {
        return patience();
    }
    match listed_for.and_then(|d| SETTLE.checked_sub(d)) {
        Some(left) if !left.is_zero() && !reach.listed.is_empty() => Counted::After(left),
        _ => Counted::Yes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ObjectReference, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(uid: &str, app: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                namespace: Some("shop".into()),
                name: Some(format!("web-{uid}")),
                uid: Some(uid.into()),
                labels: Some([("app".to_string(), app.to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn service(name: &str, selector: Option<&str>) -> Service {
        Service {
            metadata: ObjectMeta {
                namespace: Some("shop".into()),
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: selector.map(|app| [("app".to_string(), app.to_string())].into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A slice of `service` listing each `(uid, ready)`.
    fn slice(service: &str, endpoints: &[(&str, Option<bool>)]) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some("shop".into()),
                name: Some(format!("{service}-abcde")),
                labels: Some([(SERVICE_NAME.to_string(), service.to_string())].into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: endpoints
                .iter()
                .map(|(uid, ready)| Endpoint {
                    addresses: vec!["10.244.1.2".into()],
                    conditions: Some(EndpointConditions {
                        ready: *ready,
                        ..Default::default()
                    }),
                    target_ref: Some(ObjectReference {
                        kind: Some("Pod".into()),
                        uid: Some((*uid).into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
            ports: None,
        }
    }

    #[test]
    fn a_pod_no_service_selects_is_unexposed() {
        let services = [service("api", Some("api")), service("manual", None)];
        let reach = reach(&pod("a", "web"), &services, &[slice("api", &[])]);
        assert_eq!(reach, Reach::default());
    }

    #[test]
    fn a_replacement_is_listed_only_once_every_service_selecting_it_has_it_ready() {
        let services = [
            service("web", Some("web")),
            service("web-admin", Some("web")),
        ];
        let new = pod("new", "web");
        let one = [
            slice("web", &[("new", Some(true))]),
            slice("web-admin", &[("new", Some(false))]),
        ];
        assert_eq!(
            reach(&new, &services, &one),
            Reach {
                listed: vec!["web".into()],
                unlisted: vec!["web-admin".into()],
            }
        );
        let both = [
            slice("web", &[("old", Some(true)), ("new", Some(true))]),
            slice("web-admin", &[("new", None)]),
        ];
        assert_eq!(
            reach(&new, &services, &both),
            Reach {
                listed: vec!["web".into(), "web-admin".into()],
                unlisted: vec![],
            }
        );
    }

    #[test]
    fn an_endpoint_of_another_service_or_pod_does_not_count() {
        let services = [service("web", Some("web"))];
        let slices = [
            slice("other", &[("new", Some(true))]),
            slice("web", &[("old", Some(true))]),
        ];
        assert_eq!(
            reach(&pod("new", "web"), &services, &slices),
            Reach {
                listed: vec![],
                unlisted: vec!["web".into()],
            }
        );
    }

    #[test]
    fn a_listed_replacement_counts_once_kube_proxy_has_had_time_to_program_it() {
        let listed = Reach {
            listed: vec!["web".into()],
            unlisted: vec![],
        };
        let ready = Duration::from_secs(3);
        assert_eq!(
            counted(&listed, Some(Duration::from_millis(400)), ready),
            Counted::After(SETTLE - Duration::from_millis(400))
        );
        assert_eq!(counted(&listed, Some(SETTLE), ready), Counted::Yes);
        // Listed before the drain began: it has long been serving.
        assert_eq!(counted(&listed, None, ready), Counted::Yes);
        let unexposed = Reach::default();
        assert_eq!(counted(&unexposed, None, ready), Counted::Yes);
    }

    #[test]
    fn an_unlisted_pod_counts_once_patience_runs_out() {
        let unlisted = Reach {
            listed: vec![],
            unlisted: vec!["web".into()],
        };
        assert_eq!(
            counted(&unlisted, None, Duration::from_secs(10)),
            Counted::After(Duration::from_secs(20))
        );
        assert_eq!(counted(&unlisted, None, PATIENCE), Counted::Yes);
    }
}
