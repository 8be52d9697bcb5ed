//! Ownership changes with real `quorumkv node` processes: a node joining a loaded cluster
//! pulls exactly the keys it now replicates while reads keep finding every write, and a node
//! leaving gracefully hands its keys to the nodes that take its place.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{DEADLINE, TestCluster};
use quorumkv::config::{Config, Quorum};
use quorumkv::ops::Consistency;
use quorumkv::ring::{Ring, RingMember};
use quorumkv::storage::{Key, Kind};

const KEYS: usize = 2000;

/// Writes a cluster file holding only the `[[node]]` entries of `ids`, next to the cluster's.
fn file_with(c: &TestCluster, name: &str, ids: &[&str]) -> PathBuf {
    let all = std::fs::read_to_string(&c.config).expect("config");
    let mut parts = all.split("\n[[node]]\n");
    let head = parts.next().expect("cluster table");
    let mut text = head.to_string();
    for part in parts {
        if ids
            .iter()
            .any(|id| part.starts_with(&format!("id = \"{id}\"")))
        {
            text.push_str("\n[[node]]\n");
            text.push_str(part);
        }
    }
    let path = c.dir.join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

/// Writes `k0..KEYS` through n1 to every replica (W = all).
async fn load(c: &TestCluster) {
    let n1 = c.client("n1");
    let all = Consistency {
        w: Some(Quorum::All),
        ..Consistency::default()
    };
    for i in 0..KEYS {
        n1.lww_put(&format!("k{i}"), format!("v{i}"), None, &all)
            .await
            .expect("load");
    }
}

async fn status(c: &TestCluster, id: &str) -> serde_json::Value {
    c.get(id, "/admin/status").await.expect("status").1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_takes_its_keys_while_reads_keep_succeeding() {
    let mut c = TestCluster::new("join4", 4, true);
    let three = file_with(&c, "three.toml", &["n1", "n2", "n3"]);
    let solo = file_with(&c, "solo.toml", &["n4"]);
    for id in ["n1", "n2", "n3"] {
        c.start_with(id, &three, &[]);
    }
    c.until_states(&["n1", "n2", "n3"], &["n1", "n2", "n3"], "alive")
        .await;
    c.until_healthy(&["n1", "n2", "n3"]).await;
    load(&c).await;

    // Readers (R = quorum) through the three old nodes, all through the join.
    let stop = Arc::new(AtomicBool::new(false));
    let (reads, failures) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut readers = Vec::new();
    for id in ["n1", "n2", "n3"] {
        let (client, stop) = (c.client(id), Arc::clone(&stop));
        let (reads, failures) = (Arc::clone(&reads), Arc::clone(&failures));
        readers.push(tokio::spawn(async move {
            let mut i = 0usize;
            let mut wrong = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let key = format!("k{}", (i * 7919) % KEYS);
                i += 1;
                match client.lww_get(&key, &Consistency::default()).await {
                    Ok(Some(v)) if v == format!("v{}", &key[1..]).as_bytes() => {}
                    other => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        wrong.push(format!("{key}: {other:?}"));
                    }
                }
                reads.fetch_add(1, Ordering::Relaxed);
            }
            wrong
        }));
    }

    let seed = c.node("n1").peer.to_string();
    c.start_with("n4", &solo, &["--join", &seed]);
    let start = Instant::now();
    loop {
        if c.get("n4", "/health").await.map(|(code, _)| code) == Some(200) {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "n4 never ready:\n{}",
            c.log("n4")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let joined_after = start.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut wrong = Vec::new();
    for r in readers {
        wrong.extend(r.await.expect("reader"));
    }
    let reads = reads.load(Ordering::Relaxed);
    assert!(reads > 100, "only {reads} reads during the join");
    assert!(
        wrong.is_empty(),
        "{} of {reads} reads failed: {wrong:?}",
        wrong.len()
    );

    // n4 holds exactly the keys it replicates in the four-node ring (N = 3).
    let config = Config::load(&c.config).expect("config");
    let ring = Ring::new(
        config
            .nodes
            .iter()
            .map(|n| RingMember::new(n.id.clone(), n.zone.clone(), config.cluster.vnodes)),
    )
    .expect("ring");
    let expected: BTreeSet<usize> = (0..KEYS)
        .filter(|i| {
            let pos = Key::new(Kind::Typed, format!("k{i}")).position();
            ring.preference_list(pos, 3)
                .replicas
                .iter()
                .any(|m| m.id == "n4")
        })
        .collect();
    let st = status(&c, "n4").await;
    let transfer = &st["transfer"];
    assert_eq!(transfer["phase"], "serving", "{st}");
    assert_eq!(
        st["store"]["keys"].as_u64(),
        Some(expected.len() as u64),
        "{st}"
    );
    // The bootstrap moved them, but for those the others' anti-entropy (which runs right
    // after the ring changed) pushed first.
    let moved = transfer["keys_moved"].as_u64().expect("keys_moved");
    assert!(
        moved <= expected.len() as u64 && moved > expected.len() as u64 / 2,
        "{st}"
    );
    eprintln!(
        "n4 joined in {joined_after:?} and received {} of {KEYS} keys ({:.1}% of the {} replicas); \
         {reads} reads during the join, none failed; transfer: {transfer}",
        expected.len(),
        expected.len() as f64 * 100.0 / (3 * KEYS) as f64,
        3 * KEYS
    );
    // Cut off, n4 serves those keys alone.
    c.partition(&["n4"], &["n1", "n2", "n3"]).await;
    let n4 = c.client("n4");
    let one = Consistency {
        r: Some(Quorum::One),
        ..Consistency::default()
    };
    for i in expected.iter().take(200) {
        let got = n4.lww_get(&format!("k{i}"), &one).await.expect("read");
        assert_eq!(got.as_deref(), Some(format!("v{i}").as_bytes()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaving_node_hands_its_keys_to_the_nodes_that_take_over() {
    // Four nodes, no anti-entropy and no hints: only the hand-off can move keys.
    let mut c = TestCluster::with_settings(
        "leave4",
        4,
        true,
        "anti_entropy_interval_ms = 0\nhinted_handoff = false",
    );
    let ids = ["n1", "n2", "n3", "n4"];
    c.start_all(&ids).await;
    load(&c).await;
    let status_code = c.terminate("n4");
    assert!(status_code.success());
    c.until_states(&["n1", "n2", "n3"], &["n4"], "left").await;
    // With n4 gone, N = 3 of three nodes: every node must hold every key.
    for id in ["n1", "n2", "n3"] {
        let st = status(&c, id).await;
        assert_eq!(
            st["store"]["keys"].as_u64(),
            Some(KEYS as u64),
            "{id} after n4 left: {st}"
        );
    }
    let log = c.log("n4");
    assert!(log.contains("handed off"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_dead_node_re_replicates_its_keys_from_the_survivors() {
    // No hints (they would not help: n4 never comes back); anti-entropy at its default.
    let mut c = TestCluster::with_settings("remove4", 4, true, "hinted_handoff = false");
    let ids = ["n1", "n2", "n3", "n4"];
    c.start_all(&ids).await;
    load(&c).await;
    c.kill9("n4");
    c.until_states(&["n1", "n2", "n3"], &["n4"], "dead").await;
    // Dead but not removed: its keys have two live replicas each.
    let before = status(&c, "n1").await["store"]["keys"].as_u64();
    assert!(before < Some(KEYS as u64), "n1 held {before:?} of {KEYS}");
    let out = std::process::Command::new(common::BIN)
        .args(["admin", "remove", "n4", "--node"])
        .arg(c.base("n2"))
        .output()
        .expect("quorumkv admin remove");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.until_states(&["n1", "n2", "n3"], &["n4"], "left").await;
    // N = 3 of three nodes now: the survivors re-replicate until each holds every key.
    let start = Instant::now();
    for id in ["n1", "n2", "n3"] {
        loop {
            let keys = status(&c, id).await["store"]["keys"].as_u64();
            if keys == Some(KEYS as u64) {
                break;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{id} holds {keys:?} of {KEYS} keys after the removal"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    eprintln!(
        "after removing n4 every survivor held all {KEYS} keys within {:?}",
        start.elapsed()
    );
}
