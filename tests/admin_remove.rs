//! Operator removal of a dead member (`DELETE /admin/members/{id}`, `quorumkv admin remove`)
//! with real `quorumkv node` processes over QUIC on 127.0.0.1.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{BIN, DEADLINE, TestCluster};
use serde_json::Value;

/// How soon every live member must show a removal.
const QUICK: Duration = Duration::from_secs(5);

async fn delete_member(c: &TestCluster, via: &str, id: &str) -> (u16, Value) {
    let url = format!("{}/admin/members/{id}", c.base(via));
    let resp = c
        .http
        .delete(url)
        .send()
        .await
        .expect("DELETE /admin/members");
    let status = resp.status().as_u16();
    let body = resp.bytes().await.expect("body");
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).expect("a JSON body")
    };
    (status, body)
}

/// `viewer`'s ring shares by member id.
async fn shares(c: &TestCluster, viewer: &str) -> Vec<(String, f64)> {
    let status = c.status(viewer).await.expect("status");
    status["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            (
                m["id"].as_str().expect("id").to_string(),
                m["ring_share"].as_f64().expect("share"),
            )
        })
        .collect()
}

/// On each viewer: `gone` owns nothing, every other member listed owns some, and the shares
/// sum to 1.
async fn assert_ring_without(c: &TestCluster, viewers: &[&str], gone: &[&str]) {
    for v in viewers {
        let shares = shares(c, v).await;
        let total: f64 = shares.iter().map(|(_, s)| s).sum();
        assert!((total - 1.0).abs() < 1e-9, "{v}: shares sum to {total}");
        for (id, share) in &shares {
            if gone.contains(&id.as_str()) {
                assert_eq!(*share, 0.0, "{v}: removed {id} still owns {share}");
            } else {
                assert!(*share > 0.0, "{v}: {id} owns nothing");
            }
        }
    }
}

/// Runs `quorumkv admin remove ID --node NODE`; returns (exit code, stdout, stderr).
fn cli_remove(node: &str, id: &str) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(["admin", "remove", id, "--node", node])
        .env_remove("QUORUMKV_NODE")
        .output()
        .expect("run quorumkv admin remove");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_member_is_removed_everywhere_and_refused_until_its_certificate_is_reissued() {
    // Removal is an operation, not a fault: it works without fault_injection.
    let mut c = TestCluster::new("remove", 4, false);
    let all = ["n1", "n2", "n3", "n4"];
    c.start_all(&all).await;
    assert_ring_without(&c, &all, &[]).await;

    c.kill9("n4");
    c.until_states(&["n1", "n2", "n3"], &["n4"], "dead").await;
    // Dead, n4 keeps its share.
    assert_ring_without(&c, &["n1", "n2", "n3"], &[]).await;

    // What cannot be removed, and why, as API errors.
    let (code, body) = delete_member(&c, "n1", "n9").await;
    assert_eq!(
        (code, body["error"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    let message = body["message"].as_str().expect("message");
    assert!(
        message.contains("n9") && message.contains("n4"),
        "{message}"
    );
    let (code, body) = delete_member(&c, "n1", "n2").await;
    assert_eq!(
        (code, body["error"].as_str()),
        (400, Some("bad_request")),
        "{body}"
    );
    let message = body["message"].as_str().expect("message");
    assert!(
        message.contains("alive")
            && message.contains("only a dead member can be removed; stop it or let it leave first"),
        "{message}"
    );
    let (code, body) = delete_member(&c, "n1", "n1").await;
    assert_eq!(
        (code, body["error"].as_str()),
        (400, Some("bad_request")),
        "{body}"
    );
    // Nothing changed.
    c.until_states(&["n1", "n2", "n3"], &["n4"], "dead").await;

    // n3 is down while n4 is removed through n2.
    c.kill9("n3");
    c.until_states(&["n1", "n2"], &["n3"], "dead").await;
    let (code, body) = delete_member(&c, "n2", "n4").await;
    assert_eq!(code, 204, "{body}");
    assert_eq!(
        c.state("n2", "n4").await.as_deref(),
        Some("left"),
        "at once"
    );
    let took = c.until_states(&["n1", "n2"], &["n4"], "left").await;
    eprintln!("removal of n4 seen by n1 and n2 after {took:?}");
    assert!(took < QUICK, "the removal took {took:?} to spread");
    assert_ring_without(&c, &["n1", "n2"], &["n4"]).await;

    // n3 comes back (a new process that has forgotten everything) and learns of it.
    c.start("n3");
    let took = c.until_states(&["n3"], &["n4"], "left").await;
    eprintln!("restarted n3 sees n4 left after {took:?}");
    c.until_states(&["n1", "n2", "n3"], &["n1", "n2", "n3"], "alive")
        .await;
    assert_ring_without(&c, &["n1", "n2", "n3"], &["n4"]).await;
    // Idempotent, from any node.
    let (code, body) = delete_member(&c, "n3", "n4").await;
    assert_eq!(code, 204, "{body}");
    let (code, body) = delete_member(&c, "n1", "n4").await;
    assert_eq!(code, 204, "{body}");

    // Every member restarts (on its data): the removal, and the revocation of n4's
    // certificate, are remembered.
    for id in ["n1", "n2", "n3"] {
        assert!(c.terminate(id).success(), "{id} exited badly");
    }
    for id in ["n1", "n2", "n3"] {
        c.start(id);
    }
    c.until_states(&["n1", "n2", "n3"], &["n1", "n2", "n3"], "alive")
        .await;

    // n4's process starts again with its old certificate: every member refuses it.
    c.start("n4");
    let until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < until {
        for viewer in ["n1", "n2", "n3"] {
            let state = c.state(viewer, "n4").await;
            assert_eq!(state.as_deref(), Some("left"), "{viewer} let n4 back in");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        c.log("n1").contains("revoked") || c.log("n2").contains("revoked"),
        "no member logged the refused certificate"
    );

    // The documented way back: a new certificate (and an empty data directory), from
    // `quorumkv certs`. Then n4 is a new member, alive with a share everywhere.
    c.kill9("n4");
    let tls = c.dir.join("data/tls");
    std::fs::remove_file(tls.join("node-n4.pem")).expect("rm cert");
    std::fs::remove_file(tls.join("node-n4.key")).expect("rm key");
    std::fs::remove_dir_all(c.dir.join("data/n4")).expect("rm data");
    let config = c.config.clone();
    c.certs(&config);
    c.start("n4");
    let took = c.until_states(&all, &all, "alive").await;
    eprintln!("n4 with a new certificate alive everywhere after {took:?}");
    assert_ring_without(&c, &all, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorumkv_admin_remove_calls_the_endpoint_and_reports() {
    let mut c = TestCluster::new("remove-cli", 3, true);
    let all = ["n1", "n2", "n3"];
    c.start_all(&all).await;

    // An alive member: refused, exit code 2, the API's error on stderr.
    let (code, stdout, stderr) = cli_remove(&c.base("n1"), "n2");
    assert_eq!(code, 2, "stdout: {stdout} stderr: {stderr}");
    assert!(
        stderr.contains("bad_request (400)") && stderr.contains("only a dead member"),
        "{stderr}"
    );
    let (code, _, stderr) = cli_remove(&c.base("n1"), "n7");
    assert_eq!(code, 2);
    assert!(stderr.contains("not_found (404)"), "{stderr}");

    c.kill9("n3");
    c.until_states(&["n1", "n2"], &["n3"], "dead").await;
    // The node given as HOST:PORT, without the scheme.
    let (code, stdout, stderr) = cli_remove(&c.node("n1").http.to_string(), "n3");
    assert_eq!(code, 0, "stdout: {stdout} stderr: {stderr}");
    assert!(stdout.contains("n3 removed"), "{stdout}");
    let start = Instant::now();
    c.until_states(&["n1", "n2"], &["n3"], "left").await;
    assert!(start.elapsed() < QUICK.min(DEADLINE));
    assert_ring_without(&c, &["n1", "n2"], &["n3"]).await;
    // Again: still a success.
    let (code, stdout, stderr) = cli_remove(&c.base("n2"), "n3");
    assert_eq!(code, 0, "stdout: {stdout} stderr: {stderr}");
    // Other methods on the route are JSON errors too.
    let (status, body) = c
        .get("n1", "/admin/members/n3")
        .await
        .expect("GET answered");
    assert_eq!((status, body["error"].as_str()), (405, Some("bad_request")));
}
