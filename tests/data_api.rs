//! End-to-end tests of the data API (docs/api.md) with real `quorumkv node` processes over QUIC on
//! 127.0.0.1: every example of the contract, siblings and their resolution, read-your-writes
//! from every node, counters and sets written from every node, add-wins across a partition,
//! a killed node, read repair of a stale replica, the CLI and `quorumkv bench`.
//!
//! Each test starts its own cluster on free ports and kills it when it ends.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::{BIN, DEADLINE, TestCluster};
use quorumkv::config::Quorum;
use quorumkv::ops::Consistency;
use serde_json::Value;

const ALL3: [&str; 3] = ["n1", "n2", "n3"];

fn wr(w: &str, r: &str) -> Consistency {
    Consistency {
        w: Some(Quorum::parse(w).expect("w")),
        r: Some(Quorum::parse(r).expect("r")),
        ..Consistency::default()
    }
}

/// A raw answer: status, headers and body, for checking the contract byte for byte.
struct Raw {
    status: u16,
    context: Option<String>,
    content_type: Option<String>,
    body: bytes::Bytes,
}

impl Raw {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {:?} (status {})",
                String::from_utf8_lossy(&self.body),
                self.status
            )
        })
    }

    /// Checks an API error: status, code, and a message that says something.
    fn assert_error(&self, status: u16, code: &str) -> &Raw {
        let body = self.json();
        assert_eq!(self.status, status, "{body}");
        assert_eq!(body["error"], code, "{body}");
        let message = body["message"].as_str().expect("message");
        assert!(message.len() > 10, "message too thin: {body}");
        self
    }
}

async fn raw(
    c: &TestCluster,
    method: &str,
    id: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> Raw {
    let url = format!("{}{path}", c.base(id));
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = c.http.request(method, url).body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request");
    let header = |name| {
        resp.headers()
            .get(name)
            .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
            .map(str::to_string)
    };
    Raw {
        status: resp.status().as_u16(),
        context: header("x-context"),
        content_type: header("content-type"),
        body: resp.bytes().await.expect("body"),
    }
}

async fn get(c: &TestCluster, id: &str, path: &str) -> Raw {
    raw(c, "GET", id, path, &[], "").await
}

/// Cuts n3 off from n1 and n2 and reads `/kv/k` from n3's own replica alone (r = 1).
async fn n3_alone_reads_k(c: &TestCluster) -> quorumkv::client::KvRead {
    c.partition(&["n3"], &["n1", "n2"]).await;
    c.client("n3")
        .kv_get("k", &wr("1", "1"))
        .await
        .expect("n3 alone at r=1")
}

/// Polls `check` until it holds, or fails with `what` after the deadline.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < DEADLINE, "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_example_on_three_nodes() {
    let mut c = TestCluster::new("api", 3, true);
    c.start_all(&ALL3).await;

    // ---- /kv: never written, siblings, resolution, delete ----
    let r = get(&c, "n1", "/kv/colour").await;
    r.assert_error(404, "not_found");
    assert_eq!(r.context, None, "a key no replica has seen has no context");

    let r = raw(&c, "PUT", "n1", "/kv/colour?n=3&w=2", &[], "blue").await;
    assert_eq!(r.status, 204);
    assert!(r.context.is_some(), "PUT answers with the new context");
    let r = raw(&c, "PUT", "n2", "/kv/colour?w=2", &[], "green").await;
    assert_eq!(r.status, 204);

    let r = get(&c, "n3", "/kv/colour?r=2").await;
    assert_eq!(r.status, 300);
    assert_eq!(r.content_type.as_deref(), Some("application/json"));
    let siblings: BTreeSet<String> = r.json()["siblings"]
        .as_array()
        .expect("siblings")
        .iter()
        .map(|s| s.as_str().expect("base64 string").to_string())
        .collect();
    assert_eq!(
        siblings,
        BTreeSet::from([STANDARD.encode("blue"), STANDARD.encode("green")])
    );
    let ctx = r.context.expect("a 300 carries the context");
    assert!(
        ctx.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "the context is URL-safe: {ctx}"
    );

    let r = raw(
        &c,
        "PUT",
        "n1",
        "/kv/colour?w=all",
        &[("X-Context", &ctx)],
        "teal",
    )
    .await;
    assert_eq!(r.status, 204);
    for id in ALL3 {
        let r = get(&c, id, "/kv/colour?r=all").await;
        assert_eq!((r.status, &r.body[..]), (200, &b"teal"[..]), "read at {id}");
        assert!(r.context.is_some());
    }

    let r = raw(&c, "DELETE", "n3", "/kv/colour", &[], "").await;
    assert_eq!(r.status, 204);
    for id in ALL3 {
        let r = get(&c, id, "/kv/colour").await;
        r.assert_error(404, "not_found");
        assert!(r.context.is_some(), "a 404 for a deleted key has a context");
    }

    // A malformed context is a 400 on any request, and writes nothing.
    for (method, path) in [
        ("GET", "/kv/colour"),
        ("PUT", "/kv/colour"),
        ("DELETE", "/kv/colour"),
    ] {
        raw(
            &c,
            method,
            "n1",
            path,
            &[("X-Context", "not a context!")],
            "x",
        )
        .await
        .assert_error(400, "bad_request");
    }
    get(&c, "n2", "/kv/colour?r=all")
        .await
        .assert_error(404, "not_found");

    // ---- TTL ----
    for space in ["kv", "lww"] {
        let r = raw(&c, "PUT", "n2", &format!("/{space}/short?ttl=1"), &[], "x").await;
        assert_eq!(r.status, 204);
        eventually(&format!("/{space}/short expires"), || async {
            get(&c, "n1", &format!("/{space}/short")).await.status == 404
        })
        .await;
        raw(&c, "PUT", "n2", &format!("/{space}/short?ttl=0"), &[], "x")
            .await
            .assert_error(400, "bad_request");
    }

    // ---- /lww ----
    get(&c, "n1", "/lww/user:7")
        .await
        .assert_error(404, "not_found");
    let r = raw(&c, "PUT", "n1", "/lww/user:7?w=one", &[], "session-42").await;
    assert_eq!(r.status, 204);
    let r = raw(&c, "PUT", "n3", "/lww/user:7?w=all", &[], "session-43").await;
    assert_eq!(r.status, 204);
    let r = get(&c, "n2", "/lww/user:7?r=all").await;
    assert_eq!((r.status, &r.body[..]), (200, &b"session-43"[..]));
    assert_eq!(
        raw(&c, "DELETE", "n2", "/lww/user:7", &[], "").await.status,
        204
    );
    get(&c, "n1", "/lww/user:7?r=all")
        .await
        .assert_error(404, "not_found");

    // ---- /counter ----
    let r = get(&c, "n1", "/counter/visits").await;
    assert_eq!((r.status, r.json()), (200, serde_json::json!({"value": 0})));
    let r = raw(&c, "POST", "n1", "/counter/visits?delta=5", &[], "").await;
    assert_eq!(r.status, 204);
    let r = raw(&c, "POST", "n2", "/counter/visits?delta=-2&w=all", &[], "").await;
    assert_eq!(r.status, 204);
    let r = get(&c, "n3", "/counter/visits?r=all").await;
    assert_eq!(r.json(), serde_json::json!({"value": 3}));
    for bad in [
        "",
        "?delta=",
        "?delta=abc",
        "?delta=1.5",
        "?delta=9223372036854775808",
    ] {
        raw(&c, "POST", "n1", &format!("/counter/visits{bad}"), &[], "")
            .await
            .assert_error(400, "bad_request");
    }
    let r = get(&c, "n3", "/counter/visits?r=all").await;
    assert_eq!(
        r.json(),
        serde_json::json!({"value": 3}),
        "400s wrote nothing"
    );

    // ---- /set ----
    let r = get(&c, "n1", "/set/team").await;
    assert_eq!(
        (r.status, r.json()),
        (200, serde_json::json!({"members": []}))
    );
    let add = r#"{"add": ["carol", "alice", "bob"]}"#;
    assert_eq!(
        raw(&c, "POST", "n1", "/set/team", &[], add).await.status,
        204
    );
    let remove = r#"{"remove": ["bob"]}"#;
    let r = raw(&c, "POST", "n2", "/set/team?w=2&r=2", &[], remove).await;
    assert_eq!(r.status, 204);
    let r = get(&c, "n3", "/set/team").await;
    assert_eq!(r.json(), serde_json::json!({"members": ["alice", "carol"]}));
    for bad in [
        r#"{}"#,
        r#"{"add": ["x"], "remove": ["x"]}"#,
        r#"{"add": [1]}"#,
        r#"{"add": "x"}"#,
        r#"{"plus": ["x"]}"#,
        "not json",
    ] {
        raw(&c, "POST", "n1", "/set/team", &[], bad)
            .await
            .assert_error(400, "bad_request");
    }
    let r = get(&c, "n3", "/set/team?r=all").await;
    assert_eq!(
        r.json(),
        serde_json::json!({"members": ["alice", "carol"]}),
        "400s wrote nothing"
    );

    // ---- key spaces, key encoding and limits ----
    assert_eq!(raw(&c, "PUT", "n1", "/kv/a", &[], "kv-a").await.status, 204);
    let r = get(&c, "n2", "/counter/a").await;
    assert_eq!(
        r.json(),
        serde_json::json!({"value": 0}),
        "separate key spaces"
    );
    get(&c, "n2", "/lww/a").await.assert_error(404, "not_found");
    let r = raw(&c, "PUT", "n1", "/kv/dir%2Ffile%20name", &[], "slash").await;
    assert_eq!(r.status, 204);
    let read = c
        .client("n3")
        .kv_get("dir/file name", &Consistency::default())
        .await
        .expect("read through the client");
    assert_eq!(read.values, vec![bytes::Bytes::from("slash")]);
    let longest = "k".repeat(1024);
    let r = raw(&c, "PUT", "n1", &format!("/lww/{longest}"), &[], "v").await;
    assert_eq!(r.status, 204);
    raw(&c, "PUT", "n1", &format!("/lww/{longest}k"), &[], "v")
        .await
        .assert_error(413, "too_large");
    get(&c, "n1", "/kv/").await.assert_error(400, "bad_request");

    let max = 1024 * 1024;
    let r = raw(&c, "PUT", "n1", "/lww/big", &[], vec![7u8; max]).await;
    assert_eq!(r.status, 204, "a value of exactly the maximum is stored");
    let r = get(&c, "n2", "/lww/big?r=all").await;
    assert_eq!(r.body.len(), max);
    for space in ["kv", "lww"] {
        raw(
            &c,
            "PUT",
            "n1",
            &format!("/{space}/big"),
            &[],
            vec![7u8; max + 1],
        )
        .await
        .assert_error(413, "too_large");
    }
    let r = get(&c, "n2", "/lww/big?r=all").await;
    assert_eq!(r.body.len(), max, "the 413 changed nothing");

    // ---- consistency parameters ----
    for bad in [
        "w=4&n=3",
        "n=9",
        "n=0",
        "r=0",
        "w=0",
        "w=abc",
        "r=most",
        "n=-1",
        "timeout_ms=0",
        "timeout_ms=60001",
        "sloppy=maybe",
        "w=1&w=2",
        "colour=blue",
    ] {
        for (method, space) in [("GET", "kv"), ("PUT", "lww"), ("GET", "set")] {
            raw(&c, method, "n2", &format!("/{space}/p?{bad}"), &[], "v")
                .await
                .assert_error(400, "bad_request");
        }
    }
    let r = get(&c, "n1", "/kv/a?n=2&r=2&timeout_ms=500&sloppy=false").await;
    assert_eq!(r.status, 200);

    // ---- cluster endpoints still answer alongside ----
    assert_eq!(get(&c, "n1", "/health").await.status, 200);
    assert!(c.metric("n1", "quorumkv_requests_total").await > 50.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_read_your_writes_and_count_exactly_from_every_node() {
    let ids = ["n1", "n2", "n3", "n4", "n5"];
    let mut c = TestCluster::new("five", 5, false);
    c.start_all(&ids).await;
    let clients: Vec<_> = ids.iter().map(|id| c.client(id)).collect();
    let q = wr("2", "2"); // n = 3 (the default): W + R > N

    // A write through any node is read back through every node.
    for (i, writer) in clients.iter().enumerate() {
        for round in 0..4 {
            let key = format!("ryw-{i}-{round}");
            let value = format!("v{i}.{round}");
            writer
                .lww_put(&key, value.clone(), None, &q)
                .await
                .expect("lww put");
            writer
                .kv_put(&key, value.clone(), None, None, &q)
                .await
                .expect("kv put");
            for reader in &clients {
                let got = reader.lww_get(&key, &q).await.expect("lww get");
                assert_eq!(got.as_deref(), Some(value.as_bytes()), "lww {key}");
                let got = reader.kv_get(&key, &q).await.expect("kv get");
                assert_eq!(got.values, vec![bytes::Bytes::from(value.clone())], "{key}");
            }
        }
    }

    // A chain of read-modify-writes through different nodes never forks into siblings.
    for (i, client) in clients.iter().cycle().take(15).enumerate() {
        let read = client.kv_get("chain", &q).await.expect("read");
        if i > 0 {
            let last = bytes::Bytes::from(format!("step {}", i - 1));
            assert_eq!(
                read.values,
                vec![last],
                "step {i}: the read saw the last write only"
            );
        }
        client
            .kv_put(
                "chain",
                format!("step {i}"),
                read.context.as_deref(),
                None,
                &q,
            )
            .await
            .expect("write with the context");
    }

    // Increments from every node at once all count, exactly once.
    let mut tasks = Vec::new();
    for (i, client) in clients.iter().enumerate() {
        let (client, q) = (client.clone(), q.clone());
        tasks.push(tokio::spawn(async move {
            let mut sum = 0i128;
            for j in 0..25i64 {
                let delta = (i as i64 + 1) * 7 - j;
                client.counter_add("hits", delta, &q).await.expect("incr");
                client
                    .set_update("seen", &[&format!("n{i}-{j}")], &[], &q)
                    .await
                    .expect("sadd");
                sum += i128::from(delta);
            }
            sum
        }));
    }
    let mut expected = 0;
    for t in tasks {
        expected += t.await.expect("writer");
    }
    for client in &clients {
        assert_eq!(
            client.counter_get("hits", &q).await.expect("read"),
            expected
        );
        let members = client.set_get("seen", &q).await.expect("members");
        assert_eq!(members.len(), 5 * 25);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_makes_siblings_and_add_wins_and_counts_both_sides() {
    let mut c = TestCluster::new("split", 3, true);
    c.start_all(&ALL3).await;
    let (n1, n2, n3) = (c.client("n1"), c.client("n2"), c.client("n3"));
    let all = wr("all", "all");
    n1.set_update("tags", &["x", "y"], &[], &all)
        .await
        .expect("sadd");
    n1.counter_add("total", 100, &all).await.expect("incr");

    c.partition(&["n1"], &["n2", "n3"]).await;
    // n1 alone: W=1 and R=1 succeed on its own replica.
    let one = wr("1", "1");
    n1.kv_put("doc", "left", None, None, &one)
        .await
        .expect("left write");
    n1.set_update("tags", &[], &["x", "y"], &one)
        .await
        .expect("remove");
    n1.counter_add("total", 10, &one).await.expect("left incr");
    assert_eq!(
        n1.set_get("tags", &one).await.expect("read"),
        Vec::<String>::new()
    );
    // The majority side: W=2.
    let two = wr("2", "2");
    n2.kv_put("doc", "right", None, None, &two)
        .await
        .expect("right write");
    n3.set_update("tags", &["x"], &[], &two)
        .await
        .expect("concurrent add");
    n2.counter_add("total", 5, &two).await.expect("right incr");
    // W=all cannot succeed across the partition.
    let e = n2
        .counter_add(
            "total",
            1000,
            &Consistency {
                timeout_ms: Some(500),
                ..all.clone()
            },
        )
        .await
        .expect_err("w=all across a partition");
    assert_eq!(e.code(), Some("quorum_unavailable"));

    c.heal().await;
    c.until_states(&ALL3, &ALL3, "alive").await;
    for client in [&n1, &n2, &n3] {
        let doc = client.kv_get("doc", &all).await.expect("read");
        let values: BTreeSet<_> = doc.values.iter().map(|v| v.to_vec()).collect();
        assert_eq!(
            values,
            BTreeSet::from([b"left".to_vec(), b"right".to_vec()]),
            "concurrent writes are siblings"
        );
        // The concurrent add of x wins over the remove that never saw it; y stays removed.
        assert_eq!(client.set_get("tags", &all).await.expect("set"), ["x"]);
        // 100 + 10 + 5 and perhaps the 1000 that W=all could not confirm (it reached n2).
        let total = client.counter_get("total", &all).await.expect("count");
        assert!(total == 115 || total == 1115, "total {total}");
    }
    // Resolving with the context of the siblings leaves one value everywhere.
    let doc = n3.kv_get("doc", &all).await.expect("read");
    n3.kv_put("doc", "merged", doc.context.as_deref(), None, &all)
        .await
        .expect("resolve");
    for client in [&n1, &n2, &n3] {
        let doc = client.kv_get("doc", &wr("1", "1")).await.expect("read");
        assert_eq!(doc.values, vec![bytes::Bytes::from("merged")]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_fails_only_w_all_and_read_repair_restores_it() {
    killed_node_catches_up("memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_restarted_on_its_data_gets_what_it_missed_from_hints() {
    killed_node_catches_up("everysec").await;
}

async fn killed_node_catches_up(durability: &str) {
    let settings = format!("durability = \"{durability}\"");
    let mut c = TestCluster::with_settings("repair", 3, true, &settings);
    c.start_all(&ALL3).await;
    let n1 = c.client("n1");
    n1.kv_put("k", "v1", None, None, &wr("all", "all"))
        .await
        .expect("first write");

    c.kill9("n3");
    let fast = |w: &str| Consistency {
        timeout_ms: Some(1000),
        ..wr(w, "quorum")
    };
    let ctx = n1
        .kv_get("k", &fast("2"))
        .await
        .expect("read at r=2 with n3 down")
        .context;
    n1.kv_put("k", "v2", ctx.as_deref(), None, &fast("2"))
        .await
        .expect("w=2 with one of three down");
    // W=all fails with the API's 503 body, before and after n3 is declared dead.
    let resp = raw(&c, "PUT", "n2", "/lww/x?w=all&timeout_ms=1000", &[], "v").await;
    let body = resp.assert_error(503, "quorum_unavailable").json();
    assert_eq!(
        (body["needed"].as_u64(), body["acks"].as_u64()),
        (Some(3), Some(2))
    );
    c.until_states(&["n1", "n2"], &["n3"], "dead").await;
    let e = n1
        .kv_put("k", "v3", None, None, &fast("all"))
        .await
        .expect_err("w=all with n3 dead");
    assert_eq!(e.status(), Some(503));

    // With durability = "memory" n3 comes back empty: before it answers /health it has
    // pulled its keys from the other replicas (bootstrap), with no read involved. On its
    // data, it serves at once and gets what it missed from the hints n1 and n2 kept.
    c.start("n3");
    c.until_states(&ALL3, &ALL3, "alive").await;
    eventually("n3 healthy", || async {
        get(&c, "n3", "/health").await.status == 200
    })
    .await;
    if durability != "memory" {
        eventually("hints delivered to n3", || async {
            c.metric("n1", "quorumkv_hints_pending").await == 0.0
                && c.metric("n2", "quorumkv_hints_pending").await == 0.0
        })
        .await;
    }
    let alone = n3_alone_reads_k(&c).await;
    let values: BTreeSet<_> = alone.values.iter().map(|v| v.to_vec()).collect();
    assert_eq!(
        values,
        BTreeSet::from([b"v2".to_vec(), b"v3".to_vec()]),
        "v2 and v3 (w=all failed but reached two)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_at_r_all_repairs_a_stale_replica() {
    // Without hints and anti-entropy, only reads repair.
    let mut c = TestCluster::with_settings(
        "readrepair",
        3,
        true,
        "hinted_handoff = false\nanti_entropy_interval_ms = 0",
    );
    c.start_all(&ALL3).await;
    let n1 = c.client("n1");
    n1.kv_put("k", "v1", None, None, &wr("all", "all"))
        .await
        .expect("first write");
    // n3 misses the second write.
    c.partition(&["n3"], &["n1", "n2"]).await;
    let ctx = n1.kv_get("k", &wr("2", "2")).await.expect("read").context;
    n1.kv_put("k", "v2", ctx.as_deref(), None, &wr("2", "2"))
        .await
        .expect("w=2 without n3");
    // Still cut off (so its own read cannot repair it), n3 holds the old value.
    let stale = c
        .client("n3")
        .kv_get("k", &wr("1", "1"))
        .await
        .expect("n3's own replica");
    assert_eq!(stale.values, vec![bytes::Bytes::from("v1")], "n3 is stale");
    c.heal().await;
    c.until_states(&ALL3, &ALL3, "alive").await;

    let before = c.metric("n1", "quorumkv_read_repairs_total").await;
    let read = n1.kv_get("k", &wr("quorum", "all")).await.expect("r=all");
    assert_eq!(read.values, vec![bytes::Bytes::from("v2")]);
    eventually("n1 counts the repair of n3", || async {
        c.metric("n1", "quorumkv_read_repairs_total").await > before
    })
    .await;
    // Cut n3 off and read its own replica alone: it holds what the repair sent.
    let alone = n3_alone_reads_k(&c).await;
    assert_eq!(alone.values, vec![bytes::Bytes::from("v2")]);
}

fn with<'a>(args: &[&'a str], node: &[&'a str]) -> Vec<&'a str> {
    [args, node].concat()
}

/// Runs the `quorumkv` binary; returns (exit code, stdout, stderr).
fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().expect("run quorumkv");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_and_bench_talk_to_a_cluster() {
    let mut c = TestCluster::new("cli", 3, false);
    c.start_all(&ALL3).await;
    let (u1, u2) = (c.base("n1"), c.base("n2"));
    let node1 = ["--node", u1.as_str()];
    let node2 = ["--node", u2.as_str()];

    let (code, out, err) = cli(&with(&["put", "greeting", "hello", "--w", "2"], &node1));
    assert_eq!((code, out.as_str()), (0, "OK\n"), "{err}");
    assert!(err.contains("context: "), "{err}");
    cli(&with(&["put", "greeting", "hi", "--w", "2"], &node2));
    let (code, out, err) = cli(&with(&["get", "greeting", "--r", "2"], &node1));
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("2 siblings"), "{out}");
    assert!(out.contains("\"hello\"") && out.contains("\"hi\""), "{out}");
    let (code, out, _) = cli(&with(&["get", "greeting", "--r", "2", "--json"], &node2));
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).expect("json");
    let ctx = v["context"].as_str().expect("context").to_string();
    let (code, ..) = cli(&with(
        &["put", "greeting", "hey", "--context", &ctx],
        &node1,
    ));
    assert_eq!(code, 0);
    let (code, out, _) = cli(&with(&["get", "greeting", "--r", "all"], &node2));
    assert_eq!((code, out.as_str()), (0, "hey\n"));
    let (code, ..) = cli(&with(&["delete", "greeting"], &node2));
    assert_eq!(code, 0);
    let (code, _, err) = cli(&with(&["get", "greeting"], &node1));
    assert_eq!(code, 1, "not found exits 1");
    assert!(err.contains("(not found)"), "{err}");

    cli(&with(
        &["put", "session", "abc", "--type", "lww", "--ttl", "60"],
        &node1,
    ));
    let (_, out, _) = cli(&with(&["get", "session", "--type", "lww"], &node2));
    assert_eq!(out, "abc\n");

    for delta in ["5", "-2"] {
        let (code, _, err) = cli(&with(&["incr", "visits", delta], &node1));
        assert_eq!(code, 0, "{err}");
    }
    let (_, out, _) = cli(&with(&["get", "visits", "--type", "counter"], &node2));
    assert_eq!(out, "3\n");

    cli(&with(&["sadd", "team", "bob", "alice", "carol"], &node1));
    cli(&with(&["srem", "team", "bob", "--w", "all"], &node2));
    let (_, out, _) = cli(&with(&["smembers", "team", "--r", "all"], &node1));
    assert_eq!(out, "alice\ncarol\n");

    // Errors are readable, with the API's code, and exit 2.
    let (code, _, err) = cli(&with(&["get", "team", "--n", "9"], &node1));
    assert_eq!(code, 2);
    assert!(
        err.contains("bad_request (400)") && err.contains("n=9"),
        "{err}"
    );
    let (code, _, err) = cli(&with(&["get", "team", "--w", "most"], &node1));
    assert_eq!(code, 2);
    assert!(err.contains("--w"), "{err}");
    let (code, out, _) = cli(&with(&["incr", "visits", "--n", "9", "--json"], &node1));
    assert_eq!(code, 2);
    let v: Value = serde_json::from_str(&out).expect("json error");
    assert_eq!(
        (v["status"].as_u64(), v["error"].as_str()),
        (Some(400), Some("bad_request"))
    );

    // The load generator writes and reads back every key it wrote.
    let nodes = format!("{u1},{u2},{}", c.base("n3"));
    let (code, out, err) = cli(&[
        "bench",
        "--node",
        &nodes,
        "--requests",
        "300",
        "-c",
        "4",
        "--w",
        "2",
        "--r",
        "2",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let report: Value = serde_json::from_str(&out).expect("bench json");
    let phases = report["phases"].as_array().expect("phases");
    assert_eq!(phases.len(), 2);
    for p in phases {
        assert_eq!(p["ok"], 300, "{p}");
        assert_eq!(p["not_found"], 0, "{p}");
        assert!(p["p99_ms"].as_f64().expect("p99") > 0.0);
    }
}
