//! The Redis protocol with real `quorumkv node` processes: every documented command through a
//! Rust Redis client (and `redis-cli` where installed), values crossing between RESP and
//! HTTP, pipelining, `QUORUM` and its errors, and malformed input closing only its own
//! connection.

mod common;

use std::time::Duration;

use common::TestCluster;
use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, RedisResult, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ALL3: [&str; 3] = ["n1", "n2", "n3"];

async fn connect(c: &TestCluster, id: &str) -> MultiplexedConnection {
    let url = format!("redis://{}/", c.node(id).resp);
    let client = redis::Client::open(url).expect("redis client");
    client
        .get_multiplexed_async_connection()
        .await
        .expect("connect over RESP")
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

fn error_text<T: std::fmt::Debug>(r: RedisResult<T>) -> String {
    let e = r.expect_err("an error reply");
    e.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_through_a_redis_client() {
    let mut c = TestCluster::new("resp", 3, true);
    c.start_all(&ALL3).await;
    let mut r1 = connect(&c, "n1").await;
    let mut r2 = connect(&c, "n2").await;

    // Connection commands.
    assert_eq!(cmd::<String>(&mut r1, &["PING"]).await.unwrap(), "PONG");
    assert_eq!(cmd::<String>(&mut r1, &["PING", "hi"]).await.unwrap(), "hi");
    assert_eq!(
        cmd::<String>(&mut r1, &["ECHO", "x y"]).await.unwrap(),
        "x y"
    );
    assert_eq!(
        cmd::<String>(&mut r1, &["SELECT", "0"]).await.unwrap(),
        "OK"
    );
    assert!(error_text(cmd::<String>(&mut r1, &["SELECT", "1"]).await).contains("out of range"));
    let info: String = cmd(&mut r1, &["INFO"]).await.unwrap();
    assert!(
        info.contains("redis_version:") && info.contains("node:n1"),
        "{info}"
    );
    let _: Value = cmd(&mut r1, &["COMMAND"]).await.unwrap();

    // Strings: the /lww key space.
    let _: () = r1.set("greeting", "hello").await.unwrap();
    let got: Option<String> = r2.get("greeting").await.unwrap();
    assert_eq!(got.as_deref(), Some("hello"));
    let missing: Option<String> = r1.get("nope").await.unwrap();
    assert_eq!(missing, None);
    assert_eq!(
        cmd::<Option<String>>(&mut r1, &["SET", "greeting", "x", "NX"])
            .await
            .unwrap(),
        None,
        "NX on an existing key does nothing"
    );
    assert_eq!(
        cmd::<Option<String>>(&mut r1, &["SET", "fresh", "1", "XX"])
            .await
            .unwrap(),
        None,
        "XX on a missing key does nothing"
    );
    assert_eq!(
        cmd::<String>(&mut r1, &["SET", "fresh", "1", "NX", "EX", "100"])
            .await
            .unwrap(),
        "OK"
    );
    let ttl: i64 = cmd(&mut r2, &["TTL", "fresh"]).await.unwrap();
    assert!((99..=100).contains(&ttl), "ttl {ttl}");
    assert_eq!(cmd::<i64>(&mut r1, &["TTL", "greeting"]).await.unwrap(), -1);
    assert_eq!(cmd::<i64>(&mut r1, &["TTL", "nope"]).await.unwrap(), -2);
    assert_eq!(
        cmd::<i64>(&mut r1, &["EXPIRE", "greeting", "50"])
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        cmd::<i64>(&mut r1, &["EXPIRE", "nope", "50"])
            .await
            .unwrap(),
        0
    );
    let ttl: i64 = cmd(&mut r2, &["TTL", "greeting"]).await.unwrap();
    assert!((49..=50).contains(&ttl), "ttl {ttl}");
    let _: () = cmd(&mut r1, &["SET", "short", "v", "PX", "300"])
        .await
        .unwrap();
    let pttl: i64 = cmd(&mut r1, &["PTTL", "short"]).await.unwrap();
    assert!((1..=300).contains(&pttl), "pttl {pttl}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let gone: Option<String> = r2.get("short").await.unwrap();
    assert_eq!(gone, None, "PX expired");
    assert_eq!(
        cmd::<i64>(&mut r1, &["EXISTS", "greeting", "nope", "fresh"])
            .await
            .unwrap(),
        2
    );
    let many: Vec<Option<String>> = cmd(&mut r1, &["MGET", "greeting", "nope", "fresh"])
        .await
        .unwrap();
    assert_eq!(many, vec![Some("hello".into()), None, Some("1".into())]);
    assert_eq!(
        cmd::<i64>(&mut r1, &["DEL", "greeting", "nope"])
            .await
            .unwrap(),
        1
    );
    let deleted: Option<String> = r2.get("greeting").await.unwrap();
    assert_eq!(deleted, None);
    assert!(error_text(cmd::<String>(&mut r1, &["SET", "k"]).await).contains("wrong number"));
    assert!(
        error_text(cmd::<String>(&mut r1, &["SET", "k", "v", "EX", "0"]).await).contains("expire")
    );
    assert!(
        error_text(cmd::<String>(&mut r1, &["SET", "k", "v", "BOGUS"]).await).contains("syntax")
    );
    let big = "x".repeat(1024 * 1024 + 1);
    assert!(error_text(cmd::<String>(&mut r1, &["SET", "big", &big]).await).contains("at most"));

    // Strings that count: INCR and friends on the string, read back with GET.
    assert_eq!(cmd::<i64>(&mut r1, &["INCR", "hits"]).await.unwrap(), 1);
    assert_eq!(
        cmd::<i64>(&mut r2, &["INCRBY", "hits", "10"])
            .await
            .unwrap(),
        11
    );
    assert_eq!(cmd::<i64>(&mut r1, &["DECR", "hits"]).await.unwrap(), 10);
    assert_eq!(
        cmd::<i64>(&mut r2, &["DECRBY", "hits", "4"]).await.unwrap(),
        6
    );
    let hits: Option<String> = r1.get("hits").await.unwrap();
    assert_eq!(hits.as_deref(), Some("6"));
    // The /counter key space is another: COUNTER.INCRBY and COUNTER.GET.
    assert_eq!(
        cmd::<i64>(&mut r1, &["COUNTER.GET", "hits"]).await.unwrap(),
        0
    );
    assert_eq!(
        cmd::<i64>(&mut r2, &["COUNTER.INCRBY", "hits", "5"])
            .await
            .unwrap(),
        5
    );
    assert_eq!(
        cmd::<i64>(&mut r1, &["COUNTER.GET", "never"])
            .await
            .unwrap(),
        0
    );
    assert!(error_text(cmd::<i64>(&mut r1, &["INCRBY", "hits", "x"]).await).contains("integer"));

    // Sets: the /set key space.
    assert_eq!(
        cmd::<i64>(&mut r1, &["SADD", "team", "a", "b", "c", "a"])
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        cmd::<i64>(&mut r2, &["SADD", "team", "c", "d"])
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        cmd::<i64>(&mut r1, &["SREM", "team", "b", "zz"])
            .await
            .unwrap(),
        1
    );
    let members: Vec<String> = cmd(&mut r2, &["SMEMBERS", "team"]).await.unwrap();
    assert_eq!(members, ["a", "c", "d"]);
    assert_eq!(cmd::<i64>(&mut r1, &["SCARD", "team"]).await.unwrap(), 3);
    assert_eq!(
        cmd::<i64>(&mut r1, &["SISMEMBER", "team", "a"])
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        cmd::<i64>(&mut r1, &["SISMEMBER", "team", "b"])
            .await
            .unwrap(),
        0
    );

    // The key spaces meet HTTP: what RESP wrote, HTTP reads on another node, and back.
    let http = c.client("n3");
    let q = quorumkv::ops::Consistency::default();
    assert_eq!(
        http.lww_get("fresh", &q).await.unwrap().as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(http.counter_get("hits", &q).await.unwrap(), 5);
    assert_eq!(
        http.lww_get("hits", &q).await.unwrap().as_deref(),
        Some(&b"6"[..])
    );
    assert_eq!(http.set_get("team", &q).await.unwrap(), ["a", "c", "d"]);
    http.lww_put("from-http", "hi", None, &q).await.unwrap();
    let got: Option<String> = r1.get("from-http").await.unwrap();
    assert_eq!(got.as_deref(), Some("hi"));

    // Pipelining: replies come back in order.
    let mut pipe = redis::pipe();
    for i in 0..100 {
        pipe.cmd("SET").arg(format!("p{i}")).arg(i).ignore();
        pipe.cmd("INCR").arg("piped");
    }
    for i in 0..100 {
        pipe.cmd("GET").arg(format!("p{i}"));
    }
    let replies: Vec<Value> = pipe.query_async(&mut r1).await.unwrap();
    let counts: Vec<i64> = replies[..100]
        .iter()
        .map(|v| redis::from_redis_value(v).unwrap())
        .collect();
    assert_eq!(counts, (1..=100).collect::<Vec<i64>>());
    let values: Vec<String> = replies[100..]
        .iter()
        .map(|v| redis::from_redis_value(v).unwrap())
        .collect();
    assert_eq!(values, (0..100).map(|i| i.to_string()).collect::<Vec<_>>());

    // Pipelined commands on one key keep their order; on distinct keys they run side by
    // side, and a QUORUM in the middle applies to what follows it only.
    let mut pipe = redis::pipe();
    pipe.cmd("SET").arg("o").arg("1");
    pipe.cmd("GET").arg("o");
    pipe.cmd("SET").arg("o").arg("2");
    pipe.cmd("GET").arg("o");
    pipe.cmd("DEL").arg("o");
    pipe.cmd("GET").arg("o");
    let replies: Vec<Option<String>> = pipe.query_async(&mut r1).await.unwrap();
    assert_eq!(
        replies,
        [
            Some("OK"),
            Some("1"),
            Some("OK"),
            Some("2"),
            Some("1"),
            None
        ]
        .map(|v| v.map(str::to_string))
    );

    // QUORUM: validated like the HTTP parameters, per connection.
    assert!(error_text(cmd::<String>(&mut r1, &["QUORUM", "3", "4", "2"]).await).contains("w=4"));
    assert!(error_text(cmd::<String>(&mut r1, &["QUORUM", "9", "1", "1"]).await).contains("n=9"));
    assert!(
        error_text(cmd::<String>(&mut r1, &["QUORUM", "3", "x", "1"]).await).contains("quorum")
    );
    assert!(error_text(cmd::<String>(&mut r1, &["QUORUM", "3"]).await).contains("wrong number"));
    assert_eq!(
        cmd::<String>(&mut r1, &["QUORUM", "3", "all", "one"])
            .await
            .unwrap(),
        "OK"
    );
    assert_eq!(
        cmd::<String>(&mut r1, &["SET", "q", "v"]).await.unwrap(),
        "OK"
    );
    c.kill9("n3");
    let e = error_text(cmd::<String>(&mut r1, &["SET", "q", "v2"]).await);
    // The error line is "-QUORUM needed 3 acks, got 2: ..."; the client splits off the code.
    assert!(
        e.starts_with("QUORUM") && e.contains("needed 3 acks, got 2"),
        "{e}"
    );
    // Other connections keep the defaults (quorum): they still write.
    assert_eq!(
        cmd::<String>(&mut r2, &["SET", "q", "v3"]).await.unwrap(),
        "OK"
    );
}

/// Edge cases a client can reach that once hung a node, grew a value past the limit, or
/// answered differently from Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_cases_answer_as_redis_and_stay_within_limits() {
    let mut c = TestCluster::new("respedge", 1, true);
    c.start_all(&["n1"]).await;
    let mut r = connect(&c, "n1").await;

    // SRANDMEMBER with a huge negative count: nothing to repeat on a missing key; refused
    // (not built in memory) on a set.
    let none: Vec<String> = cmd(&mut r, &["SRANDMEMBER", "nokey", "-9223372036854775807"])
        .await
        .unwrap();
    assert!(none.is_empty());
    let _: i64 = cmd(&mut r, &["SADD", "s", "a", "b"]).await.unwrap();
    let e =
        error_text(cmd::<Vec<String>>(&mut r, &["SRANDMEMBER", "s", "-9223372036854775807"]).await);
    assert!(e.contains("out of range"), "{e}");
    let five: Vec<String> = cmd(&mut r, &["SRANDMEMBER", "s", "-5"]).await.unwrap();
    assert_eq!(five.len(), 5);

    // SETRANGE and APPEND cannot make a value larger than the limit (1 MiB here).
    let e = error_text(cmd::<i64>(&mut r, &["SETRANGE", "big", "2000000", "x"]).await);
    assert!(e.contains("at most 1048576 bytes"), "{e}");
    assert_eq!(
        cmd::<i64>(&mut r, &["SETRANGE", "big", "2000000", ""])
            .await
            .unwrap(),
        0
    );
    let chunk = "x".repeat(600_000);
    assert_eq!(
        cmd::<i64>(&mut r, &["APPEND", "log", &chunk])
            .await
            .unwrap(),
        600_000
    );
    let e = error_text(cmd::<i64>(&mut r, &["APPEND", "log", &chunk]).await);
    assert!(e.contains("at most 1048576 bytes"), "{e}");
    assert_eq!(
        cmd::<i64>(&mut r, &["STRLEN", "log"]).await.unwrap(),
        600_000
    );

    // EXPIRE XX LT on a key without a time to live changes nothing; errors name the command.
    let _: String = cmd(&mut r, &["SET", "k", "v"]).await.unwrap();
    assert_eq!(
        cmd::<i64>(&mut r, &["EXPIRE", "k", "10", "XX", "LT"])
            .await
            .unwrap(),
        0
    );
    assert_eq!(cmd::<i64>(&mut r, &["TTL", "k"]).await.unwrap(), -1);
    assert_eq!(
        cmd::<i64>(&mut r, &["EXPIRE", "k", "100"]).await.unwrap(),
        1
    );
    assert_eq!(
        cmd::<i64>(&mut r, &["EXPIRE", "k", "10", "XX", "LT"])
            .await
            .unwrap(),
        1
    );
    let e = error_text(cmd::<i64>(&mut r, &["PEXPIRE", "k", "9223372036854775807"]).await);
    assert!(e.contains("'pexpire'"), "{e}");

    // Integers as Redis reads them: no leading zeros, no "-0", no "+".
    for bad in ["007", "-0", "+5", " 5"] {
        let e = error_text(cmd::<i64>(&mut r, &["INCRBY", "n", bad]).await);
        assert!(e.contains("not an integer"), "{bad}: {e}");
    }
    let _: String = cmd(&mut r, &["SET", "z", "007"]).await.unwrap();
    assert!(error_text(cmd::<i64>(&mut r, &["INCR", "z"]).await).contains("not an integer"));
    assert_eq!(
        cmd::<String>(&mut r, &["INCRBYFLOAT", "z", "0.5"])
            .await
            .unwrap(),
        "7.5"
    );

    // SET with an expiry already passed answers OK and leaves no key.
    let _: String = cmd(&mut r, &["SET", "gone", "1"]).await.unwrap();
    assert_eq!(
        cmd::<String>(&mut r, &["SET", "gone", "2", "PXAT", "1"])
            .await
            .unwrap(),
        "OK"
    );
    assert_eq!(
        cmd::<Option<String>>(&mut r, &["GET", "gone"])
            .await
            .unwrap(),
        None
    );

    // A pattern that is exponential for a backtracking matcher answers at once.
    let long = "a".repeat(1000);
    let _: String = cmd(&mut r, &["SET", &long, "1"]).await.unwrap();
    let pattern = format!("{}b", "*a".repeat(12));
    let found: Vec<String> = cmd(&mut r, &["KEYS", &pattern]).await.unwrap();
    assert!(found.is_empty());

    // A keyspace command in a pipeline sees the writes before it and none after it.
    let (size, _, after): (i64, String, i64) = redis::pipe()
        .cmd("FLUSHALL")
        .ignore()
        .cmd("SET")
        .arg("p1")
        .arg("1")
        .ignore()
        .cmd("SET")
        .arg("p2")
        .arg("1")
        .ignore()
        .cmd("DBSIZE")
        .cmd("SET")
        .arg("p3")
        .arg("1")
        .cmd("DBSIZE")
        .query_async(&mut r)
        .await
        .unwrap();
    assert_eq!((size, after), (2, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_closes_only_its_connection() {
    let mut c = TestCluster::new("respbad", 1, false);
    c.start_all(&["n1"]).await;
    let addr = c.node("n1").resp;
    let mut good = connect(&c, "n1").await;
    for garbage in [
        &b"*x\r\n"[..],
        b"*1\r\n*1\r\n$1\r\na\r\n",
        b"*99999999999\r\n",
    ] {
        let mut bad = tokio::net::TcpStream::connect(addr).await.expect("connect");
        bad.write_all(garbage).await.expect("write");
        let mut reply = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), bad.read_to_end(&mut reply))
            .await
            .expect("the server closes the connection")
            .expect("read");
        let reply = String::from_utf8_lossy(&reply);
        assert!(reply.starts_with("-ERR Protocol error"), "{reply}");
    }
    // Inline commands work, as for telnet.
    let mut inline = tokio::net::TcpStream::connect(addr).await.expect("connect");
    inline
        .write_all(b"PING\r\nECHO hi\r\nQUIT\r\n")
        .await
        .expect("write");
    let mut reply = Vec::new();
    inline.read_to_end(&mut reply).await.expect("read");
    assert_eq!(
        String::from_utf8_lossy(&reply),
        "+PONG\r\n$2\r\nhi\r\n+OK\r\n"
    );
    // The well-behaved connection never noticed.
    assert_eq!(cmd::<String>(&mut good, &["PING"]).await.unwrap(), "PONG");
    let e = error_text(cmd::<String>(&mut good, &["LPUSH", "l", "x"]).await);
    assert!(e.contains("unknown command"), "{e}");
}

/// Runs `redis-cli` against `addr` and returns what it printed. `None` when redis-cli is not
/// installed; CI installs it and sets `QKV_REQUIRE_REDIS_CLI`, which turns its absence into a
/// failure rather than a skip.
fn redis_cli(addr: std::net::SocketAddr, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("redis-cli")
        .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args(args)
        .output();
    match out {
        Ok(out) => {
            assert!(out.status.success() || !out.stdout.is_empty(), "{out:?}");
            Some(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
        }
        Err(e) => {
            assert!(
                std::env::var_os("QKV_REQUIRE_REDIS_CLI").is_none(),
                "redis-cli is required here but did not run: {e}"
            );
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_through_redis_cli() {
    if redis_cli("127.0.0.1:1".parse().expect("addr"), &["--version"]).is_none() {
        eprintln!("redis-cli is not installed; skipped");
        return;
    }
    let mut c = TestCluster::new("respcli", 3, false);
    c.start_all(&ALL3).await;
    let (n1, n2) = (c.node("n1").resp, c.node("n2").resp);
    // redis-cli blocks, so it runs off the runtime's threads.
    let run = |addr, args: &'static [&'static str]| async move {
        tokio::task::spawn_blocking(move || redis_cli(addr, args))
            .await
            .expect("redis-cli task")
            .expect("redis-cli")
    };
    // (node, command, what redis-cli prints when not on a terminal: nil is an empty line,
    // an array one element per line, an error its message).
    let steps: &[(std::net::SocketAddr, &[&str], &str)] = &[
        (n1, &["PING"], "PONG"),
        (n1, &["ECHO", "hi there"], "hi there"),
        (n1, &["SELECT", "0"], "OK"),
        (n1, &["SET", "city", "Lyon"], "OK"),
        (n2, &["GET", "city"], "Lyon"),
        (n2, &["GET", "nowhere"], ""),
        (n1, &["SET", "city", "Paris", "NX"], ""),
        (n1, &["SET", "town", "Nice", "XX"], ""),
        (n1, &["SET", "town", "Nice", "EX", "100", "NX"], "OK"),
        (n1, &["SET", "tmp", "x", "PX", "100000"], "OK"),
        (n2, &["EXISTS", "city", "town", "nowhere"], "2"),
        (n2, &["MGET", "city", "nowhere", "town"], "Lyon\n\nNice"),
        (n1, &["TTL", "city"], "-1"),
        (n1, &["TTL", "nowhere"], "-2"),
        (n1, &["EXPIRE", "city", "500"], "1"),
        (n1, &["EXPIRE", "nowhere", "500"], "0"),
        (n1, &["DEL", "tmp", "nowhere"], "1"),
        (n2, &["GET", "tmp"], ""),
        (n1, &["INCR", "visits"], "1"),
        (n2, &["INCRBY", "visits", "41"], "42"),
        (n1, &["DECR", "visits"], "41"),
        (n2, &["DECRBY", "visits", "40"], "1"),
        (n2, &["GET", "visits"], "1"),
        (n1, &["COUNTER.INCRBY", "visits", "7"], "7"),
        (n1, &["COUNTER.GET", "visits"], "7"),
        (n1, &["COUNTER.GET", "never"], "0"),
        (n1, &["SADD", "crew", "ann", "bob", "cy"], "3"),
        (n2, &["SREM", "crew", "bob", "zed"], "1"),
        (n1, &["SMEMBERS", "crew"], "ann\ncy"),
        (n2, &["SISMEMBER", "crew", "ann"], "1"),
        (n2, &["SISMEMBER", "crew", "bob"], "0"),
        (n1, &["SCARD", "crew"], "2"),
        (n1, &["QUORUM", "3", "all", "one"], "OK"),
        (
            n1,
            &["QUORUM", "3", "4", "2"],
            "ERR w=4 is more than n=3; use w from 1 to 3, or one, quorum, all, local_quorum or \
             each_quorum",
        ),
        (
            n1,
            &["QUORUM", "4", "1", "1"],
            "ERR n=4 but the cluster has 3 members; use n from 1 to 3",
        ),
        (
            n1,
            &["INCRBY", "visits", "many"],
            "ERR value is not an integer or out of range",
        ),
        (n1, &["QUIT"], "OK"),
    ];
    for (addr, args, want) in steps {
        let got = run(*addr, args).await;
        assert_eq!(got, *want, "redis-cli {}", args.join(" "));
    }
    let ttl: i64 = run(n2, &["TTL", "town"]).await.parse().expect("ttl");
    assert!((99..=100).contains(&ttl), "TTL town: {ttl}");
    let ttl: i64 = run(n2, &["TTL", "city"]).await.parse().expect("ttl");
    assert!((499..=500).contains(&ttl), "TTL city: {ttl}");
    let info = run(n1, &["INFO"]).await;
    assert!(info.contains("redis_version:"), "{info}");
    // What redis-cli wrote is the same key over HTTP, on the third node.
    let http = c.client("n3");
    let q = quorumkv::ops::Consistency::default();
    assert_eq!(
        http.lww_get("city", &q).await.unwrap().as_deref(),
        Some(&b"Lyon"[..])
    );
    assert_eq!(http.counter_get("visits", &q).await.unwrap(), 7);
    assert_eq!(
        http.lww_get("visits", &q).await.unwrap().as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(http.set_get("crew", &q).await.unwrap(), ["ann", "cy"]);
}
