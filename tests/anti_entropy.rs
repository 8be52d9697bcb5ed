//! Merkle-tree anti-entropy with real `quorumkv node` processes: a replica that missed writes
//! is repaired without any read or hint, and replicas in sync repair nothing.

mod common;

use std::time::{Duration, Instant};

use common::{DEADLINE, TestCluster};
use quorumkv::config::Quorum;
use quorumkv::ops::Consistency;

const KEYS: usize = 300;

async fn total(c: &TestCluster, ids: &[&str], metric: &str) -> f64 {
    let mut sum = 0.0;
    for id in ids {
        sum += c.metric(id, metric).await;
    }
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_replica_is_repaired_by_anti_entropy_alone() {
    let all = ["n1", "n2", "n3"];
    let mut c = TestCluster::with_settings(
        "aae",
        3,
        true,
        "anti_entropy_interval_ms = 500\nanti_entropy_keys_per_sec = 1000\nhinted_handoff = false",
    );
    c.start_all(&all).await;
    let n1 = c.client("n1");
    let everywhere = Consistency {
        w: Some(Quorum::All),
        ..Consistency::default()
    };
    n1.lww_put("before", "the partition", None, &everywhere)
        .await
        .expect("write");
    // Replicas in sync: rounds run and repair nothing.
    let start = Instant::now();
    while total(&c, &all, "quorumkv_anti_entropy_rounds_total").await < 6.0 {
        assert!(start.elapsed() < DEADLINE, "no anti-entropy rounds");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        total(&c, &all, "quorumkv_anti_entropy_repairs_total").await,
        0.0
    );

    // n3 misses every write (no hints: hinted_handoff = false), then comes back; nobody reads.
    c.partition(&["n3"], &["n1", "n2"]).await;
    let two = Consistency {
        w: Some(Quorum::Count(2)),
        ..Consistency::default()
    };
    for i in 0..KEYS {
        n1.lww_put(&format!("k{i}"), format!("v{i}"), None, &two)
            .await
            .expect("write");
        n1.counter_add(&format!("c{}", i % 10), 1, &two)
            .await
            .expect("incr");
    }
    c.heal().await;
    let start = Instant::now();
    while total(&c, &all, "quorumkv_anti_entropy_repairs_total").await < (KEYS + 10) as f64 {
        assert!(
            start.elapsed() < DEADLINE,
            "anti-entropy repaired only {} keys",
            total(&c, &all, "quorumkv_anti_entropy_repairs_total").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(total(&c, &all, "quorumkv_read_repairs_total").await, 0.0);
    assert_eq!(total(&c, &all, "quorumkv_hints_stored_total").await, 0.0);

    // n3 alone now holds every key.
    c.partition(&["n3"], &["n1", "n2"]).await;
    let n3 = c.client("n3");
    let one = Consistency {
        r: Some(Quorum::One),
        ..Consistency::default()
    };
    for i in 0..KEYS {
        let got = n3.lww_get(&format!("k{i}"), &one).await.expect("read");
        assert_eq!(got.as_deref(), Some(format!("v{i}").as_bytes()), "k{i}");
    }
    for i in 0..10 {
        let got = n3.counter_get(&format!("c{i}"), &one).await.expect("read");
        assert_eq!(got, (KEYS / 10) as i128, "c{i}");
    }
}
