use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use super::ClusterError;

/// Where to find the cluster, as kubectl users expect: `--kubeconfig`, then the
/// `KUBECONFIG` variable, then `~/.kube/config`, then the in-cluster service account.
#[derive(Debug, Clone, Default)]
pub struct ConnectionOptions {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    /// Who hears that the API server went away and came back; unset, a log record.
    pub teller: Option<Teller>,
}

/// A client plus the server URL, which errors name.
#[derive(Clone)]
pub struct Connection {
    pub client: Client,
    pub server: String,
    /// Shared by every clone, so an outage is told once however many requests hit it.
    pub outage: Outage,
}

impl Connection {
    /// Builds a client. Makes no request: a broken kubeconfig fails here, an
    /// unreachable server on the first call.
    pub async fn open(options: &ConnectionOptions) -> Result<Self, ClusterError> {
        let mut config = load_config(options).await?;
        // kube-client retries 429s by default. For the Eviction API a 429 is a
        // PodDisruptionBudget saying "not yet", which kordon must see to react to it.
        config.default_retry = false;
        let server = config.cluster_url.to_string();
        let client = Client::try_from(config).map_err(|source| ClusterError::Client {
            server: server.clone(),
            source,
        })?;
        Ok(Self {
            client,
            server,
            outage: Outage::telling(options.teller.clone()),
        })
    }

    /// Runs `request` again while the API server cannot be reached (a refused or
    /// dropped connection: [`ClusterError::is_transient`]), backing off as
    /// [`Reconnect`] does, until `give_up`; the first failure is told (see [`Outage`]),
    /// and the first success after it. Any other error is returned at once.
    /// Only for requests that may be repeated: a read, a patch to a fixed state, an
    /// eviction (a repeated one is a 404 or a 429, both answers the caller handles).
    pub async fn retrying<T, F, Fut>(
        &self,
        give_up: Instant,
        mut request: F,
    ) -> Result<T, ClusterError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ClusterError>>,
    {
        let mut backoff = Reconnect::default();
        loop {
            match request().await {
                Err(e) if e.is_transient() && Instant::now() < give_up => {
                    self.outage.lost();
                    let wait = backoff.next().unwrap_or(MOST_BETWEEN_TRIES);
                    tokio::time::sleep(wait.min(give_up.saturating_duration_since(Instant::now())))
                        .await;
                }
                result => {
                    if result.is_ok() {
                        self.outage.back();
                    }
                    return result;
                }
            }
        }
    }

    /// The server's version, e.g. `v1.33.13`; also the cheapest reachability check.
    pub async fn server_version(&self) -> Result<String, ClusterError> {
        let info = self
            .client
            .apiserver_version()
            .await
            .map_err(|e| self.error("read the server version", e))?;
        Ok(info.git_version)
    }

    /// Wraps a failed request with what we were doing.
    pub fn error(&self, action: impl Into<String>, err: kube::Error) -> ClusterError {
        ClusterError::from_kube(action, &self.server, err)
    }
}

async fn load_config(options: &ConnectionOptions) -> Result<Config, ClusterError> {
    let kube_options = KubeConfigOptions {
        context: options.context.clone(),
        ..Default::default()
    };
    let kubeconfig_error = |source| ClusterError::Kubeconfig {
        path: options.kubeconfig.clone(),
        source,
    };
    if let Some(path) = &options.kubeconfig {
        let kubeconfig = Kubeconfig::read_from(path).map_err(kubeconfig_error)?;
        return Config::from_custom_kubeconfig(kubeconfig, &kube_options)
            .await
            .map_err(kubeconfig_error);
    }
    if options.context.is_some() || std::env::var_os("KUBECONFIG").is_some() {
        return Config::from_kubeconfig(&kube_options)
            .await
            .map_err(kubeconfig_error);
    }
    Config::infer().await.map_err(ClusterError::NoConfig)
}

const FIRST_RETRY: Duration = Duration::from_millis(250);
const MOST_BETWEEN_TRIES: Duration = Duration::from_secs(2);

/// How long to wait between tries while the API server cannot be reached: 250 ms,
/// doubling to at most 2 s, so kordon carries on within 2 s of the server's return.
/// kube-runtime's `default_backoff` grows to 30 s; a watch takes this one with
/// `.backoff(Reconnect::default())` (it is a kube-runtime `Backoff`).
#[derive(Debug, Clone)]
pub struct Reconnect {
    next: Duration,
}

impl Default for Reconnect {
    fn default() -> Self {
        Self { next: FIRST_RETRY }
    }
}

impl Iterator for Reconnect {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let now = self.next;
        self.next = (now * 2).min(MOST_BETWEEN_TRIES);
        Some(now)
    }
}

impl kube::runtime::utils::Backoff for Reconnect {
    fn reset(&mut self) {
        self.next = FIRST_RETRY;
    }
}

/// The API server went away, or came back: said once per outage, as one plain line
/// (`lost the API server at 12:03:04 UTC, retrying`), not a log record per try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reachability {
    Lost { at: jiff::Timestamp },
    Back { after: Duration },
}

/// Who hears of an outage: the edge (the CLI prints a line on stderr).
#[derive(Clone)]
pub struct Teller(Arc<dyn Fn(Reachability) + Send + Sync>);

impl Teller {
    pub fn new(tell: impl Fn(Reachability) + Send + Sync + 'static) -> Self {
        Self(Arc::new(tell))
    }
}

impl std::fmt::Debug for Teller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Teller")
    }
}

/// Whether the API server was lost, and since when; shared by every clone of a
/// connection, so an outage is told once however many requests and watches hit it.
#[derive(Debug, Clone, Default)]
pub struct Outage {
    since: Arc<Mutex<Option<Instant>>>,
    teller: Option<Teller>,
}

impl Outage {
    pub fn telling(teller: Option<Teller>) -> Self {
        Self {
            since: Arc::default(),
            teller,
        }
    }

    /// A failure to reach the server: told if it starts an outage.
    pub fn lost(&self) -> Option<Reachability> {
        let mut since = self.since.lock().ok()?;
        if since.is_some() {
            return None;
        }
        *since = Some(Instant::now());
        drop(since);
        self.tell(Reachability::Lost {
            at: jiff::Timestamp::now(),
        })
    }

    /// A success: told if it ends an outage.
    pub fn back(&self) -> Option<Reachability> {
        let lost = self.since.lock().ok()?.take()?;
        self.tell(Reachability::Back {
            after: lost.elapsed(),
        })
    }

    fn tell(&self, news: Reachability) -> Option<Reachability> {
        match &self.teller {
            Some(teller) => (teller.0)(news),
            None => tracing::warn!("{news}"),
        }
        Some(news)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnecting_backs_off_to_two_seconds_at_most_and_starts_over() {
        let mut backoff = Reconnect::default();
        let waits: Vec<u128> = backoff.by_ref().take(6).map(|d| d.as_millis()).collect();
        assert_eq!(waits, [250, 500, 1000, 2000, 2000, 2000]);
        kube::runtime::utils::Backoff::reset(&mut backoff);
        assert_eq!(backoff.next(), Some(FIRST_RETRY));
    }

    #[test]
    fn an_outage_is_told_once_and_its_end_once() {
        let outage = Outage::default();
        assert_eq!(outage.back(), None);
        assert!(matches!(outage.lost(), Some(Reachability::Lost { .. })));
        assert_eq!(outage.clone().lost(), None, "clones share the outage");
        assert!(matches!(outage.back(), Some(Reachability::Back { .. })));
        assert_eq!(outage.back(), None);
    }

    fn unreachable() -> ClusterError {
        ClusterError::Unreachable {
            server: "https://127.0.0.1:1".into(),
            reason: "connection refused".into(),
        }
    }

    #[tokio::test]
    async fn a_request_is_retried_while_the_server_is_away() {
        let conn = Connection {
            client: Client::try_from(Config::new("https://127.0.0.1:1".parse().unwrap())).unwrap(),
            server: "https://127.0.0.1:1".into(),
            outage: Outage::default(),
        };
        let mut tries = 0;
        let give_up = Instant::now() + Duration::from_secs(60);
        let answer = conn
            .retrying(give_up, || {
                tries += 1;
                let fail = tries < 3;
                async move { if fail { Err(unreachable()) } else { Ok(tries) } }
            })
            .await;
        assert_eq!(answer.ok(), Some(3));
        assert_eq!(conn.outage.back(), None, "the outage is over");

        let refused = conn
            .retrying(give_up, || async {
                Err::<(), _>(ClusterError::NodeNotFound(crate::names::NodeName::new("n")))
            })
            .await;
        assert!(
            matches!(refused, Err(ClusterError::NodeNotFound(_))),
            "not retried"
        );
    }
}
