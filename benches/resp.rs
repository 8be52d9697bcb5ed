//! quorumkv against redis-server, side by side, with the same client: `redis-benchmark -t
//! set,get,incr,mset -c 50 -r 100000`, without and with `-P 16`, against
//!
//! - a `redis-server` on loopback (the distribution's package; no persistence),
//! - a one-node quorumkv cluster (N = 1), and
//! - a three-node quorumkv cluster (N = 3, W = 2, R = 2: the cluster defaults),
//!
//! each on its own free ports, all on this machine. The runs are interleaved and repeated,
//! and the median of each cell is reported with its ratio to redis-server. Then `HSET` into
//! one hash of up to 100,000 fields, once per target, and `redis-benchmark -q` with its default
//! test list once against the one-node cluster, to show which tests quorumkv serves and which
//! it refuses (lists, sorted sets, streams).
//!
//! `make bench` runs it (after the criterion benchmarks); `cargo bench --bench resp` alone.
//! Environment: `QKV_BENCH_ROUNDS` (default 3), `QKV_BENCH_REQUESTS` (default 200000),
//! `QKV_BENCH_TESTS` (default `set,get,incr,mset`), and
//! `QKV_BENCH_BASELINE=/path/to/an/older/quorumkv`: that binary's one-node and three-node
//! clusters run in the same interleaved rounds, so a change is measured against the build
//! before it on the same machine at the same time.
//! Under `cargo test --benches` (no `--bench` flag) it only checks that it would run.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::{BIN, Procs, Sample, found, free_tcp, median, run, start_cluster, wait_for_port};

/// A table cell: target index, pipeline depth, test name.
type Cell = (usize, usize, String);

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let tools = found("redis-server") && found("redis-benchmark");
    if !benching {
        println!("resp bench: run with `cargo bench --bench resp` (or `make bench`)");
        return;
    }
    if !tools {
        eprintln!(
            "resp bench: redis-server and redis-benchmark are needed (Debian: apt-get install \
             redis-server redis-tools; `make bench` installs them when run as root)"
        );
        std::process::exit(1);
    }
    let rounds: usize = std::env::var("QKV_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let requests: usize = std::env::var("QKV_BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let tests = std::env::var("QKV_BENCH_TESTS").unwrap_or_else(|_| "set,get,incr,mset".into());
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("resp-bench");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench dir");

    let mut procs = Procs(Vec::new());
    let redis = free_tcp();
    procs.0.push(
        Command::new("redis-server")
            .args(["--port", &redis.port().to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server"),
    );
    wait_for_port(redis);
    let one = start_cluster(BIN, &dir, "one", 1, 1, "", &mut procs);
    let three = start_cluster(BIN, &dir, "three", 3, 3, "", &mut procs);
    let mut targets = vec![
        ("redis-server".to_string(), redis.port()),
        ("quorumkv 1 node, N=1".to_string(), one.port()),
        ("quorumkv 3 nodes, N=3 W=2 R=2".to_string(), three.port()),
    ];
    if let Ok(baseline) = std::env::var("QKV_BENCH_BASELINE") {
        let one = start_cluster(&baseline, &dir, "base-one", 1, 1, "", &mut procs);
        let three = start_cluster(&baseline, &dir, "base-three", 3, 3, "", &mut procs);
        targets.push(("baseline 1 node, N=1".to_string(), one.port()));
        targets.push(("baseline 3 nodes, N=3 W=2 R=2".to_string(), three.port()));
    }
    let mut samples: BTreeMap<Cell, Vec<Sample>> = BTreeMap::new();
    for round in 0..rounds {
        for pipeline in [1, 16] {
            for (t, (name, port)) in targets.iter().enumerate() {
                let n = if pipeline == 1 {
                    requests
                } else {
                    requests * 4
                };
                for (test, cell) in run(*port, &tests, pipeline, n) {
                    eprintln!(
                        "round {} -P {pipeline:>2} {name:<30} {test}: {:>9.0} req/s p50 {:.3} ms p99 {:.3} ms",
                        round + 1,
                        cell.0,
                        cell.1,
                        cell.2
                    );
                    samples.entry((t, pipeline, test)).or_default().push(cell);
                }
            }
        }
    }
    println!(
        "\nredis-benchmark -t {tests} -c 50 -r 100000 (-n {requests}, or 4x with -P 16), median of {rounds} interleaved rounds\n"
    );
    println!(
        "{:<32} {:>3} {:>14} {:>11} {:>9} {:>9} {:>8}",
        "target", "-P", "op", "req/s", "p50 ms", "p99 ms", "x redis"
    );
    let mut names: Vec<String> = samples.keys().map(|(_, _, test)| test.clone()).collect();
    names.sort_by_key(|n| (order(n), n.clone()));
    names.dedup();
    for pipeline in [1, 16] {
        for test in &names {
            let base = samples
                .get(&(0, pipeline, test.to_string()))
                .map(|s| median(s.iter().map(|c| c.0).collect()))
                .unwrap_or(0.0);
            for (t, (name, _)) in targets.iter().enumerate() {
                let Some(s) = samples.get(&(t, pipeline, test.to_string())) else {
                    continue;
                };
                let rps = median(s.iter().map(|c| c.0).collect());
                let p50 = median(s.iter().map(|c| c.1).collect());
                let p99 = median(s.iter().map(|c| c.2).collect());
                println!(
                    "{name:<32} {pipeline:>3} {test:>14} {rps:>11.0} {p50:>9.3} {p99:>9.3} {:>7.2}x",
                    if base > 0.0 { rps / base } else { 0.0 }
                );
            }
        }
    }
    one_large_hash(&targets);
    default_list(one.port(), 100_000);
}

/// `HSET myhash element:__rand_int__` with `-r 100000`: one hash growing to 100,000 fields,
/// once per target and after the table (a cluster that falls behind on it would slow down
/// whatever ran after it). Its throughput, or the error that stopped redis-benchmark.
fn one_large_hash(targets: &[(String, u16)]) {
    println!(
        "\nredis-benchmark -t hset -c 50 -r 100000 -n 200000: one hash of up to 100,000 fields\n"
    );
    for (name, port) in targets {
        let lines = quiet(*port, "hset", 200_000, &["-c", "50", "-r", "100000"]);
        let result = lines
            .iter()
            .find(|l| l.starts_with("HSET:") && l.contains("requests per second"))
            .or_else(|| lines.iter().find(|l| l.contains("rror")))
            .cloned()
            .unwrap_or_else(|| lines.join(" "));
        println!("  {name:<32} {result}");
        // Leave nothing behind for the next target's cluster to repair.
        let _ = Command::new("redis-cli")
            .args(["-p", &port.to_string(), "FLUSHALL"])
            .output();
    }
}

/// Where a test's rows go in the table: in the order of the default list.
fn order(test: &str) -> usize {
    ["SET", "GET", "INCR", "MSET (10 keys)"]
        .iter()
        .position(|t| *t == test)
        .unwrap_or(usize::MAX)
}

/// The tests of redis-benchmark's default list that quorumkv serves, and the ones it does
/// not (lists, sorted sets and streams are not part of its command set).
const SUPPORTED: &str = "ping_inline,ping_mbulk,set,get,incr,sadd,hset,spop,mset";
const UNSUPPORTED: [&str; 8] = [
    "lpush",
    "rpush",
    "lpop",
    "rpop",
    "zadd",
    "zpopmin",
    "lrange_100",
    "xadd",
];

/// redis-benchmark's default test list, once, against `port`: each supported test's
/// throughput, then each other test with the error the server answers it with. (A single
/// `redis-benchmark -q` run stops at its first failing test, so they run apart.)
fn default_list(port: u16, requests: usize) {
    println!(
        "\nredis-benchmark -q -n {requests} (its default test list) against one quorumkv node\n"
    );
    for line in quiet(port, SUPPORTED, requests, &[]) {
        println!("  {line}");
    }
    for test in UNSUPPORTED {
        let answer = quiet(port, test, 1_000, &[]).join(" ");
        let answer = if answer.is_empty() {
            "no output".to_string()
        } else {
            answer
        };
        println!("  {}: not served ({answer})", test.to_uppercase());
    }
}

/// One `redis-benchmark -q` run (with `extra` arguments): its result lines (stdout and stderr, progress stripped).
fn quiet(port: u16, tests: &str, requests: usize, extra: &[&str]) -> Vec<String> {
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-q", "-t", tests, "-n", &requests.to_string()])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("redis-benchmark");
    let text = String::from_utf8_lossy(&out.stdout);
    let errors = String::from_utf8_lossy(&out.stderr);
    // -q prints progress with carriage returns; the last piece of each line is the result.
    text.lines()
        .chain(errors.lines())
        .map(|line| line.rsplit('\r').next().unwrap_or(line).trim().to_string())
        .filter(|line| !line.is_empty())
        .collect()
}
