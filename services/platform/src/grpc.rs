//! gRPC server bootstrap and status helpers.
//!
//! [`GrpcServer`] serves the service's routes plus `grpc.health.v1.Health` (NOT_SERVING
//! until [`GrpcServer::health`] marks it serving, and again while draining) and server
//! reflection. The stack, outermost first:
//! 0. tracing and RPC metrics ([`crate::trace::GrpcServerTraceLayer`]): a server span per
//!    call, child of the caller's `traceparent`;
//! 1. load shedding: at most `GRPC_CONCURRENCY_LIMIT` calls in flight; the rest get
//!    `RESOURCE_EXHAUSTED` at once instead of waiting in a queue (health and reflection
//!    are exempt, so probes keep answering under overload);
//! 2. a per-call deadline (`GRPC_REQUEST_TIMEOUT_MS`, or the client's shorter one);
//! 3. `max_connection_age`, so long-lived client connections rotate over new replicas.
//!
//! Request messages are limited to [`MAX_REQUEST_BYTES`].

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{net::TcpListener, sync::Semaphore};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::{
    Status,
    server::NamedService,
    service::{Routes, RoutesBuilder},
};
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::config::ServerArgs;

/// Largest request message a service decodes, in bytes: 4 MiB (tonic's default, made
/// explicit; every service sets it with `max_decoding_message_size`). The largest valid
/// request — `PlaceOrder` with 100 items and 200-byte texts — is about 30 KiB. A bigger
/// message is refused from its 5-byte gRPC length prefix, before its body is buffered,
/// with tonic's `OUT_OF_RANGE` "decoded message length too large: found N bytes, the limit
/// is: 4194304 bytes": a 50 MB request costs the server no memory and the connection
/// keeps serving.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// The contract's error model (`FAILED_PRECONDITION` + `ErrorInfo`, `INVALID_ARGUMENT` +
/// `BadRequest`); the refusal reasons themselves are the contract's, not the platform's.
pub use cloudmart_proto::contract::{invalid_argument, reason_of, refusal};

/// `NOT_FOUND` for an unknown id.
pub fn not_found(what: &str, id: &str) -> Status {
    Status::not_found(format!("{what} {id} not found"))
}

/// `INTERNAL` for unexpected failures; the cause is logged, not leaked to the client.
pub fn internal(err: impl std::fmt::Display) -> Status {
    tracing::error!(error = format!("{err:#}"), "internal error");
    Status::internal("internal error; see server logs")
}

/// A generated tonic service (e.g. `OrderServiceServer<Api>`) as the server mounts it.
pub trait GrpcService:
    tower::Service<
        http::Request<tonic::body::Body>,
        Response = http::Response<tonic::body::Body>,
        Error = std::convert::Infallible,
        Future: Send + 'static,
    > + NamedService
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> GrpcService for S where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
            Future: Send + 'static,
        > + NamedService
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// A gRPC server under construction: routes, health and reflection.
pub struct GrpcServer {
    listener: TcpListener,
    routes: RoutesBuilder,
    names: Vec<&'static str>,
    health: HealthReporter,
    args: ServerArgs,
}

impl GrpcServer {
    /// Wraps a bound listener (bind `127.0.0.1:0` in tests).
    pub fn new(listener: TcpListener, args: ServerArgs) -> Self {
        let (health, health_service) = tonic_health::server::health_reporter();
        let mut routes = RoutesBuilder::default();
        routes.add_service(health_service);
        Self { listener, routes, names: Vec::new(), health, args }
    }

    /// Adds a service; its health status starts NOT_SERVING.
    pub fn add_service<S: GrpcService>(mut self, svc: S) -> Self {
        self.names.push(S::NAME);
        self.routes.add_service(svc);
        self
    }

    /// How long draining may take.
    pub fn grace(&self) -> Duration {
        self.args.shutdown_grace()
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// A handle to flip health status.
    pub fn health(&self) -> Health {
        Health { reporter: self.health.clone(), names: self.names.clone() }
    }

    /// Serves until `token` is cancelled, then stops accepting and drains in-flight calls.
    /// Health stays as set through [`GrpcServer::health`] (NOT_SERVING until marked).
    pub async fn serve(self, token: CancellationToken) -> anyhow::Result<()> {
        // The contract, health, and google.rpc's error details: reflection clients such as
        // grpcurl decode an error's `ErrorInfo` / `BadRequest` only if they can look them up.
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(cloudmart_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(cloudmart_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;
        let mut routes = self.routes;
        routes.add_service(reflection).add_service(reflection_alpha);
        let routes: Routes = routes.routes();

        let mut builder = tonic::transport::Server::builder().timeout(self.args.request_timeout());
        if self.args.max_connection_age_secs > 0 {
            builder = builder
                .max_connection_age(Duration::from_secs(self.args.max_connection_age_secs))
                .max_connection_age_grace(Duration::from_secs(5));
        }
        let incoming = TcpListenerStream::new(self.listener);
        builder
            .layer(crate::trace::GrpcServerTraceLayer)
            .layer(LoadShedLayer::new(self.args.concurrency_limit as usize))
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, token.cancelled_owned())
            .await?;
        Ok(())
    }
}

/// Flips the health status of every service of one server.
#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
    names: Vec<&'static str>,
}

impl Health {
    pub async fn set(&self, status: ServingStatus) {
        self.reporter.set_service_status("", status).await;
        for name in &self.names {
            self.reporter.set_service_status(*name, status).await;
        }
    }
}

/// Load shedding: a fixed number of permits; no permit, no queue — `RESOURCE_EXHAUSTED`.
#[derive(Clone)]
pub struct LoadShedLayer {
    permits: Arc<Semaphore>,
}

impl LoadShedLayer {
    pub fn new(limit: usize) -> Self {
        Self { permits: Arc::new(Semaphore::new(limit)) }
    }
}

impl<S> tower::Layer<S> for LoadShedLayer {
    type Service = LoadShed<S>;
    fn layer(&self, inner: S) -> LoadShed<S> {
        LoadShed { inner, permits: self.permits.clone() }
    }
}

/// See [`LoadShedLayer`].
#[derive(Clone)]
pub struct LoadShed<S> {
    inner: S,
    permits: Arc<Semaphore>,
}

fn exempt(path: &str) -> bool {
    path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection.")
}

impl<S, B> tower::Service<http::Request<B>> for LoadShed<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if exempt(req.uri().path()) {
            return Box::pin(self.inner.call(req));
        }
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let fut = self.inner.call(req);
                Box::pin(async move {
                    let res = fut.await;
                    drop(permit);
                    res
                })
            }
            Err(_) => {
                let status =
                    Status::resource_exhausted("server overloaded: too many concurrent requests; retry with backoff");
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_and_reflection_are_never_shed() {
        assert!(exempt("/grpc.health.v1.Health/Check"));
        assert!(exempt("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"));
        assert!(!exempt("/cloudmart.order.v1.OrderService/PlaceOrder"));
    }
}
