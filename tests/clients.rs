//! Real Redis client libraries, at their pinned current versions and with their default
//! settings, against a three-node cluster: redis-py (`tests/clients/check_redis_py.py`),
//! node-redis and ioredis (`tests/clients/check_*.mjs`). Each script checks strings, counters
//! read with `GET`, hashes, sets, expiry, a plain pipeline, a `MULTI` transaction,
//! `scan_iter` over a few thousand keys written through every node, and `FLUSHALL`.
//!
//! `.ci/run` installs the libraries into `tests/clients/.venv` and `tests/clients/node_modules`
//! (from `requirements.txt` and `package-lock.json`) and sets `QKV_REQUIRE_CLIENTS`, which turns
//! a missing library into a failure rather than a skip.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::TestCluster;

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// Whether `program` can run here; if not, the test is skipped unless CI requires it.
fn available(program: &Path, what: &str) -> bool {
    if program.exists() {
        return true;
    }
    assert!(
        std::env::var_os("QKV_REQUIRE_CLIENTS").is_none(),
        "{what} is required here but {} is missing (run .ci/run, or see docs/testing.md)",
        program.display()
    );
    eprintln!("{what}: {} is missing; skipped", program.display());
    false
}

/// Runs one check script against the cluster's RESP ports.
fn run(program: &Path, script: &str, c: &TestCluster) {
    let ports: Vec<String> = c.nodes.iter().map(|n| n.resp.port().to_string()).collect();
    let out = Command::new(program)
        .arg(clients_dir().join(script))
        .args(&ports)
        .current_dir(clients_dir())
        .output()
        .expect("run the client check");
    assert!(
        out.status.success(),
        "{script} failed:\n{}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        c.all_logs()
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stdout).trim());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_client_libraries_with_default_settings() {
    let python = clients_dir().join(".venv/bin/python");
    let node_modules = clients_dir().join("node_modules");
    let have_python = available(&python, "redis-py");
    let have_node = available(&node_modules.join("redis"), "node-redis")
        && available(&node_modules.join("ioredis"), "ioredis");
    if !have_python && !have_node {
        return;
    }
    let mut c = TestCluster::new("clients", 3, false);
    c.start_all(&["n1", "n2", "n3"]).await;
    let node = PathBuf::from("node");
    // Each script blocks; they run one after the other off the runtime's threads.
    let c = std::sync::Arc::new(c);
    let checks: Vec<(PathBuf, &str)> = [
        (have_python, python, "check_redis_py.py"),
        (have_node, node.clone(), "check_node_redis.mjs"),
        (have_node, node, "check_ioredis.mjs"),
    ]
    .into_iter()
    .filter(|(have, _, _)| *have)
    .map(|(_, program, script)| (program, script))
    .collect();
    for (program, script) in checks {
        let c = std::sync::Arc::clone(&c);
        tokio::task::spawn_blocking(move || run(&program, script, &c))
            .await
            .expect("client check");
    }
}
