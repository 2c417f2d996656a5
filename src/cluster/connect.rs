use std::path::PathBuf;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use super::ClusterError;

/// Where to find the cluster, as kubectl users expect: `--kubeconfig`, then the
/// `KUBECONFIG` variable, then `~/.kube/config`, then the in-cluster service account.
#[derive(Debug, Clone, Default)]
pub struct ConnectionOptions {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
}

/// A client plus the server URL, which errors name.
#[derive(Clone)]
pub struct Connection {
    pub client: Client,
    pub server: String,
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
        Ok(Self { client, server })
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
