//! `--kubeconfig`, `--context` and the context's namespace, against the fake API server.

use std::path::PathBuf;

use cloudmart_kubectl::cluster::{connect, context_namespace};
use serde_json::json;

use crate::fake_api::{FakeApi, Reply, Script};

/// A kubeconfig whose current context is `other` and whose `cloudmart-local` context names
/// namespace `shop`, both on `server`.
fn kubeconfig(server: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kubectl-cloudmart-kc-{}-{}", std::process::id(), server.len()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("config-{}", server.replace([':', '/', '.'], "_")));
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1
kind: Config
current-context: other
clusters:
- name: fake
  cluster: {{ server: '{server}' }}
users:
- name: admin
  user: {{ token: secret }}
contexts:
- name: other
  context: {{ cluster: fake, user: admin }}
- name: cloudmart-local
  context: {{ cluster: fake, user: admin, namespace: shop }}
"
        ),
    )
    .unwrap();
    path
}

fn version() -> Reply {
    Reply::ok(json!({
        "major": "1", "minor": "34", "gitVersion": "v1.34.4", "gitCommit": "0", "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64"
    }))
}

#[tokio::test]
async fn the_context_of_the_kubeconfig_gives_the_cluster_and_the_namespace() {
    let api = FakeApi::start(Script::new().on("GET", "/version", [version()])).await;
    let path = kubeconfig(&api.url());

    let connected = connect(Some(&path), Some("cloudmart-local")).await.unwrap();
    assert_eq!(connected.namespace.as_deref(), Some("shop"));
    assert_eq!(connected.server_version, "v1.34.4");
    assert_eq!(connected.source, format!("context cloudmart-local of kubeconfig {}", path.display()));
    let asked = api.requests_to("GET", "/version");
    assert_eq!(asked.len(), 1, "the connection is checked once");

    let current = connect(Some(&path), None).await.unwrap();
    assert_eq!((current.namespace, current.source.starts_with("context other of")), (None, true));
    assert_eq!(context_namespace(Some(&path), Some("cloudmart-local")).as_deref(), Some("shop"));
    assert_eq!(context_namespace(Some(&path), None), None);

    let err = connect(Some(&path), Some("kind-cloudmart")).await.unwrap_err().to_string();
    assert!(err.contains(&format!("context kind-cloudmart not found in kubeconfig {}", path.display())), "{err}");
    assert!(err.contains("other, cloudmart-local"), "{err}");
    std::fs::remove_file(&path).ok();
}

#[tokio::test]
async fn a_cluster_that_does_not_answer_is_named_in_the_error() {
    // A port nothing listens on: bind one, then close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let path = kubeconfig(&format!("http://127.0.0.1:{port}"));

    let err = format!("{:#}", connect(Some(&path), Some("cloudmart-local")).await.unwrap_err());
    assert!(
        err.contains(&format!(
            "cannot reach the Kubernetes API server http://127.0.0.1:{port}/ of context cloudmart-local of kubeconfig {}",
            path.display()
        )),
        "{err}"
    );
    std::fs::remove_file(&path).ok();
}
