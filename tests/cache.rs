//! The cache behaviour with a real `quorumkv node`: past `max_memory_bytes` the least
//! recently used `/lww` keys are evicted (deleted), recently used ones stay, and the figures
//! show in `/metrics`.

mod common;

use common::TestCluster;
use quorumkv::ops::Consistency;

const LIMIT: u64 = 300_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_memory_limit_the_least_recently_used_keys_go() {
    let mut c = TestCluster::with_settings(
        "cache",
        1,
        false,
        &format!("replicas = 1\nmax_memory_bytes = {LIMIT}"),
    );
    c.start_all(&["n1"]).await;
    let n1 = c.client("n1");
    let q = Consistency::default();
    let value = "v".repeat(500);
    for i in 0..10 {
        n1.lww_put(&format!("hot{i}"), value.clone(), None, &q)
            .await
            .expect("write");
    }
    // 3,000 keys of ~700 bytes each (key, value, overhead): seven times the limit.
    for i in 0..3000 {
        n1.lww_put(&format!("cold{i}"), value.clone(), None, &q)
            .await
            .expect("write");
        if i % 50 == 0 {
            for h in 0..10 {
                n1.lww_get(&format!("hot{h}"), &q).await.expect("read");
            }
        }
    }
    // Eviction runs in the background: let it catch up.
    let mut used = 0.0;
    for _ in 0..50 {
        used = c.metric("n1", "quorumkv_memory_bytes").await;
        if used <= LIMIT as f64 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(used <= LIMIT as f64, "{used} bytes used, limit {LIMIT}");
    let evicted = c.metric("n1", "quorumkv_evictions_total").await;
    assert!(evicted > 2000.0, "only {evicted} evictions");
    let mut hot_missing = Vec::new();
    for h in 0..10 {
        if n1
            .lww_get(&format!("hot{h}"), &q)
            .await
            .expect("read")
            .is_none()
        {
            hot_missing.push(h);
        }
    }
    assert!(
        hot_missing.is_empty(),
        "hot keys evicted though read often: {hot_missing:?} ({evicted} evictions)"
    );
    let mut cold_left = 0;
    for i in 0..100 {
        cold_left += usize::from(
            n1.lww_get(&format!("cold{i}"), &q)
                .await
                .expect("read")
                .is_some(),
        );
    }
    assert!(
        cold_left < 10,
        "{cold_left} of the 100 oldest keys survived"
    );
    // Writing after an eviction works: the new value is newer than the eviction.
    n1.lww_put("cold0", "back", None, &q).await.expect("write");
    let got = n1.lww_get("cold0", &q).await.expect("read");
    assert_eq!(got.as_deref(), Some(&b"back"[..]));
}
