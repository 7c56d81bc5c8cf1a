//! Reaching the release's Jaeger query API (HTTP, port 16686 in the chart) from outside
//! the cluster: the Jaeger Service's selector names the pod, its `ui` port the container
//! port, and a kube-rs port-forward to that pod carries an HTTP/1.1 connection (hyper's
//! client) per query — Jaeger answers `Connection: close`. `--jaeger-url` connects to a URL
//! over TCP instead.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{ListParams, Portforwarder};
use kube::{Api, Client};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinHandle;

use crate::Release;

/// The chart's Jaeger query (UI) port.
pub const QUERY_PORT: u16 = 16686;

/// Name of the query port in the chart's Jaeger Service.
const QUERY_PORT_NAME: &str = "ui";

/// How long one HTTP request to Jaeger may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Where Jaeger's query API is.
pub enum JaegerTarget {
    /// `host:port` reached over TCP (`--jaeger-url`).
    Url { authority: String },
    /// A pod reached through a port-forward (the Pods API boxed: it is large).
    Pod { pods: Box<Api<Pod>>, pod: String, port: u16, namespace: String },
}

impl std::fmt::Debug for JaegerTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl JaegerTarget {
    /// `--jaeger-url http://HOST:PORT[/]`: only plain HTTP, as Jaeger's query API serves it.
    pub fn from_url(url: &str) -> Result<Self> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| anyhow!("--jaeger-url {url}: use http://HOST:PORT (Jaeger's query API, plain HTTP)"))?;
        let authority = rest.trim_end_matches('/');
        let valid = authority
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
        if !valid || authority.contains('/') {
            bail!("--jaeger-url {url}: use http://HOST:PORT, e.g. http://127.0.0.1:16686");
        }
        Ok(JaegerTarget::Url { authority: authority.to_owned() })
    }

    /// For messages: `Jaeger pod X port 16686 in namespace Y` or `Jaeger at HOST:PORT`.
    pub fn describe(&self) -> String {
        match self {
            JaegerTarget::Url { authority } => format!("Jaeger at http://{authority}"),
            JaegerTarget::Pod { pod, port, namespace, .. } => {
                format!("Jaeger pod {pod} (port {port}, through a port-forward) in namespace {namespace}")
            }
        }
    }

    /// Opens one HTTP connection to the query API.
    pub async fn connect(&self) -> Result<JaegerConnection> {
        match self {
            JaegerTarget::Url { authority } => {
                let stream = tokio::net::TcpStream::connect(authority)
                    .await
                    .with_context(|| format!("connecting to {}", self.describe()))?;
                JaegerConnection::over(stream, authority.clone(), None).await
            }
            JaegerTarget::Pod { pods, pod, port, .. } => {
                let mut forward = pods
                    .portforward(pod, &[*port])
                    .await
                    .with_context(|| format!("port-forwarding to {}", self.describe()))?;
                let stream = forward
                    .take_stream(*port)
                    .ok_or_else(|| anyhow!("the port-forward to {} has no stream for port {port}", self.describe()))?;
                JaegerConnection::over(stream, format!("localhost:{port}"), Some(forward)).await
            }
        }
    }
}

/// An HTTP/1.1 connection to Jaeger's query API (one request: Jaeger closes it after its
/// answer); closed, with its port-forward, when dropped.
pub struct JaegerConnection {
    sender: SendRequest<Empty<Bytes>>,
    authority: String,
    connection: JoinHandle<()>,
    forward: Option<Portforwarder>,
}

impl JaegerConnection {
    async fn over<S>(stream: S, authority: String, forward: Option<Portforwarder>) -> Result<Self>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .context("starting an HTTP connection to Jaeger")?;
        let connection = tokio::spawn(async move {
            // Its end shows as a failed request.
            let _ = connection.await;
        });
        Ok(Self { sender, authority, connection, forward })
    }

    /// `GET path_and_query`, expecting `200` and a JSON body.
    pub async fn get_json(&mut self, path_and_query: &str) -> Result<serde_json::Value> {
        let request = hyper::Request::get(path_and_query)
            .header(hyper::header::HOST, &self.authority)
            .header(hyper::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .with_context(|| format!("building the request GET {path_and_query}"))?;
        let exchange = async {
            self.sender.ready().await.context("the connection to Jaeger closed")?;
            let response = self.sender.send_request(request).await.context("sending the request")?;
            let status = response.status();
            let body = response.into_body().collect().await.context("reading the answer")?.to_bytes();
            anyhow::Ok((status, body))
        };
        let (status, body) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| anyhow!("no answer within {}s", REQUEST_TIMEOUT.as_secs()))
            .and_then(|r| r)
            .with_context(|| format!("GET {path_and_query} from Jaeger"))?;
        let text = String::from_utf8_lossy(&body);
        if !status.is_success() {
            bail!("GET {path_and_query} from Jaeger: HTTP {status}: {}", text.chars().take(300).collect::<String>());
        }
        serde_json::from_slice(&body).with_context(|| {
            format!(
                "GET {path_and_query} from Jaeger: the answer is not JSON: {}",
                text.chars().take(300).collect::<String>()
            )
        })
    }
}

impl Drop for JaegerConnection {
    fn drop(&mut self) {
        self.connection.abort();
        if let Some(forward) = &self.forward {
            forward.abort();
        }
    }
}

/// Finds the release's Jaeger pod and query port: Service `<release>-jaeger`, its selector,
/// a Running and Ready pod it selects, the container port its `ui` port targets.
pub async fn find_jaeger(client: Client, release: &Release) -> Result<JaegerTarget> {
    let ns = release.namespace.as_str();
    let name = release.resource("jaeger");
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client, ns);
    let service = services.get_opt(&name).await.with_context(|| format!("reading Service {name} in namespace {ns}"))?;
    let Some(service) = service else {
        bail!(
            "Service {name} not found in namespace {ns}: is Jaeger on in the chart (jaeger.enabled)? \
             For an external Jaeger pass --jaeger-url http://HOST:16686"
        );
    };
    let spec = service.spec.unwrap_or_default();
    let selector: BTreeMap<String, String> = spec.selector.unwrap_or_default();
    if selector.is_empty() {
        bail!("Service {name} in namespace {ns} has no selector: cannot find its pod (pass --jaeger-url)");
    }
    let target = spec
        .ports
        .unwrap_or_default()
        .into_iter()
        .find(|p| p.name.as_deref() == Some(QUERY_PORT_NAME) || p.port == i32::from(QUERY_PORT))
        .map(|p| p.target_port.unwrap_or(IntOrString::Int(p.port)));
    let labels = selector.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
    let listed = pods
        .list(&ListParams::default().labels(&labels))
        .await
        .with_context(|| format!("listing the pods of Service {name} ({labels}) in namespace {ns}"))?;
    let ready = |p: &Pod| {
        let status = p.status.as_ref();
        status.and_then(|s| s.phase.as_deref()) == Some("Running")
            && p.metadata.deletion_timestamp.is_none()
            && status
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    let Some(pod) = listed.items.iter().find(|p| ready(p)) else {
        let seen: Vec<String> = listed
            .items
            .iter()
            .map(|p| {
                let phase = p.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_else(|| "Unknown".into());
                format!("{} ({phase})", p.metadata.name.as_deref().unwrap_or("?"))
            })
            .collect();
        bail!(
            "no Running and Ready Jaeger pod for Service {name} ({labels}) in namespace {ns}: {}",
            if seen.is_empty() { "none found".to_owned() } else { seen.join(", ") }
        );
    };
    let port = match target {
        Some(IntOrString::Int(port)) => u16::try_from(port).ok(),
        Some(IntOrString::String(port_name)) => pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(port_name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok()),
        None => None,
    }
    .unwrap_or(QUERY_PORT);
    Ok(JaegerTarget::Pod {
        pods: Box::new(pods),
        pod: pod.metadata.name.clone().unwrap_or_default(),
        port,
        namespace: ns.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jaeger_urls_are_plain_http_host_and_port() {
        let authority = |url: &str| match JaegerTarget::from_url(url).unwrap() {
            JaegerTarget::Url { authority } => authority,
            other => panic!("{other:?}"),
        };
        assert_eq!(authority("http://127.0.0.1:16686"), "127.0.0.1:16686");
        assert_eq!(authority("http://jaeger.local:80/"), "jaeger.local:80");
        for bad in ["127.0.0.1:16686", "https://j:16686", "http://j", "http://:16686", "http://j:0", "http://j:1/api"] {
            assert!(JaegerTarget::from_url(bad).is_err(), "{bad}");
        }
    }
}
