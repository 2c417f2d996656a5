//! Whether any Service is of type LoadBalancer: only then do external load balancers
//! have nodes in them to deregister before a drain. A command asks once per drain with
//! a paged read of the Services ([`any`]); the controller, which drains node after
//! node, keeps the answer by one watch ([`LoadBalancers`]) that holds only the names
//! of such Services, so a drain's start costs it no request.
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::api::ListParams;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};

use super::{ClusterError, Connection};

fn is_load_balancer(s: &Service) -> bool {
    s.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
}

/// One paged read of every Service.
pub async fn any(conn: &Connection) -> Result<bool, ClusterError> {
    let api: Api<Service> = Api::all(conn.client.clone());
    let mut found = false;
    super::view::for_each_page(&api, conn, "list services", ListParams::default(), |page| {
        found |= page.iter().any(is_load_balancer);
    })
    .await?;
    Ok(found)
}

/// The Services of type LoadBalancer by `namespace/name`, and a relist in progress.
#[derive(Debug, Default)]
struct Names {
    live: HashSet<String>,
    relist: Option<HashSet<String>>,
    listed: bool,
}

impl Names {
    fn apply(&mut self, event: watcher::Event<Service>) {
        let key = |s: &Service| format!("{}/{}", s.namespace().unwrap_or_default(), s.name_any());
        match event {
            watcher::Event::Init => self.relist = Some(HashSet::new()),
            watcher::Event::InitApply(s) => {
                if let Some(relist) = self.relist.as_mut().filter(|_| is_load_balancer(&s)) {
                    relist.insert(key(&s));
                }
            }
            watcher::Event::InitDone => {
                self.live = self.relist.take().unwrap_or_default();
                self.listed = true;
            }
            watcher::Event::Apply(s) if is_load_balancer(&s) => {
                self.live.insert(key(&s));
            }
            watcher::Event::Apply(s) | watcher::Event::Delete(s) => {
                self.live.remove(&key(&s));
            }
        }
    }
}

/// The answer kept current by a watch of every Service, for a long-lived process.
pub struct LoadBalancers {
    names: Arc<Mutex<Names>>,
    task: tokio::task::JoinHandle<()>,
}

impl LoadBalancers {
    pub fn watch(conn: &Connection) -> Self {
        let api: Api<Service> = Api::all(conn.client.clone());
        let names = Arc::new(Mutex::new(Names::default()));
        let kept = names.clone();
        let stream = watcher(api, watcher::Config::default().any_semantic())
            .backoff(super::Reconnect::default());
        let task = tokio::spawn(stream.for_each(move |event| {
            match event {
                Ok(event) => {
                    if let Ok(mut names) = kept.lock() {
                        names.apply(event);
                    }
                }
                Err(e) => tracing::debug!("watch of every Service: {e}"),
            }
            futures::future::ready(())
        }));
        Self { names, task }
    }

    /// The watch's answer once its first list is in; until then, one read.
    pub async fn any(&self, conn: &Connection) -> Result<bool, ClusterError> {
        let known = self
            .names
            .lock()
            .ok()
            .filter(|n| n.listed)
            .map(|n| !n.live.is_empty());
        match known {
            Some(found) => Ok(found),
            None => any(conn).await,
        }
    }
}

impl Drop for LoadBalancers {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(name: &str, type_: &str) -> Service {
        serde_json::from_value(json!({
            "metadata": { "name": name, "namespace": "shop" },
            "spec": { "type": type_ }
        }))
        .unwrap()
    }

    #[test]
    fn the_names_follow_each_service_that_is_or_stops_being_a_load_balancer() {
        let mut names = Names::default();
        names.apply(watcher::Event::Init);
        names.apply(watcher::Event::InitApply(service("web", "LoadBalancer")));
        names.apply(watcher::Event::InitApply(service("db", "ClusterIP")));
        assert!(!names.listed, "not known before the list is done");
        names.apply(watcher::Event::InitDone);
        assert_eq!(names.live, HashSet::from(["shop/web".to_string()]));
        names.apply(watcher::Event::Apply(service("web", "NodePort")));
        assert!(
            names.live.is_empty(),
            "a type changed away from LoadBalancer"
        );
        names.apply(watcher::Event::Apply(service("db", "LoadBalancer")));
        names.apply(watcher::Event::Delete(service("db", "LoadBalancer")));
        assert!(names.live.is_empty());
        // A relist replaces the set whole.
        names.apply(watcher::Event::Apply(service("web", "LoadBalancer")));
        names.apply(watcher::Event::Init);
        names.apply(watcher::Event::InitDone);
        assert!(names.live.is_empty());
    }
}
