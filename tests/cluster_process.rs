//! End-to-end tests with real `quorumkv node` processes over QUIC on 127.0.0.1.
//!
//! Every test writes its own cluster file with free ports into a temporary directory, runs
//! `quorumkv certs`, starts nodes, and kills whatever it started when it ends (even when it
//! fails). Conditions that depend on timing are polled with generous deadlines.

mod common;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{BIN, DEADLINE, NodeAddrs, TestCluster, config_text, free_tcp, free_udp};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_detect_a_killed_node_and_its_restart() {
    let mut c = TestCluster::new("kill", 3, true);
    for id in ["n1", "n2", "n3"] {
        c.start(id);
    }
    let took = c
        .until_states(&["n1", "n2", "n3"], &["n1", "n2", "n3"], "alive")
        .await;
    eprintln!("3 nodes all alive everywhere after {took:?}");

    // The status document has exactly the documented fields, and the shares sum to 1.
    let status = c.status("n1").await.expect("status");
    assert_eq!(status["node"], "n1");
    let members = status["members"].as_array().expect("members");
    assert_eq!(members.len(), 3);
    let mut total = 0.0;
    for m in members {
        let keys: Vec<&str> = m
            .as_object()
            .expect("object")
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(
            keys,
            ["http", "id", "peer", "resp", "ring_share", "state", "zone"],
            "member fields"
        );
        total += m["ring_share"].as_f64().expect("share");
    }
    assert!((total - 1.0).abs() < 1e-9, "shares sum to {total}");
    assert_eq!(members[1]["peer"], c.node("n2").peer.to_string());

    c.kill9("n2");
    let took = c.until_states(&["n1", "n3"], &["n2"], "dead").await;
    eprintln!("kill -9 of n2 seen as dead by n1 and n3 after {took:?}");
    // A dead member keeps its share until an operator removes it.
    let status = c.status("n1").await.expect("status");
    let share = status["members"][1]["ring_share"].as_f64().expect("share");
    assert!(share > 0.1, "dead n2 keeps its share, got {share}");

    c.start("n2");
    let took = c
        .until_states(&["n1", "n2", "n3"], &["n1", "n2", "n3"], "alive")
        .await;
    eprintln!("restarted n2 alive everywhere after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_leaves_gracefully_and_removes_the_pid_file() {
    let mut c = TestCluster::new("leave", 3, false);
    for id in ["n1", "n2", "n3"] {
        c.start(id);
    }
    c.until_states(&["n1", "n2", "n3"], &["n1", "n2", "n3"], "alive")
        .await;
    let pid_file = c.dir.join("data").join("n3").join("node.pid");
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .expect("pid file while running")
        .trim()
        .parse()
        .expect("pid in decimal");
    assert_eq!(Some(pid), c.procs.get("n3").map(Child::id));

    let status = c.terminate("n3");
    assert!(status.success(), "clean exit after SIGTERM, got {status}");
    assert!(!pid_file.exists(), "pid file removed on clean exit");
    c.until_states(&["n1", "n2"], &["n3"], "left").await;
    // A member that left owns nothing; the others own everything.
    let status = c.status("n1").await.expect("status");
    let shares: Vec<f64> = status["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["ring_share"].as_f64().expect("share"))
        .collect();
    assert_eq!(shares[2], 0.0);
    assert!((shares[0] + shares[1] - 1.0).abs() < 1e-9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_certificate_from_another_ca_is_never_admitted() {
    let mut c = TestCluster::new("foreign", 3, false);
    // The same cluster file with another data_dir, hence another CA.
    let foreign = c.dir.join("foreign.toml");
    let text = std::fs::read_to_string(&c.config)
        .expect("config")
        .replace("data_dir = \"data\"", "data_dir = \"foreign\"");
    std::fs::write(&foreign, text).expect("write foreign config");
    c.certs(&foreign);

    c.start("n1");
    c.start("n2");
    c.start_with("n3", &foreign, &[]);
    c.until_states(&["n1", "n2"], &["n1", "n2"], "alive").await;
    // Give n3 ample time to try, and check it is never seen alive.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(8) {
        for viewer in ["n1", "n2"] {
            let s = c.state(viewer, "n3").await;
            assert_ne!(s.as_deref(), Some("alive"), "{viewer} admitted n3");
            assert_ne!(s.as_deref(), Some("suspect"), "{viewer} heard from n3");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // And the logs say why, on both sides (BadSignature here: both CAs have the same name;
    // UnknownIssuer when the cluster names differ).
    let deadline = Instant::now() + DEADLINE;
    loop {
        let members_log = c.log("n1") + &c.log("n2");
        let foreign_log = c.log("n3");
        let why = "invalid peer certificate";
        if members_log.contains(why) && foreign_log.contains(why) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no certificate error in the logs:\n{}",
            c.all_logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_faults_partition_and_heal() {
    let mut c = TestCluster::new("faults", 3, true);
    for id in ["n1", "n2", "n3"] {
        c.start(id);
    }
    c.until_states(&["n1", "n2", "n3"], &["n1", "n2", "n3"], "alive")
        .await;

    // Bad input is refused and changes nothing.
    let (code, body) = c.post_faults("n1", r#"{"drop": ["n9"]}"#).await;
    assert_eq!(code, 400);
    assert_eq!(body["error"], "bad_request");
    assert!(body["message"].as_str().expect("message").contains("n9"));
    let (code, body) = c.post_faults("n1", r#"{"drop": ["n1"]}"#).await;
    assert_eq!(code, 400, "{body}");
    let (code, body) = c.post_faults("n1", r#"{"delay_ms": {"n2": "slow"}}"#).await;
    assert_eq!(code, 400, "{body}");
    let (code, body) = c.post_faults("n1", "not json").await;
    assert_eq!((code, &body["error"]), (400, &Value::from("bad_request")));

    // {n1, n2} | {n3}
    for (id, body) in [
        ("n1", r#"{"drop": ["n3"]}"#),
        ("n2", r#"{"drop": ["n3"]}"#),
        ("n3", r#"{"drop": ["n1", "n2"]}"#),
    ] {
        let (code, resp) = c.post_faults(id, body).await;
        assert_eq!(code, 204, "{resp}");
    }
    c.until_states(&["n1", "n2"], &["n3"], "dead").await;
    c.until_states(&["n3"], &["n1", "n2"], "dead").await;
    c.until_states(&["n1", "n2"], &["n1", "n2"], "alive").await;

    for id in ["n1", "n2", "n3"] {
        assert_eq!(c.delete_faults(id).await, 204);
    }
    let took = c
        .until_states(&["n1", "n2", "n3"], &["n1", "n2", "n3"], "alive")
        .await;
    eprintln!("partition healed to one view after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_injection_is_forbidden_unless_enabled() {
    let mut c = TestCluster::new("nofaults", 2, false);
    c.start("n1");
    let start = Instant::now();
    while c.get("n1", "/health").await.is_none() {
        assert!(
            start.elapsed() < DEADLINE,
            "n1 never healthy:\n{}",
            c.log("n1")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, body) = c.post_faults("n1", r#"{"drop": ["n2"]}"#).await;
    assert_eq!(code, 403);
    assert_eq!(body["error"], "forbidden");
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("fault_injection")
    );
    assert_eq!(c.delete_faults("n1").await, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_through_a_member_it_finds_by_address() {
    let mut c = TestCluster::new("join", 3, false);
    // n3's own file lists only itself: it learns n1 and n2 from gossip.
    let all = std::fs::read_to_string(&c.config).expect("config");
    let n3_entry = all
        .split("\n[[node]]\n")
        .find(|part| part.starts_with("id = \"n3\""))
        .expect("n3 entry");
    let solo = c.dir.join("solo.toml");
    std::fs::write(
        &solo,
        format!("[cluster]\nname = \"join\"\ndata_dir = \"data\"\n\n[[node]]\n{n3_entry}"),
    )
    .expect("write solo config");

    c.start("n1");
    c.start("n2");
    c.until_states(&["n1", "n2"], &["n1", "n2"], "alive").await;
    let seed = c.node("n1").peer.to_string();
    c.start_with("n3", &solo, &["--join", &seed]);
    c.until_states(&["n1", "n2", "n3"], &["n1", "n2", "n3"], "alive")
        .await;
    // What n3 knows of n2 came by gossip: the addresses of its config entry.
    let status = c.status("n3").await.expect("status");
    let n2 = status["members"]
        .as_array()
        .expect("members")
        .iter()
        .find(|m| m["id"] == "n2")
        .cloned()
        .expect("n2 known to n3");
    assert_eq!(n2["http"], c.node("n2").http.to_string());
    assert_eq!(n2["zone"], "zone-b");
}

#[test]
fn a_node_without_a_certificate_refuses_to_start_and_names_the_fix() {
    let dir = std::env::temp_dir().join(format!("quorumkv-nocert-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let nodes = vec![NodeAddrs {
        id: "n1".into(),
        peer: free_udp(),
        http: free_tcp(),
        resp: free_tcp(),
    }];
    let config = dir.join("cluster.toml");
    std::fs::write(&config, config_text("nocert", &nodes, false, "data")).expect("config");
    let out = Command::new(BIN)
        .args(["node", "--config"])
        .arg(&config)
        .args(["--id", "n1"])
        .output()
        .expect("run node");
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("quorumkv certs --config"),
        "message names the command: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_waits_until_the_node_knows_its_cluster() {
    let mut c = TestCluster::new("ready", 3, false);
    c.start("n1");
    // n1 answers, but is not ready: it has not heard of n2 and n3.
    let start = Instant::now();
    let (code, body) = loop {
        if let Some(answer) = c.get("n1", "/health").await {
            break answer;
        }
        assert!(start.elapsed() < DEADLINE, "n1 never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["error"], "unavailable");
    let message = body["message"].as_str().expect("message");
    assert!(
        message.contains("n2") && message.contains("n3"),
        "{message}"
    );

    c.start("n2");
    c.start("n3");
    for id in ["n1", "n2", "n3"] {
        let start = Instant::now();
        while c.get(id, "/health").await.map(|(code, _)| code) != Some(200) {
            assert!(start.elapsed() < DEADLINE, "{id} never ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Ready everywhere means a request over the whole cluster works at once, from any node.
    for id in ["n1", "n2", "n3"] {
        let client = c.client(id);
        let all = quorumkv::ops::Consistency {
            n: Some(3),
            w: Some(quorumkv::config::Quorum::All),
            ..Default::default()
        };
        client
            .lww_put("ready", id.to_string(), None, &all)
            .await
            .unwrap_or_else(|e| panic!("n=3 w=all right after {id} was ready: {e}"));
    }
}

/// Runs `quorumkv cluster ACTION... --config FILE`; returns (success, stdout + stderr).
fn cluster_cmd(c: &TestCluster, args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN)
        .arg("cluster")
        .args(args)
        .arg("--config")
        .arg(&c.config)
        .output()
        .expect("run quorumkv cluster");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_commands_partition_heal_kill_and_restart() {
    let mut c = TestCluster::new("cmds", 3, true);
    c.start_all(&["n1", "n2", "n3"]).await;

    for bad in ["n1,n2", "n1|n9", "n1|n1", "n1||n2"] {
        let (ok, text) = cluster_cmd(&c, &["partition", bad]);
        assert!(!ok, "{bad}: {text}");
    }
    let (ok, text) = cluster_cmd(&c, &["partition", "n1,n2|n3"]);
    assert!(ok, "{text}");
    c.until_states(&["n1", "n2"], &["n3"], "dead").await;
    c.until_states(&["n3"], &["n1", "n2"], "dead").await;
    let (ok, text) = cluster_cmd(&c, &["heal"]);
    assert!(ok, "{text}");
    c.until_states(&["n1", "n2", "n3"], &["n1", "n2", "n3"], "alive")
        .await;

    // `cluster kill` finds the node by its pid file (which the node writes itself).
    let (ok, text) = cluster_cmd(&c, &["kill", "--id", "n2"]);
    assert!(ok, "{text}");
    if let Some(mut child) = c.procs.remove("n2") {
        let _ = child.wait();
    }
    c.until_states(&["n1", "n3"], &["n2"], "dead").await;
    let (ok, text) = cluster_cmd(&c, &["kill", "--id", "n2"]);
    assert!(!ok && text.contains("not running"), "{text}");
    // `cluster start --id` brings back just that one (in the background, logging to its
    // node.log) and waits for its /health.
    let (ok, text) = cluster_cmd(&c, &["start", "--id", "n2"]);
    assert!(ok, "{text}");
    c.until_states(&["n1", "n2", "n3"], &["n1", "n2", "n3"], "alive")
        .await;
    let (ok, text) = cluster_cmd(&c, &["stop"]);
    assert!(ok && text.contains("n2 stopped"), "{text}");
}
