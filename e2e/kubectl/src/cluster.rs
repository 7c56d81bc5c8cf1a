//! Which cluster, as which user, in which namespace: `--kubeconfig`, `--context` and the
//! context's namespace, the way kubectl reads them.
//!
//! The kubeconfig is `--kubeconfig`, else the files `KUBECONFIG` lists (merged), else
//! `~/.kube/config`; with none of them (and no `--context`) the pod's service account is
//! used (the plugin running in the cluster). The context is `--context`, else the
//! kubeconfig's current context. [`connect`] asks the API server for its version once, so
//! a cluster that does not answer fails at once with an error naming the context and the
//! kubeconfig, rather than later with a bare connection error.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use kube::Client;
use kube::config::{Config, KubeConfigOptions, Kubeconfig};

/// A client for the chosen cluster and what a user should be told about it.
pub struct Connected {
    /// The client.
    pub client: Client,
    /// The namespace the context names, if it names one.
    pub namespace: Option<String>,
    /// Where the cluster came from, for messages: `context X of kubeconfig Y`.
    pub source: String,
    /// The API server's version (`v1.34.4`).
    pub server_version: String,
}

impl std::fmt::Debug for Connected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connected")
            .field("namespace", &self.namespace)
            .field("source", &self.source)
            .field("server_version", &self.server_version)
            .finish_non_exhaustive()
    }
}

/// A kubeconfig read from disk, and where from.
struct Loaded {
    kubeconfig: Kubeconfig,
    /// `/root/.kube/config`, or the `KUBECONFIG` list.
    origin: String,
}

/// Reads `--kubeconfig`, else the default kubeconfig. `Ok(None)`: there is no default
/// kubeconfig at all (no `KUBECONFIG`, no `~/.kube/config`).
fn load(path: Option<&Path>) -> Result<Option<Loaded>> {
    if let Some(path) = path {
        let kubeconfig = Kubeconfig::read_from(path)
            .map_err(|e| anyhow!("reading kubeconfig {} (--kubeconfig): {e}", path.display()))?;
        return Ok(Some(Loaded { kubeconfig, origin: path.display().to_string() }));
    }
    let from_env = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty());
    let origin = match &from_env {
        Some(v) => format!("{} (KUBECONFIG)", v.to_string_lossy()),
        None => match default_path() {
            Some(p) if p.exists() => p.display().to_string(),
            _ => return Ok(None),
        },
    };
    let kubeconfig = Kubeconfig::read().map_err(|e| anyhow!("reading kubeconfig {origin}: {e}"))?;
    Ok(Some(Loaded { kubeconfig, origin }))
}

/// `~/.kube/config`.
fn default_path() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".kube").join("config"))
}

/// The context `context` (or the current one) of `kubeconfig`: its name and namespace.
pub fn context_of(kubeconfig: &Kubeconfig, context: Option<&str>, origin: &str) -> Result<(String, Option<String>)> {
    let has = || match kubeconfig.contexts.iter().map(|c| c.name.as_str()).collect::<Vec<_>>() {
        names if names.is_empty() => {
            "it has no contexts: is the cluster up? `make cluster` adds cloudmart-local".to_owned()
        }
        names => format!("it has: {}", names.join(", ")),
    };
    let name = match context.or(kubeconfig.current_context.as_deref()).filter(|n| !n.is_empty()) {
        Some(name) => name,
        None => bail!("kubeconfig {origin} sets no current context: pass --context ({})", has()),
    };
    let Some(named) = kubeconfig.contexts.iter().find(|c| c.name == name) else {
        bail!("context {name} not found in kubeconfig {origin} ({})", has());
    };
    let namespace = named.context.as_ref().and_then(|c| c.namespace.clone()).filter(|n| !n.is_empty());
    Ok((name.to_owned(), namespace))
}

/// The namespace the chosen context names, read from the kubeconfig only (no network):
/// what `load --dry-run` uses. `None` on any problem; [`connect`] reports those.
pub fn context_namespace(kubeconfig: Option<&Path>, context: Option<&str>) -> Option<String> {
    let loaded = load(kubeconfig).ok()??;
    context_of(&loaded.kubeconfig, context, &loaded.origin).ok()?.1
}

/// Connects to the cluster of `--kubeconfig`/`--context` (see the module docs) and checks
/// that its API server answers.
pub async fn connect(kubeconfig: Option<&Path>, context: Option<&str>) -> Result<Connected> {
    let (config, namespace, source) = match load(kubeconfig)? {
        Some(Loaded { kubeconfig, origin }) => {
            let (name, namespace) = context_of(&kubeconfig, context, &origin)?;
            let options = KubeConfigOptions { context: Some(name.clone()), ..KubeConfigOptions::default() };
            let source = format!("context {name} of kubeconfig {origin}");
            let config = Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| anyhow!("loading {source}: {e}"))?;
            (config, namespace, source)
        }
        None => {
            if let Some(name) = context {
                bail!("--context {name}: there is no kubeconfig (no --kubeconfig, KUBECONFIG or ~/.kube/config)");
            }
            let config = Config::incluster().map_err(|e| {
                anyhow!(
                    "no kubeconfig (no --kubeconfig, KUBECONFIG or ~/.kube/config) and not in a pod with a service \
                     account ({e}): point --kubeconfig or KUBECONFIG at your cluster's kubeconfig"
                )
            })?;
            (config, None, "the pod's service account (in-cluster)".to_owned())
        }
    };
    let server = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(|e| anyhow!("creating a client for {source}: {e}"))?;
    let version = client.apiserver_version().await.map_err(|e| {
        anyhow!("cannot reach the Kubernetes API server {server} of {source}: {e} (is the cluster running? `kubectl --context … get nodes` should answer)")
    })?;
    Ok(Connected { client, namespace, source, server_version: version.git_version })
}

/// Adds the cluster's description to a failed command's error.
pub trait WithCluster<T> {
    /// `context X of kubeconfig Y: <the error>`.
    fn on_cluster(self, connected: &Connected) -> Result<T>;
}

impl<T> WithCluster<T> for Result<T> {
    fn on_cluster(self, connected: &Connected) -> Result<T> {
        self.with_context(|| connected.source.clone())
    }
}

/// `err` with its causes, like `{:#}`, but an API server's refusal as its message, code and
/// reason (`namespaces "cloudmart" not found (404 NotFound)`) instead of the whole Status.
pub fn describe_error(err: &anyhow::Error) -> String {
    let mut parts = Vec::new();
    for cause in err.chain() {
        if let Some(kube::Error::Api(status)) = cause.downcast_ref::<kube::Error>() {
            parts.push(format!("{} ({} {})", status.message, status.code, status.reason));
            break;
        }
        parts.push(cause.to_string());
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_read_as_their_message() {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "code": 404, "reason": "NotFound", "message": "namespaces \"cloudmart\" not found"
        }))
        .unwrap();
        let err = Err::<(), _>(kube::Error::Api(Box::new(status)))
            .context("creating Job j in namespace cloudmart")
            .context("context c of kubeconfig k")
            .unwrap_err();
        assert_eq!(
            describe_error(&err),
            "context c of kubeconfig k: creating Job j in namespace cloudmart: namespaces \"cloudmart\" not found (404 NotFound)"
        );
        assert_eq!(describe_error(&anyhow!("plain").context("outer")), "outer: plain");
    }

    const KUBECONFIG: &str = "
apiVersion: v1
kind: Config
current-context: kind-cloudmart
clusters:
- name: local
  cluster: { server: 'https://127.0.0.1:6443' }
users:
- name: admin
  user: { token: abc }
contexts:
- name: kind-cloudmart
  context: { cluster: local, user: admin }
- name: cloudmart-local
  context: { cluster: local, user: admin, namespace: shop }
- name: empty-ns
  context: { cluster: local, user: admin, namespace: '' }
";

    #[test]
    fn the_context_is_the_flag_or_the_current_one_with_its_namespace() {
        let kc = Kubeconfig::from_yaml(KUBECONFIG).unwrap();
        assert_eq!(context_of(&kc, None, "kc").unwrap(), ("kind-cloudmart".to_owned(), None));
        assert_eq!(
            context_of(&kc, Some("cloudmart-local"), "kc").unwrap(),
            ("cloudmart-local".into(), Some("shop".into()))
        );
        assert_eq!(context_of(&kc, Some("empty-ns"), "kc").unwrap().1, None);
        let err = context_of(&kc, Some("nope"), "/tmp/kc").unwrap_err().to_string();
        assert!(err.contains("context nope not found in kubeconfig /tmp/kc"), "{err}");
        assert!(err.contains("kind-cloudmart, cloudmart-local, empty-ns"), "{err}");
        let no_current = Kubeconfig { current_context: None, ..kc };
        let err = context_of(&no_current, None, "kc").unwrap_err().to_string();
        assert!(err.contains("sets no current context: pass --context"), "{err}");
    }

    #[tokio::test]
    async fn a_missing_kubeconfig_file_is_named() {
        let err = connect(Some(Path::new("/nonexistent/kubeconfig")), None).await.unwrap_err().to_string();
        assert!(err.contains("reading kubeconfig /nonexistent/kubeconfig (--kubeconfig)"), "{err}");
        assert_eq!(context_namespace(Some(Path::new("/nonexistent/kubeconfig")), None), None);
    }
}
