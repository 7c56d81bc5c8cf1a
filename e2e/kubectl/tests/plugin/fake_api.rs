//! A scripted fake Kubernetes API server: answers the exact requests the plugin makes from
//! a script, records every request, and answers anything unscripted with a 404 Status.
//! Like the real one, it answers 404 to a GET of an object it has deleted. It also serves
//! as a fake Jaeger query API (any path can be scripted).

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A JSON body with a status code.
    Json(u16, Value),
    /// A `text/plain` body (pod logs).
    Text(String),
    /// 201 with the request's own body (what the API server does on create, roughly).
    EchoCreated,
}

impl Reply {
    pub fn ok(body: Value) -> Self {
        Reply::Json(200, body)
    }
}

/// A request the server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: String,
}

impl Recorded {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body of {} {} is not JSON ({e}): {}", self.method, self.path, self.body))
    }
}

struct Route {
    method: String,
    path: String,
    /// Answered in order; the last one repeats.
    replies: VecDeque<Reply>,
}

/// The answers of the fake server, by method and path (the query is not matched).
#[derive(Default)]
pub struct Script {
    routes: Vec<Route>,
}

impl Script {
    pub fn new() -> Self {
        Self::default()
    }

    /// Answer `method path` with `replies`, one per request, repeating the last.
    pub fn on(mut self, method: &str, path: &str, replies: impl IntoIterator<Item = Reply>) -> Self {
        let replies: VecDeque<Reply> = replies.into_iter().collect();
        assert!(!replies.is_empty(), "no replies for {method} {path}");
        self.routes.push(Route { method: method.to_owned(), path: path.to_owned(), replies });
        self
    }

    fn answer(&mut self, method: &str, path: &str, body: &str) -> (u16, &'static str, String) {
        let Some(route) = self.routes.iter_mut().find(|r| r.method == method && r.path == path) else {
            return (404, "application/json", not_found(path).to_string());
        };
        let reply = if route.replies.len() > 1 { route.replies.pop_front() } else { route.replies.front().cloned() };
        match reply.expect("a route has at least one reply") {
            Reply::Json(code, value) => (code, "application/json", value.to_string()),
            Reply::Text(text) => (200, "text/plain", text),
            Reply::EchoCreated => (201, "application/json", body.to_owned()),
        }
    }
}

/// The Status the API server sends for a missing object.
pub fn not_found(path: &str) -> Value {
    let name = path.rsplit('/').next().unwrap_or_default();
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("\"{name}\" not found"), "reason": "NotFound",
        "details": { "name": name }, "code": 404
    })
}

struct State {
    script: Script,
    requests: Vec<Recorded>,
    /// Paths of objects a DELETE was answered for: GETs of them are 404 from then on.
    deleted: HashSet<String>,
}

/// A running fake API server on 127.0.0.1; stops when dropped.
pub struct FakeApi {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    seen: watch::Receiver<usize>,
    server: JoinHandle<()>,
}

impl FakeApi {
    pub async fn start(script: Script) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(Mutex::new(State { script, requests: Vec::new(), deleted: HashSet::new() }));
        let (seen_tx, seen) = watch::channel(0usize);
        let seen_tx = Arc::new(seen_tx);
        let server_state = state.clone();
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let state = server_state.clone();
                let seen_tx = seen_tx.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let state = state.clone();
                        let seen_tx = seen_tx.clone();
                        async move { Ok::<_, Infallible>(handle(req, &state, &seen_tx).await) }
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Self { addr, state, seen, server }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube client talking to this server.
    pub fn client(&self) -> kube::Client {
        let url = format!("http://{}", self.addr).parse().expect("server url");
        kube::Client::try_from(kube::Config::new(url)).expect("kube client")
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// The requests with this method and path.
    pub fn requests_to(&self, method: &str, path: &str) -> Vec<Recorded> {
        self.requests().into_iter().filter(|r| r.method == method && r.path == path).collect()
    }

    /// Resolves once `n` requests `method path` have been answered (panics after 10 s).
    pub async fn answered(&self, method: &str, path: &str, n: usize) {
        let mut seen = self.seen.clone();
        let wait = seen.wait_for(|_| self.requests_to(method, path).len() >= n);
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .unwrap_or_else(|_| panic!("no {n} requests {method} {path} within 10 s: {:#?}", self.requests()))
            .expect("fake server alive");
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn handle(req: Request<Incoming>, state: &Mutex<State>, seen: &watch::Sender<usize>) -> Response<Full<Bytes>> {
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let body = String::from_utf8_lossy(&body).into_owned();
    let (code, content_type, text) = {
        let mut state = state.lock().unwrap();
        let answer = if method == "GET" && state.deleted.contains(&path) {
            (404, "application/json", not_found(&path).to_string())
        } else {
            state.script.answer(&method, &path, &body)
        };
        if method == "DELETE" && (200..300).contains(&answer.0) {
            state.deleted.insert(path.clone());
        }
        state.requests.push(Recorded { method, path, query, body });
        answer
    };
    seen.send_modify(|n| *n += 1);
    Response::builder()
        .status(StatusCode::from_u16(code).expect("status code"))
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(text)))
        .expect("response")
}
