//! A rehearsal that must fail: the chart's wiring broken on purpose (the order service
//! pointed at its database with a wrong password). The run has to fail naming the pod,
//! the probe that never passed and the pod's own log lines saying why, and it has to
//! remove everything it started.
//!
//! Needs Docker and the images (`make images`, `bash deploy/airgap-infra.sh`), so it runs
//! only with `REHEARSE_DOCKER=1` — CI sets it after building the images (`.ci/run`,
//! step "make rehearse"); otherwise it prints SKIP.

use std::process::Command;

#[test]
fn a_wrong_database_password_fails_naming_the_pod_and_the_cause() {
    if std::env::var("REHEARSE_DOCKER").as_deref() != Ok("1") {
        eprintln!("SKIP: set REHEARSE_DOCKER=1 (Docker + images needed; CI runs it after `make images`)");
        return;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(env!("CARGO_BIN_EXE_cloudmart-rehearse"))
        .current_dir(&root)
        .args([
            "up",
            "--timeout-secs",
            "60",
            "--set",
            "order.extraEnv[0].name=DATABASE_URL",
            "--set",
            "order.extraEnv[0].value=postgres://order:wrong-password@cloudmart-postgresql.cloudmart.svc:5432/order",
        ])
        .output()
        .expect("cloudmart-rehearse runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("{text}");
    assert!(!out.status.success(), "a broken wiring must fail the rehearsal");
    assert!(text.contains("pod cloudmart-order-0 (Deployment cloudmart-order) is not Ready"), "names the pod");
    assert!(text.contains("startup probe (gRPC health :50051) failed"), "names the probe");
    assert!(text.contains("password authentication failed"), "shows the pod's own log line with the cause");
    assert!(!text.contains("pod cloudmart-delivery-0"), "only the broken pod is blamed");

    // everything it started is gone
    let run_id =
        text.split("run ").nth(1).and_then(|s| s.split_whitespace().next()).expect("the run id is printed").to_owned();
    let docker = std::env::var("DOCKER").unwrap_or_else(|_| "docker".into());
    let left = Command::new(&docker)
        .args(["ps", "-aq", "--filter", &format!("label=io.cloudmart.rehearsal={run_id}")])
        .output()
        .expect("docker ps");
    assert!(left.stdout.is_empty(), "containers of {run_id} left behind: {}", String::from_utf8_lossy(&left.stdout));
    let nets = Command::new(&docker)
        .args(["network", "ls", "-q", "--filter", &format!("label=io.cloudmart.rehearsal={run_id}")])
        .output()
        .expect("docker network ls");
    assert!(nets.stdout.is_empty(), "network of {run_id} left behind");
    let vols = Command::new(&docker)
        .args(["volume", "ls", "-q", "--filter", &format!("label=io.cloudmart.rehearsal={run_id}")])
        .output()
        .expect("docker volume ls");
    assert!(
        vols.stdout.is_empty(),
        "emptyDir volumes of {run_id} left behind: {}",
        String::from_utf8_lossy(&vols.stdout)
    );
}
