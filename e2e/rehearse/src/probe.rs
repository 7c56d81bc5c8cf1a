//! Probes as the kubelet runs them: from the node (here: the host, which reaches every
//! container address on the rehearsal's bridge network), against the pod's address; exec
//! probes inside the container.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::docker::Docker;
use crate::plan::ProbeAction;

/// Runs one probe once; Ok when it passes.
pub async fn check(docker: &Docker, container: &str, ip: &str, action: &ProbeAction, timeout: Duration) -> Result<()> {
    match action {
        ProbeAction::Grpc { port, service } => tokio::time::timeout(timeout, grpc_health(ip, *port, service))
            .await
            .map_err(|_| anyhow!("timed out after {timeout:?}"))?,
        ProbeAction::Tcp { port } => tokio::time::timeout(timeout, TcpStream::connect((ip, *port)))
            .await
            .map_err(|_| anyhow!("timed out after {timeout:?}"))?
            .map(drop)
            .with_context(|| format!("connect {ip}:{port}")),
        ProbeAction::Http { port, path } => {
            let status = tokio::time::timeout(timeout, http_status(ip, *port, path))
                .await
                .map_err(|_| anyhow!("timed out after {timeout:?}"))??;
            if (200..400).contains(&status) { Ok(()) } else { bail!("HTTP {status}") }
        }
        ProbeAction::Exec { command } => docker.exec(container, command, timeout).await,
    }
}

async fn grpc_health(ip: &str, port: u16, service: &str) -> Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{ip}:{port}"))?
        .connect()
        .await
        .with_context(|| format!("connect {ip}:{port}"))?;
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest { service: service.to_owned() })
        .await
        .map_err(|s| anyhow!("health check: {} {}", s.code(), s.message()))?
        .into_inner()
        .status();
    if status == ServingStatus::Serving { Ok(()) } else { bail!("health status {}", status.as_str_name()) }
}

/// Status code of `GET path` (HTTP/1.0, so the body ends with the connection).
pub async fn http_status(ip: &str, port: u16, path: &str) -> Result<u16> {
    let (status, _) = http_get(ip, port, path).await?;
    Ok(status)
}

/// `GET path` over HTTP/1.0: status code and body.
pub async fn http_get(ip: &str, port: u16, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect((ip, port)).await.with_context(|| format!("connect {ip}:{port}"))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {ip}:{port}\r\nAccept: */*\r\n\r\n").as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("not an HTTP response from {ip}:{port}"))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}
