//! Hinted handoff with real `quorumkv node` processes over QUIC on 127.0.0.1: writes keep
//! succeeding while a replica is down, through hints, and the replica gets them back when it
//! returns; `sloppy=false` counts only the preference list.

mod common;

use std::time::{Duration, Instant};

use common::{DEADLINE, TestCluster};
use quorumkv::config::{Config, Quorum};
use quorumkv::ops::Consistency;
use quorumkv::storage::{Key, Kind};

fn q(n: Option<u32>, w: &str, sloppy: Option<bool>) -> Consistency {
    Consistency {
        n,
        w: Some(Quorum::parse(w).expect("w")),
        timeout_ms: Some(1500),
        sloppy,
        ..Consistency::default()
    }
}

/// Polls until `metric` on `id` reaches `at_least`.
async fn until_metric(c: &TestCluster, id: &str, metric: &str, at_least: f64) {
    let start = Instant::now();
    loop {
        let v = c.metric(id, metric).await;
        if v >= at_least {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{metric} on {id} stayed at {v}, wanted {at_least}\n{}",
            c.all_logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_replica_receives_the_writes_it_missed_as_hints() {
    let all = ["n1", "n2", "n3"];
    let mut c = TestCluster::new("hints3", 3, true);
    c.start_all(&all).await;
    c.kill9("n3");
    let n1 = c.client("n1");
    // Before and after n3 is declared dead: both ways the write is kept for it.
    for i in 0..40 {
        if i == 20 {
            c.until_states(&["n1", "n2"], &["n3"], "dead").await;
        }
        n1.lww_put(&format!("k{i}"), format!("v{i}"), None, &q(None, "2", None))
            .await
            .expect("w=2 with one of three down");
    }
    assert!(c.metric("n1", "quorumkv_hints_pending").await >= 40.0);
    assert!(c.metric("n1", "quorumkv_hints_stored_total").await >= 40.0);

    c.start("n3");
    c.until_states(&all, &all, "alive").await;
    c.until_healthy(&all).await;
    until_metric(&c, "n1", "quorumkv_hints_delivered_total", 40.0).await;
    assert_eq!(c.metric("n1", "quorumkv_hints_pending").await, 0.0);
    // n3, cut off from the others, holds every write on its own.
    c.partition(&["n3"], &["n1", "n2"]).await;
    let n3 = c.client("n3");
    let one = Consistency {
        r: Some(Quorum::One),
        ..Consistency::default()
    };
    for i in 0..40 {
        let got = n3.lww_get(&format!("k{i}"), &one).await.expect("read");
        assert_eq!(got.as_deref(), Some(format!("v{i}").as_bytes()), "k{i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sloppy_writes_count_a_fallback_and_strict_ones_do_not() {
    let ids = ["n1", "n2", "n3", "n4", "n5"];
    let mut c = TestCluster::new("sloppy", 5, true);
    c.start_all(&ids).await;
    // A key whose three replicas include n5 but not n1 (the coordinator asked).
    let ring = Config::load(&c.config)
        .expect("config")
        .ring()
        .expect("ring");
    let key = (0..)
        .map(|i| format!("key{i}"))
        .find(|k| {
            let list = ring.preference_list(Key::new(Kind::Typed, k.clone()).position(), 3);
            let ids: Vec<&str> = list.replicas.iter().map(|m| m.id.as_str()).collect();
            ids.contains(&"n5") && !ids.contains(&"n1")
        })
        .expect("some key");
    c.kill9("n5");
    c.until_states(&["n1", "n2", "n3", "n4"], &["n5"], "dead")
        .await;
    let n1 = c.client("n1");

    // Only two replicas are up: w=all needs a hint on a fallback.
    n1.lww_put(&key, "sloppy", None, &q(Some(3), "all", None))
        .await
        .expect("sloppy=true (the default) counts the fallback's hint");
    let e = n1
        .lww_put(&key, "strict", None, &q(Some(3), "all", Some(false)))
        .await
        .expect_err("sloppy=false counts only the preference list");
    let e_text = e.to_string();
    assert_eq!(e.status(), Some(503), "{e_text}");
    let held: f64 = {
        let mut sum = 0.0;
        for id in ["n1", "n2", "n3", "n4"] {
            sum += c.metric(id, "quorumkv_hints_pending").await;
        }
        sum
    };
    assert!(held >= 1.0, "some node holds the hint for n5");

    c.start("n5");
    c.until_states(&ids, &ids, "alive").await;
    c.until_healthy(&ids).await;
    let start = Instant::now();
    loop {
        let mut pending = 0.0;
        for id in ["n1", "n2", "n3", "n4"] {
            pending += c.metric(id, "quorumkv_hints_pending").await;
        }
        if pending == 0.0 {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "hints for n5 never delivered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // n5 alone has the newest value: "strict" failed at w=all but reached the live replicas
    // and was kept as a hint for n5 too, and it is newer than "sloppy".
    c.partition(&["n5"], &["n1", "n2", "n3", "n4"]).await;
    let got = c
        .client("n5")
        .lww_get(
            &key,
            &Consistency {
                n: Some(3),
                r: Some(Quorum::One),
                ..Consistency::default()
            },
        )
        .await
        .expect("n5 alone");
    assert_eq!(got.as_deref(), Some(&b"strict"[..]));
}
