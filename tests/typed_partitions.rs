//! The typed namespace across real partitions (real processes, QUIC, `/admin/faults`):
//! increments made on both sides of a split all count after the heal, `HINCRBY` too; an `HSET`
//! concurrent with an `HDEL` of its field survives; a name given two types settles on the later
//! one everywhere; a `FLUSHALL` made while a node is cut off is final there too (reads and
//! scans through a flushed node never show a flushed key), and writes
//! after it are kept; a `SCAN` on five nodes returns every key although a node dies half way.

mod common;

use std::time::{Duration, Instant};

use common::{DEADLINE, TestCluster};
use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, RedisResult};

async fn connect(c: &TestCluster, id: &str) -> MultiplexedConnection {
    let url = format!("redis://{}/", c.node(id).resp);
    redis::Client::open(url)
        .expect("redis client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect over RESP")
}

/// A connection whose commands ask `w` acknowledgements and `r` answers of three replicas.
async fn connect_with(c: &TestCluster, id: &str, w: &str, r: &str) -> MultiplexedConnection {
    let mut con = connect(c, id).await;
    let _: () = redis::cmd("QUORUM")
        .arg("3")
        .arg(w)
        .arg(r)
        .query_async(&mut con)
        .await
        .expect("QUORUM");
    con
}

async fn cmd<T: redis::FromRedisValue>(
    con: &mut MultiplexedConnection,
    args: &[&str],
) -> RedisResult<T> {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query_async(con).await
}

/// Polls `check` on every node until it holds on all of them.
async fn until_everywhere<F, Fut>(c: &TestCluster, ids: &[&str], what: &str, check: F)
where
    F: Fn(MultiplexedConnection) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < DEADLINE {
        let mut all = true;
        for id in ids {
            // Each node's own replica, read alone: what that node would answer.
            let con = connect_with(c, id, "1", "1").await;
            if let Err(e) = check(con).await {
                last = format!("{id}: {e}");
                all = false;
                break;
            }
        }
        if all {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{what}: not on every node within {DEADLINE:?}; last: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn increments_updates_and_types_converge_after_a_partition() {
    let mut c = TestCluster::new("typedsplit", 3, true);
    let all = ["n1", "n2", "n3"];
    c.start_all(&all).await;
    let mut setup = connect_with(&c, "n1", "all", "all").await;
    let _: () = setup.set("k", "10").await.unwrap();
    let _: i64 = setup.hset("h", "g", "v0").await.unwrap();
    let _: i64 = setup.hincr("h", "cnt", 1).await.unwrap();

    c.partition(&["n1"], &["n2", "n3"]).await;
    let mut left = connect_with(&c, "n1", "1", "1").await;
    let mut right = connect_with(&c, "n2", "1", "1").await;
    // Increments on both sides.
    assert_eq!(cmd::<i64>(&mut left, &["INCR", "k"]).await.unwrap(), 11);
    assert_eq!(
        cmd::<i64>(&mut right, &["INCRBY", "k", "5"]).await.unwrap(),
        15
    );
    assert_eq!(
        cmd::<i64>(&mut left, &["HINCRBY", "h", "cnt", "10"])
            .await
            .unwrap(),
        11
    );
    assert_eq!(
        cmd::<i64>(&mut right, &["HINCRBY", "h", "cnt", "100"])
            .await
            .unwrap(),
        101
    );
    // A field removed on one side while updated on the other.
    assert_eq!(cmd::<i64>(&mut left, &["HDEL", "h", "g"]).await.unwrap(), 1);
    let _: i64 = cmd(&mut right, &["HSET", "h", "g", "v1"]).await.unwrap();
    // A name given two types: the later write decides.
    let _: () = cmd(&mut left, &["SET", "t", "a string"]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        cmd::<i64>(&mut right, &["SADD", "t", "m"]).await.unwrap(),
        1
    );
    c.heal().await;

    until_everywhere(&c, &all, "the sums and types", |mut con| async move {
        let k: Option<String> = cmd(&mut con, &["GET", "k"])
            .await
            .map_err(|e| e.to_string())?;
        if k.as_deref() != Some("16") {
            return Err(format!("k = {k:?}"));
        }
        let cnt: Option<String> = cmd(&mut con, &["HGET", "h", "cnt"])
            .await
            .map_err(|e| e.to_string())?;
        if cnt.as_deref() != Some("111") {
            return Err(format!("h.cnt = {cnt:?}"));
        }
        let g: Option<String> = cmd(&mut con, &["HGET", "h", "g"])
            .await
            .map_err(|e| e.to_string())?;
        if g.as_deref() != Some("v1") {
            return Err(format!("h.g = {g:?}"));
        }
        let t: String = cmd(&mut con, &["TYPE", "t"])
            .await
            .map_err(|e| e.to_string())?;
        if t != "set" {
            return Err(format!("TYPE t = {t}"));
        }
        Ok(())
    })
    .await;
    // The type that lost is gone for good: writing the winner's type keeps it.
    let mut any = connect(&c, "n3").await;
    assert_eq!(cmd::<i64>(&mut any, &["SREM", "t", "m"]).await.unwrap(), 1);
    assert_eq!(
        cmd::<String>(&mut any, &["TYPE", "t"]).await.unwrap(),
        "none"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushall_made_while_a_node_is_cut_off_is_final_there_too() {
    let mut c = TestCluster::new("typedflush", 3, true);
    let all = ["n1", "n2", "n3"];
    c.start_all(&all).await;
    let mut setup = connect_with(&c, "n1", "all", "all").await;
    for k in ["a", "b", "c"] {
        let _: () = setup.set(k, "old").await.unwrap();
    }
    let _: i64 = setup.sadd("s", "old").await.unwrap();

    c.partition(&["n3"], &["n1", "n2"]).await;
    // At once, before anyone has noticed n3 is gone: the flush is applied where it can be
    // and n3 gets it when it is back.
    let mut majority = connect(&c, "n1").await;
    assert_eq!(
        cmd::<String>(&mut majority, &["FLUSHALL"]).await.unwrap(),
        "OK"
    );
    let _: () = majority.set("after", "1").await.unwrap();
    // n3, cut off, still serves its old data, and takes a write of its own.
    let mut cut = connect_with(&c, "n3", "1", "1").await;
    let old: Option<String> = cut.get("a").await.unwrap();
    assert_eq!(old.as_deref(), Some("old"));
    let _: () = cut.set("n3-after", "1").await.unwrap();

    c.heal().await;
    // Reads that reach n3 again before it has heard of the flush still show it: every
    // answer at r=all is empty.
    let mut strict = connect_with(&c, "n2", "all", "all").await;
    let start = Instant::now();
    loop {
        match strict.get::<_, Option<String>>("a").await {
            Ok(v) => {
                assert_eq!(
                    v, None,
                    "a read through a flushed node brought back a flushed key"
                );
                break;
            }
            Err(_) if start.elapsed() < DEADLINE => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("n3 never answered again: {e}"),
        }
    }
    // So do scans: a replica that has not applied the flush yet applies the cutoff the scan
    // brings before it looks.
    let keys: Vec<String> = cmd(&mut strict, &["KEYS", "*"]).await.unwrap();
    for k in ["a", "b", "c", "s"] {
        assert!(
            !keys.iter().any(|have| have == k),
            "KEYS through a flushed node found the flushed key {k}: {keys:?}"
        );
    }
    until_everywhere(&c, &all, "the flush", |mut con| async move {
        for k in ["a", "b", "c"] {
            let v: Option<String> = con.get(k).await.map_err(|e| e.to_string())?;
            if v.is_some() {
                return Err(format!("{k} = {v:?} after FLUSHALL"));
            }
        }
        let members: Vec<String> = con.smembers("s").await.map_err(|e| e.to_string())?;
        if !members.is_empty() {
            return Err(format!("s = {members:?} after FLUSHALL"));
        }
        for k in ["after", "n3-after"] {
            let v: Option<String> = con.get(k).await.map_err(|e| e.to_string())?;
            if v.as_deref() != Some("1") {
                return Err(format!("{k} = {v:?}: a write after the flush was lost"));
            }
        }
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_on_five_nodes_returns_every_key_while_a_node_dies() {
    let mut c = TestCluster::new("typedscan", 5, false);
    let all = ["n1", "n2", "n3", "n4", "n5"];
    c.start_all(&all).await;
    let mut writers = Vec::new();
    for id in all {
        writers.push(connect(&c, id).await);
    }
    const KEYS: usize = 10_000;
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(500) {
        let n = writers.len();
        let con = &mut writers[chunk[0] / 500 % n];
        let mut pipe = redis::pipe();
        for i in chunk {
            pipe.cmd("SET").arg(format!("key:{i}")).arg(*i).ignore();
        }
        let () = pipe.query_async(con).await.expect("pipelined SETs");
    }
    let mut scanner = connect(&c, "n1").await;
    let mut seen = std::collections::HashSet::new();
    let mut cursor = "0".to_string();
    let mut pages = 0;
    loop {
        let (next, keys): (String, Vec<String>) =
            cmd(&mut scanner, &["SCAN", &cursor, "COUNT", "100"])
                .await
                .expect("SCAN");
        seen.extend(keys);
        pages += 1;
        if pages == 50 {
            c.kill9("n4");
        }
        if next == "0" {
            break;
        }
        cursor = next;
    }
    assert!(pages > 50, "the scan ended before the kill ({pages} pages)");
    let missing: Vec<usize> = (0..KEYS)
        .filter(|i| !seen.contains(&format!("key:{i}")))
        .collect();
    assert!(
        missing.is_empty(),
        "{} keys never returned, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert_eq!(
        cmd::<i64>(&mut scanner, &["DBSIZE"]).await.unwrap(),
        KEYS as i64
    );
}
