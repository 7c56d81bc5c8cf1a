//! The contract from outside: a Python client generated from `proto/` with the reference
//! `protoc` (PyPI grpcio-tools) drives real processes of the three services through saga 1,
//! saga 2 and a flash-sale purchase, reading error details with grpcio-status
//! (`e2e/pyclient/client_test.py`). Its venv lives under the target directory
//! (`e2e/pyclient/venv.sh`).

use std::{path::PathBuf, process::Command};

use crate::harness::{System, free_port};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_python_client_drives_the_sagas() {
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("[e2e] SKIP a_generated_python_client…: python3 is not installed");
        return;
    }
    let root = repo_root();
    let venv = Command::new("bash").arg(root.join("e2e/pyclient/venv.sh")).output().expect("run venv.sh");
    assert!(venv.status.success(), "e2e/pyclient/venv.sh failed:\n{}", String::from_utf8_lossy(&venv.stderr));
    let venv = PathBuf::from(String::from_utf8_lossy(&venv.stdout).trim());

    let sys = System::new("pyclient").await;
    let _delivery = sys.start_delivery(&[("FAULT_DELIVERY_FAIL_POSTAL_CODES", "99999")]).await;
    let _order = sys.start_order(&[]).await;
    let ts_db = cloudmart_platform::testkit::TestDatabase::create("pyclient_timesale").await.unwrap();
    let ts_addr = format!("127.0.0.1:{}", free_port());
    let _timesale = crate::timesale::start_timesale_with(&sys, &ts_db.url, &ts_addr, &[]).await;

    let out = tokio::task::spawn_blocking({
        let (root, order, delivery) = (root.clone(), sys.order_addr.clone(), sys.delivery_addr.clone());
        move || {
            Command::new(venv.join("bin/python"))
                .arg(root.join("e2e/pyclient/client_test.py"))
                .args(["--proto-dir", &root.join("proto").display().to_string()])
                .args(["--order", &order, "--delivery", &delivery, "--timesale", &ts_addr])
                .output()
                .expect("run client_test.py")
        }
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    eprintln!("[e2e] python client:\n{text}");
    assert!(out.status.success(), "the generated Python client failed:\n{text}");
    assert!(text.contains("4 passed, 0 failed"), "{text}");
}
