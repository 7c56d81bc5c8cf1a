//! Starting, waiting for and stopping service processes.

use std::{
    collections::HashMap,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use cloudmart_platform::testkit::{TestDatabase, TestKafka, until};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

/// Directory of the binaries built with this test (target/<profile>/).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: build the binaries first (`make test` runs `cargo build --release --bins`)",
        path.display()
    );
    path
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn log_dir() -> PathBuf {
    let d = std::env::temp_dir().join("cloudmart-e2e-logs");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A running process; killed on drop if still alive.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
    /// `METRICS_ADDR` it was started with (host:port of `/metrics`).
    pub metrics_addr: Option<String>,
}

impl Proc {
    pub fn spawn(binary: &str, label: &str, env: &HashMap<String, String>, args: &[&str]) -> Proc {
        let log = log_dir().join(format!("{label}-{binary}-{}.log", uuid::Uuid::new_v4().simple()));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin(binary))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .envs(env)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
        eprintln!("[e2e] started {binary} (pid {}), log {}", child.id(), log.display());
        Proc { name: binary.to_owned(), child, log, metrics_addr: env.get("METRICS_ADDR").cloned() }
    }

    /// SIGTERM, then wait for a clean exit (status 0) within `within`.
    pub fn terminate(self, within: Duration) -> std::process::ExitStatus {
        self.signal("TERM", within)
    }

    /// SIGINT (what Ctrl-C sends), then wait for the exit within `within`.
    pub fn interrupt(self, within: Duration) -> std::process::ExitStatus {
        self.signal("INT", within)
    }

    fn signal(mut self, signal: &str, within: Duration) -> std::process::ExitStatus {
        let _ = Command::new("kill").arg(format!("-{signal}")).arg(self.child.id().to_string()).status();
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("{} did not stop within {within:?} after SIG{signal}; log {}", self.name, self.log.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: a crash at an arbitrary point.
    pub fn crash(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits until `addr` answers health checks with SERVING for `service` ("" = overall).
pub async fn wait_serving(addr: &str, service: &str, proc_: &mut Proc) {
    let name = proc_.name.clone();
    let proc_ = std::sync::Mutex::new(proc_);
    let log = || proc_.lock().unwrap().log_text();
    until(&format!("{name} SERVING (health {service:?})"), Duration::from_secs(60), || async {
        let exited = proc_.lock().unwrap().child.try_wait().unwrap();
        if let Some(status) = exited {
            panic!("{name} exited early ({status}); log:\n{}", log());
        }
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .map_err(|e| format!("not reachable: {e}; log:\n{}", log()))?;
        let r = HealthClient::new(channel)
            .check(HealthCheckRequest { service: service.into() })
            .await
            .map_err(|e| format!("health check failed: {e}; log:\n{}", log()))?;
        match r.get_ref().status() {
            ServingStatus::Serving => Ok(()),
            other => Err(format!("health says {other:?}; log:\n{}", log())),
        }
    })
    .await
}

/// Databases, broker namespace and ports for one order + delivery system.
pub struct System {
    pub label: String,
    pub kafka: TestKafka,
    pub order_db: String,
    pub delivery_db: String,
    pub order_addr: String,
    pub delivery_addr: String,
}

impl System {
    pub async fn new(label: &str) -> System {
        System {
            label: label.to_owned(),
            kafka: TestKafka::create(label).await.unwrap(),
            order_db: TestDatabase::create(&format!("{label}_order")).await.unwrap().url,
            delivery_db: TestDatabase::create(&format!("{label}_delivery")).await.unwrap().url,
            order_addr: format!("127.0.0.1:{}", free_port()),
            delivery_addr: format!("127.0.0.1:{}", free_port()),
        }
    }

    fn common(&self, service: &str, db: &str, addr: &str) -> HashMap<String, String> {
        HashMap::from([
            ("GRPC_ADDR".into(), addr.to_owned()),
            ("METRICS_ADDR".into(), format!("127.0.0.1:{}", free_port())),
            ("DATABASE_URL".into(), db.to_owned()),
            ("KAFKA_BROKERS".into(), self.kafka.args.brokers.clone()),
            ("KAFKA_TOPIC_PREFIX".into(), self.kafka.args.topic_prefix.clone()),
            ("KAFKA_GROUP_ID".into(), self.group(service)),
            ("KAFKA_CREATE_TOPICS".into(), self.kafka.args.create_topics.to_string()),
        ])
    }

    pub fn group(&self, service: &str) -> String {
        format!("{}cloudmart-{service}", self.kafka.args.topic_prefix)
    }

    pub async fn start_order(&self, extra: &[(&str, &str)]) -> Proc {
        let mut env = self.common("order", &self.order_db, &self.order_addr);
        env.insert("DELIVERY_ENDPOINT".into(), format!("http://{}", self.delivery_addr));
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut p = Proc::spawn("cloudmart-order", &self.label, &env, &[]);
        wait_serving(&self.order_addr, "cloudmart.order.v1.OrderService", &mut p).await;
        p
    }

    pub async fn start_delivery(&self, extra: &[(&str, &str)]) -> Proc {
        let mut env = self.common("delivery", &self.delivery_db, &self.delivery_addr);
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut p = Proc::spawn("cloudmart-delivery", &self.label, &env, &[]);
        wait_serving(&self.delivery_addr, "cloudmart.delivery.v1.DeliveryService", &mut p).await;
        p
    }
}
