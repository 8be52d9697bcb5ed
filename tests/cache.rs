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

async fn resp(c: &TestCluster, id: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://{}/", c.node(id).resp))
        .expect("redis client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect over RESP")
}

async fn run(
    con: &mut redis::aio::MultiplexedConnection,
    args: &[&str],
) -> redis::RedisResult<redis::Value> {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(con).await
}

/// Under `noeviction`, past the limit the writes that would grow the data get Redis's OOM
/// error (HTTP 507) and write nothing, while reads, deletes, removals and expiries work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noeviction_refuses_growing_writes_and_serves_reads_and_deletes() {
    let mut c = TestCluster::with_settings(
        "noevict",
        1,
        false,
        &format!("replicas = 1\nmax_memory_bytes = {LIMIT}\neviction = \"noeviction\""),
    );
    c.start_all(&["n1"]).await;
    let mut con = resp(&c, "n1").await;
    let value = "v".repeat(500);
    let mut stored = 0;
    let refused = loop {
        let key = format!("k{stored}");
        match run(&mut con, &["SET", &key, &value]).await {
            Ok(_) => stored += 1,
            Err(e) => break (key, e.to_string()),
        }
        assert!(stored < 5_000, "never refused past the limit");
    };
    assert!(stored > 100, "refused after only {stored} keys");
    // The redis crate shows the error code and its message apart: `OOM: command ...`.
    assert!(
        refused.1.starts_with("OOM")
            && refused
                .1
                .contains("command not allowed when used memory > 'maxmemory'."),
        "{}",
        refused.1
    );
    // Nothing of the refused write is there; what was written reads back.
    assert_eq!(
        run(&mut con, &["GET", &refused.0]).await.expect("GET"),
        redis::Value::Nil
    );
    assert!(matches!(
        run(&mut con, &["GET", "k0"]).await.expect("GET"),
        redis::Value::BulkString(_)
    ));
    let err = run(&mut con, &["SADD", "s", "m"])
        .await
        .expect_err("SADD refused");
    assert!(err.to_string().contains("OOM"), "{err}");
    // HTTP: 507 out_of_memory.
    let r = c
        .http
        .put(format!("{}/lww/over", c.base("n1")))
        .body(value.clone())
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status().as_u16(), 507);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["error"], "out_of_memory", "{body}");
    // Shrinking and neutral writes still work (and a delete makes room again).
    run(&mut con, &["EXPIRE", "k1", "100"])
        .await
        .expect("EXPIRE");
    run(&mut con, &["SREM", "s", "m"]).await.expect("SREM");
    run(&mut con, &["DEL", "k0"]).await.expect("DEL");
    assert_eq!(
        run(&mut con, &["GET", "k0"]).await.expect("GET"),
        redis::Value::Nil
    );
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut con)
        .await
        .expect("INFO");
    assert!(info.contains("maxmemory_policy:noeviction"), "{info}");
}

/// Under `volatile-lru` only keys with a time to live are evicted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volatile_lru_evicts_only_keys_with_a_ttl() {
    let mut c = TestCluster::with_settings(
        "volatile",
        1,
        false,
        &format!("replicas = 1\nmax_memory_bytes = {LIMIT}\neviction = \"volatile-lru\""),
    );
    c.start_all(&["n1"]).await;
    let mut con = resp(&c, "n1").await;
    let value = "v".repeat(500);
    for i in 0..100 {
        run(&mut con, &["SET", &format!("keep{i}"), &value])
            .await
            .expect("SET");
    }
    for i in 0..2000 {
        run(&mut con, &["SET", &format!("tmp{i}"), &value, "EX", "3600"])
            .await
            .expect("SET EX");
    }
    let start = std::time::Instant::now();
    while c.metric("n1", "quorumkv_evictions_total").await < 1000.0 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "too few evictions"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for i in 0..100 {
        let got = run(&mut con, &["GET", &format!("keep{i}")])
            .await
            .expect("GET");
        assert!(
            matches!(got, redis::Value::BulkString(_)),
            "keep{i} was evicted"
        );
    }
}

/// The resident memory of process `pid`, from `/proc/<pid>/status`.
fn resident_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// With a 128 MiB limit, writing 1 GiB of distinct keys keeps the process's resident memory
/// within 1.1 times the limit plus 64 MiB the whole time, the keys read all along stay, and
/// at least a quarter of the limit is still filled with values (in a debug build the process's
/// own 40 MiB leave less room under the resident ceiling than a release build does).
/// 16 KiB values, so that a debug build writes the gibibyte in about a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gibibyte_of_writes_stays_within_the_memory_bound() {
    const LIMIT: u64 = 128 * 1024 * 1024;
    const BOUND: u64 = LIMIT + LIMIT / 10 + 64 * 1024 * 1024;
    let mut c = TestCluster::with_settings(
        "bound",
        1,
        false,
        &format!("replicas = 1\nmax_memory_bytes = {LIMIT}"),
    );
    c.start_all(&["n1"]).await;
    let pid = c.procs["n1"].id();
    let mut con = resp(&c, "n1").await;
    let value = "v".repeat(16 * 1024);
    for h in 0..20 {
        run(&mut con, &["SET", &format!("hot{h}"), &value])
            .await
            .expect("SET");
    }
    let mut most = 0;
    let per_batch = 50;
    let batches = (1u64 << 30) / (value.len() as u64 * per_batch);
    for b in 0..batches {
        let mut pipe = redis::pipe();
        for i in 0..per_batch {
            pipe.cmd("SET")
                .arg(format!("cold:{b}:{i}"))
                .arg(&value)
                .ignore();
        }
        pipe.query_async::<()>(&mut con)
            .await
            .expect("pipeline of SETs");
        if b % 10 == 0 {
            for h in 0..20 {
                run(&mut con, &["GET", &format!("hot{h}")])
                    .await
                    .expect("GET");
            }
            let rss = resident_of(pid);
            most = most.max(rss);
            if rss > BOUND {
                let counted = c.metric("n1", "quorumkv_memory_bytes").await as u64;
                let evicted = c.metric("n1", "quorumkv_evictions_total").await;
                panic!(
                    "after {} MiB written the node holds {} MiB, over the bound of {} MiB \
                     (it counts {} MiB, {evicted} keys evicted)",
                    (b * per_batch * value.len() as u64) >> 20,
                    rss >> 20,
                    BOUND >> 20,
                    counted >> 20
                );
            }
        }
    }
    // The limit is used, not just respected: counting what the process holds instead of what
    // the data holds once evicted until about 3% of the limit was left in values.
    let kept: u64 = redis::cmd("DBSIZE")
        .query_async(&mut con)
        .await
        .expect("DBSIZE");
    eprintln!(
        "1 GiB written; the most resident memory seen: {} MiB; {kept} keys kept",
        most >> 20
    );
    assert!(
        kept * value.len() as u64 >= LIMIT / 4,
        "only {kept} values of {} bytes kept under a limit of {} MiB",
        value.len(),
        LIMIT >> 20
    );
    for h in 0..20 {
        let got = run(&mut con, &["GET", &format!("hot{h}")])
            .await
            .expect("GET");
        assert!(
            matches!(got, redis::Value::BulkString(_)),
            "hot{h} was evicted"
        );
    }
}
