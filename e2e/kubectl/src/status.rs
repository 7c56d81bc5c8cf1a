//! `kubectl cloudmart status`: the service Deployments and the time-sale autoscaler.

use std::io::Write;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::{Api, Client};

use crate::scaling::{DeploymentView, HpaView, count_text};
use crate::{AUTOSCALED_SERVICE, Release, SERVICES};

/// Prints a table of the three Deployments (ready/desired replicas, image) and the
/// time-sale HPA (replicas, bounds, CPU against target) of `release`.
///
/// Fails, after printing what it found, when any of them is missing.
pub async fn status<W: Write + Send>(client: Client, release: &Release, out: &mut W) -> Result<()> {
    let ns = release.namespace.as_str();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client, ns);

    let mut rows = Vec::new();
    for service in SERVICES {
        let name = release.resource(service);
        let found =
            deployments.get_opt(&name).await.with_context(|| format!("reading Deployment {name} in namespace {ns}"))?;
        rows.push((name, found.as_ref().map(DeploymentView::of)));
    }
    let hpa_name = release.resource(AUTOSCALED_SERVICE);
    let hpa = hpas
        .get_opt(&hpa_name)
        .await
        .with_context(|| format!("reading HorizontalPodAutoscaler {hpa_name} in namespace {ns}"))?
        .as_ref()
        .map(HpaView::of);

    let width = rows.iter().map(|(n, _)| n.len()).chain([hpa_name.len(), "DEPLOYMENT".len()]).max().unwrap_or(0) + 2;
    writeln!(out, "release {} in namespace {ns}", release.name)?;
    writeln!(out)?;
    writeln!(out, "{:width$}{:<8}IMAGE", "DEPLOYMENT", "READY")?;
    for (name, view) in &rows {
        match view {
            Some(d) => writeln!(
                out,
                "{name:width$}{:<8}{}",
                format!("{}/{}", d.ready, d.desired),
                d.image.as_deref().unwrap_or("<none>")
            )?,
            None => writeln!(out, "{name:width$}not found")?,
        }
    }
    writeln!(out)?;
    writeln!(out, "{:width$}{:<10}{:<9}{:<9}CPU (current/target)", "HPA", "REPLICAS", "DESIRED", "MIN/MAX")?;
    match &hpa {
        Some(h) => {
            writeln!(
                out,
                "{hpa_name:width$}{:<10}{:<9}{:<9}{}",
                count_text(h.current_replicas),
                count_text(h.desired_replicas),
                format!("{}/{}", h.min_replicas, h.max_replicas),
                h.cpu_text()
            )?;
            if h.cpu_current.is_none() {
                writeln!(out)?;
                writeln!(
                    out,
                    "note: the HPA has no CPU metrics yet (<unknown>). It needs metrics-server \
                     (`make deploy` installs it); the first figures appear about a minute after the pods start."
                )?;
            }
        }
        None => writeln!(out, "{hpa_name:width$}not found")?,
    }

    let mut missing: Vec<String> =
        rows.iter().filter(|(_, v)| v.is_none()).map(|(n, _)| format!("Deployment {n}")).collect();
    if hpa.is_none() {
        missing.push(format!("HorizontalPodAutoscaler {hpa_name}"));
    }
    if !missing.is_empty() {
        out.flush()?;
        bail!(
            "{} not found in namespace {ns}: is cloudmart installed there? Run `make deploy`, \
             or pass --namespace/--release for another installation",
            missing.join(", ")
        );
    }
    Ok(())
}
