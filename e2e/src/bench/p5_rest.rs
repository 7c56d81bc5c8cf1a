//! P5 — cost at rest, per service (order, delivery, time-sale).
//!
//! Each release binary runs as a process of its own against the run's PostgreSQL (a fresh
//! database) and broker, twice: a first start that migrates, then — after SIGTERM and a
//! clean exit — a restart with nothing to migrate, the common case of a pod restart.
//!
//! - **start → SERVING**: from spawning the process to the first `grpc.health.v1.Health/
//!   Check` answering SERVING, polled every 5 ms (connection refusals count as not yet).
//!   The figure is the restart; the first start is in the note.
//! - **idle RSS**: `VmRSS` of `/proc/<pid>/status` after the restart and a few idle
//!   seconds (5 s; 2 s with `--quick`).
//! - **image size**: `docker image inspect cloudmart/<svc>:dev` when a Docker engine
//!   answers and the image exists (`make images`); otherwise not measured.
//!
//! The reference: Debian's `redis-server`, started the same way (spawn → PING answered,
//! then RSS after the same idle time).
//!
//! Goals: ≤ 20 MiB RSS, ≤ 150 ms to SERVING, ≤ 30 MiB image.

use std::{
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::Context;
use tokio::process::{Child, Command};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use super::{
    Ctx, TempDb, Topics, free_port, out_file,
    redis::RedisServer,
    report::{Figure, Goal},
};

/// (binary, short name, image)
const SERVICES: [(&str, &str, &str); 3] = [
    ("cloudmart-order", "order", "cloudmart/order:dev"),
    ("cloudmart-delivery", "delivery", "cloudmart/delivery:dev"),
    ("cloudmart-timesale", "time-sale", "cloudmart/timesale:dev"),
];

struct Measured {
    first_start_ms: f64,
    restart_ms: f64,
    rss_mib: f64,
}

pub(crate) async fn run(ctx: &Ctx) -> Vec<Figure> {
    eprintln!("bench: P5 reference: redis-server start and idle RSS …");
    let reference = redis_reference(ctx.sizes.idle).await;
    let (ref_ms, ref_rss, ref_note) = match &reference {
        Ok((ms, rss)) => (Some(*ms), Some(*rss), String::new()),
        Err(e) => (None, None, format!(" Reference not measured: {e:#}.")),
    };
    let mut figures = Vec::new();
    let idle = ctx.sizes.idle.as_secs();
    for (bin, svc, image) in SERVICES {
        eprintln!("bench: P5 {svc}: start, stop, restart, {idle} s idle …");
        let measured = measure(ctx, bin, svc).await;
        let start_name = format!("{svc}: start → SERVING (restart)");
        let rss_name = format!("{svc}: idle RSS");
        match measured {
            Ok(m) => {
                eprintln!(
                    "bench: P5 {svc}: first start {:.0} ms, restart {:.0} ms to SERVING, idle RSS {:.1} MiB",
                    m.first_start_ms, m.restart_ms, m.rss_mib
                );
                figures.push(
                    Figure::new("P5", &start_name, m.restart_ms, "ms")
                        .with_goal(Goal::AtMost(150.0))
                        .with_reference("redis-server to PING", ref_ms)
                        .with_note(format!(
                            "release binary as a process on PostgreSQL and the run's broker, health polled every 5 ms; \
                             first start on an empty database (migrations) {:.0} ms, restart with nothing to migrate \
                             {:.0} ms.{ref_note}",
                            m.first_start_ms, m.restart_ms
                        )),
                );
                figures.push(
                    Figure::new("P5", &rss_name, m.rss_mib, "MiB")
                        .with_goal(Goal::AtMost(20.0))
                        .with_reference("redis-server idle", ref_rss)
                        .with_note(format!("VmRSS after the restart and {idle} s idle.")),
                );
            }
            Err(e) => {
                let reason = format!("{e:#}");
                eprintln!("bench: P5 {svc}: not measured: {reason}");
                figures.push(
                    Figure::not_measured("P5", &start_name, "ms", Goal::AtMost(150.0), reason.clone())
                        .with_reference("redis-server to PING", ref_ms),
                );
                figures.push(
                    Figure::not_measured("P5", &rss_name, "MiB", Goal::AtMost(20.0), reason)
                        .with_reference("redis-server idle", ref_rss),
                );
            }
        }
        let name = format!("{svc}: image size");
        figures.push(match image_mib(image) {
            Ok(mib) => Figure::new("P5", &name, mib, "MiB")
                .with_goal(Goal::AtMost(30.0))
                .with_note(format!("`docker image inspect {image}` (Size).")),
            Err(reason) => Figure::not_measured("P5", &name, "MiB", Goal::AtMost(30.0), reason),
        });
    }
    figures
}

async fn measure(ctx: &Ctx, bin: &str, svc: &str) -> anyhow::Result<Measured> {
    let path = ctx.binary(bin)?;
    let db = TempDb::create(&ctx.opts.database_url, &format!("p5_{}", svc.replace('-', ""))).await?;
    let topics = Topics::new(ctx, "p5")?;
    let result = async {
        let grpc = free_port()?;
        let mut args = vec![
            format!("--grpc-addr=127.0.0.1:{grpc}"),
            format!("--metrics-addr=127.0.0.1:{}", free_port()?),
            format!("--database-url={}", db.url),
        ];
        args.extend(topics.flags(bin));
        let log = out_file(ctx, &format!("p5-{svc}.log"));
        let (mut child, first) = start(&path, &args, grpc, &log).await?;
        stop(&mut child).await?;
        let (mut child, restart) = start(&path, &args, grpc, &log).await?;
        tokio::time::sleep(ctx.sizes.idle).await;
        let rss = child.id().and_then(rss_mib).context("no VmRSS for the service process")?;
        stop(&mut child).await?;
        Ok(Measured {
            first_start_ms: first.as_secs_f64() * 1000.0,
            restart_ms: restart.as_secs_f64() * 1000.0,
            rss_mib: rss,
        })
    }
    .await;
    topics.delete(super::contract_topics()).await;
    db.drop().await;
    result
}

/// Spawns the service (its log appended to `log`) and returns it with the time until
/// health answered SERVING.
async fn start(path: &Path, args: &[String], port: u16, log: &Path) -> anyhow::Result<(Child, Duration)> {
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    let t = Instant::now();
    let mut child = Command::new(path)
        .args(args)
        .env("LOG_FORMAT", "json")
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawning {}", path.display()))?;
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?;
    loop {
        if let Ok(channel) = endpoint.connect().await {
            let mut health = HealthClient::new(channel);
            loop {
                match health.check(HealthCheckRequest { service: String::new() }).await {
                    Ok(r) if r.get_ref().status() == ServingStatus::Serving => return Ok((child, t.elapsed())),
                    Ok(_) => {}
                    Err(_) => break,
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("{} exited during start-up ({status}); see {}", path.display(), log.display());
        }
        anyhow::ensure!(t.elapsed() < Duration::from_secs(60), "{} not SERVING after 60 s", path.display());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// SIGTERM, then wait for the exit (SIGKILL after 30 s).
async fn stop(child: &mut Child) -> anyhow::Result<()> {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
        if tokio::time::timeout(Duration::from_secs(30), child.wait()).await.is_ok() {
            return Ok(());
        }
    }
    child.kill().await?;
    Ok(())
}

/// `VmRSS` of `pid` in MiB.
fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The image's size in MiB, or why it is not measured.
fn image_mib(image: &str) -> Result<f64, String> {
    let docker = std::env::var("DOCKER").unwrap_or_else(|_| "docker".into());
    let out = std::process::Command::new(&docker)
        .args(["image", "inspect", "--format", "{{.Size}}", image])
        .output()
        .map_err(|_| "not measured: no Docker images (docker not installed)".to_owned())?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(if err.contains("Cannot connect") || err.contains("daemon") {
            "not measured: no Docker images (no Docker engine answers)".to_owned()
        } else {
            format!("not measured: no Docker images ({image} not built: make images)")
        });
    }
    let bytes: f64 =
        String::from_utf8_lossy(&out.stdout).trim().parse().map_err(|e| format!("docker image inspect: {e}"))?;
    Ok(bytes / (1024.0 * 1024.0))
}

/// redis-server: (ms to PING, idle RSS MiB).
async fn redis_reference(idle: Duration) -> anyhow::Result<(f64, f64)> {
    let server = RedisServer::start().await?;
    tokio::time::sleep(idle).await;
    let rss = server.pid().and_then(rss_mib).context("no VmRSS for redis-server")?;
    Ok((server.ready_after.as_secs_f64() * 1000.0, rss))
}
