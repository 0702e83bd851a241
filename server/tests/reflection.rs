//! Server reflection and health, checked by a client that knows nothing of Percy's .proto
//! files: `reflection_check.py` (Python grpcio + grpcio-reflection, as grpcurl would do it).
//! Skips with a notice when python3 lacks grpcio; CI installs it.

mod common;

use std::process::Command;

use common::*;

fn python_has_grpc() -> bool {
    Command::new("python3")
        .args(["-c", "import grpc, grpc_reflection"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reflection_only_client_lists_and_calls_services() {
    if !python_has_grpc() {
        eprintln!(
            "SKIPPED reflection check: python3 lacks grpcio/grpcio-reflection \
             (pip install grpcio grpcio-reflection)"
        );
        return;
    }
    let mut slots = slots(&[1]).await;
    let peers = peers_of(&slots);
    let node = start(&mut slots[0], &peers).await;
    node.wait_for_leader(SETTLE).await.unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/reflection_check.py");
    let addr = node.addr().to_string();
    let out =
        tokio::task::spawn_blocking(move || Command::new("python3").arg(script).arg(addr).output())
            .await
            .unwrap()
            .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(stdout.trim(), "ok");
    node.shutdown().await;
}
