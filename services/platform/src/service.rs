//! Runs one service: its gRPC server and background workers under one shutdown.
//!
//! Start-up: the server listens with health NOT_SERVING, workers start, health turns
//! SERVING. Shutdown (the `shutdown` future resolves, or any part fails): health
//! NOT_SERVING, the server stops accepting and drains in-flight calls (up to the grace
//! period), then workers stop — consumers commit offsets, the outbox relay publishes what
//! is left and flushes the producer.

use std::{future::Future, pin::Pin};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;

use crate::grpc::GrpcServer;

/// A background worker: runs until its token is cancelled.
pub type Worker = Box<dyn FnOnce(CancellationToken) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> + Send>;

/// Wraps an async fn taking a token as a [`Worker`].
pub fn worker<F, Fut>(f: F) -> Worker
where
    F: FnOnce(CancellationToken) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    Box::new(move |token| Box::pin(f(token)))
}

/// A server with its workers.
pub struct ServiceRuntime {
    name: &'static str,
    server: GrpcServer,
    workers: Vec<(&'static str, Worker)>,
}

impl ServiceRuntime {
    pub fn new(name: &'static str, server: GrpcServer) -> Self {
        Self { name, server, workers: Vec::new() }
    }

    pub fn with_worker(mut self, name: &'static str, w: Worker) -> Self {
        self.workers.push((name, w));
        self
    }

    /// Serves until `shutdown` resolves or a part fails; returns the first failure.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let grace = self.server_grace();
        let health = self.server.health();
        let server_token = CancellationToken::new();
        let workers_token = CancellationToken::new();

        health.set(ServingStatus::NotServing).await;
        let mut server = tokio::spawn(self.server.serve(server_token.clone()));
        let mut workers = JoinSet::new();
        for (name, w) in self.workers {
            let fut = w(workers_token.clone());
            workers.spawn(async move { (name, fut.await) });
        }
        health.set(ServingStatus::Serving).await;
        tracing::info!(service = self.name, "serving");

        let mut failure: Option<anyhow::Error> = None;
        tokio::select! {
            _ = shutdown => tracing::info!(service = self.name, "shutdown requested; draining"),
            res = &mut server => {
                failure = Some(match res {
                    Ok(Ok(())) => anyhow::anyhow!("gRPC server stopped unexpectedly"),
                    Ok(Err(e)) => e.context("gRPC server failed"),
                    Err(e) => anyhow::Error::new(e).context("gRPC server panicked"),
                });
            }
            Some(res) = workers.join_next() => {
                failure = Some(match res {
                    Ok((name, Ok(()))) => anyhow::anyhow!("worker {name} stopped unexpectedly"),
                    Ok((name, Err(e))) => e.context(format!("worker {name} failed")),
                    Err(e) => anyhow::Error::new(e).context("worker panicked"),
                });
            }
        }
        if let Some(e) = &failure {
            tracing::error!(service = self.name, error = format!("{e:#}"), "stopping after failure");
        }

        health.set(ServingStatus::NotServing).await;
        server_token.cancel();
        if !server.is_finished() {
            match tokio::time::timeout(grace, &mut server).await {
                Ok(Ok(Err(e))) => tracing::warn!(error = %e, "server ended with an error while draining"),
                Ok(_) => {}
                Err(_) => {
                    tracing::warn!(?grace, "drain deadline passed; closing remaining connections");
                    server.abort();
                }
            }
        }
        workers_token.cancel();
        while let Some(res) = workers.join_next().await {
            match res {
                Ok((name, Err(e))) => {
                    tracing::warn!(worker = name, error = format!("{e:#}"), "worker ended with an error");
                    failure.get_or_insert(e);
                }
                Ok((name, Ok(()))) => tracing::debug!(worker = name, "worker stopped"),
                Err(e) => tracing::warn!(error = %e, "worker panicked"),
            }
        }
        tracing::info!(service = self.name, "stopped");
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn server_grace(&self) -> std::time::Duration {
        self.server.grace()
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
