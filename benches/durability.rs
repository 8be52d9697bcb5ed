//! What durability costs, next to redis-server with its append-only file, in the same run on
//! this machine:
//!
//! 1. `redis-benchmark -t set -c 50 -r 100000` against redis-server `appendonly yes` with
//!    `appendfsync everysec` and with `appendfsync always`, and quorumkv with `durability`
//!    `everysec` (one node, and three nodes N=3 W=2 R=2), `always` (one node) and `memory`
//!    (one node: what the log itself costs). Interleaved rounds, medians, each quorumkv row
//!    with its ratio to redis-server under the same fsync policy.
//! 2. Recovery: about 1,000,000 keys of 16 bytes written (`-r 1000000 -n 3000000 -P 16`), then
//!    the process killed with SIGKILL and started again: the time until it answers, next to
//!    redis-server loading the same data from its AOF and from an RDB file (`SAVE`), and the
//!    bytes on disk per key of each.
//!
//! `make bench` runs it; `cargo bench --bench durability` alone. Environment:
//! `QKV_BENCH_ROUNDS` (default 3), `QKV_BENCH_REQUESTS` (default 200000),
//! `QKV_BENCH_KEYS` (default 1000000). Under `cargo test --benches` it only checks that it
//! would run.

mod common;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    BIN, Procs, Sample, found, free_tcp, median, run, start_cluster, start_node, wait_for_health,
    wait_for_port,
};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A redis-server with its data in `dir` and the extra arguments `args`.
fn redis(dir: &Path, port: u16, args: &[&str]) -> Child {
    std::fs::create_dir_all(dir).expect("redis dir");
    Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .arg("--dir")
        .arg(dir)
        .args(args)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server")
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Polls until `PING` answers `PONG` (a loading Redis answers `-LOADING`).
fn until_pong(port: u16) -> Duration {
    let start = Instant::now();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    loop {
        if TcpStream::connect(addr).is_ok() && redis_cli(port, &["PING"]) == "PONG" {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "{port} never answered"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn bytes_under(path: &Path) -> u64 {
    let Ok(meta) = std::fs::metadata(path) else {
        return 0;
    };
    if meta.is_file() {
        return meta.len();
    }
    std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| bytes_under(&e.path()))
        .sum()
}

/// Writes about `keys` distinct keys of 16 bytes.
fn fill(port: u16, keys: usize) {
    let status = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-t", "set", "-c", "50", "-P", "16", "-d", "16", "-q"])
        .args(["-r", &keys.to_string(), "-n", &(keys * 3).to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("redis-benchmark");
    assert!(status.success(), "filling {port} failed");
}

fn kill(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("durability bench: run with `cargo bench --bench durability` (or `make bench`)");
        return;
    }
    if !(found("redis-server") && found("redis-benchmark") && found("redis-cli")) {
        eprintln!("durability bench: redis-server, redis-cli and redis-benchmark are needed");
        std::process::exit(1);
    }
    let rounds = env_or("QKV_BENCH_ROUNDS", 3);
    let requests = env_or("QKV_BENCH_REQUESTS", 200_000);
    let keys = env_or("QKV_BENCH_KEYS", 1_000_000);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("durability-bench");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench dir");

    throughput(&dir, rounds, requests);
    recovery(&dir, keys);
}

fn throughput(dir: &Path, rounds: usize, requests: usize) {
    let mut procs = Procs(Vec::new());
    let aof = |fsync: &str| ["--appendonly", "yes", "--appendfsync", fsync].map(String::from);
    let (everysec, always) = (free_tcp(), free_tcp());
    for (addr, fsync) in [(everysec, "everysec"), (always, "always")] {
        let args = aof(fsync);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        procs.0.push(redis(
            &dir.join(format!("redis-{fsync}")),
            addr.port(),
            &args,
        ));
        wait_for_port(addr);
    }
    let cluster = |name: &str, nodes: usize, durability: &str, procs: &mut Procs| {
        let settings = format!("durability = \"{durability}\"");
        start_cluster(BIN, dir, name, nodes, nodes, &settings, procs).port()
    };
    // (name, port, the redis-server row it is compared with)
    let targets = [
        ("redis-server appendfsync everysec", everysec.port(), 0),
        (
            "quorumkv 1 node, everysec",
            cluster("one-everysec", 1, "everysec", &mut procs),
            0,
        ),
        (
            "quorumkv 3 nodes, everysec",
            cluster("three-everysec", 3, "everysec", &mut procs),
            0,
        ),
        (
            "quorumkv 1 node, memory",
            cluster("one-memory", 1, "memory", &mut procs),
            0,
        ),
        ("redis-server appendfsync always", always.port(), 4),
        (
            "quorumkv 1 node, always",
            cluster("one-always", 1, "always", &mut procs),
            4,
        ),
        (
            "quorumkv 3 nodes, always",
            cluster("three-always", 3, "always", &mut procs),
            4,
        ),
    ];
    let mut samples: BTreeMap<usize, Vec<Sample>> = BTreeMap::new();
    for round in 0..rounds {
        for (t, (name, port, _)) in targets.iter().enumerate() {
            // A sync per write (or per batch) is slow on most disks: fewer requests.
            let n = if name.ends_with("always") {
                requests / 4
            } else {
                requests
            };
            for (test, cell) in run(*port, "set", 1, n) {
                eprintln!(
                    "round {} {name:<36} {test}: {:>9.0} req/s p50 {:.3} ms p99 {:.3} ms",
                    round + 1,
                    cell.0,
                    cell.1,
                    cell.2
                );
                samples.entry(t).or_default().push(cell);
            }
        }
    }
    println!(
        "\nredis-benchmark -t set -c 50 -r 100000 -n {requests} (a quarter of it for `always`), median of {rounds} interleaved rounds\n"
    );
    println!(
        "{:<38} {:>11} {:>9} {:>9} {:>10}",
        "target", "req/s", "p50 ms", "p99 ms", "x redis"
    );
    let rps = |t: usize| {
        samples
            .get(&t)
            .map(|s| median(s.iter().map(|c| c.0).collect()))
            .unwrap_or(0.0)
    };
    for (t, (name, _, reference)) in targets.iter().enumerate() {
        let Some(s) = samples.get(&t) else {
            println!("{name:<38} failed");
            continue;
        };
        let p50 = median(s.iter().map(|c| c.1).collect());
        let p99 = median(s.iter().map(|c| c.2).collect());
        let base = rps(*reference);
        println!(
            "{name:<38} {:>11.0} {p50:>9.3} {p99:>9.3} {:>9.2}x",
            rps(t),
            if base > 0.0 { rps(t) / base } else { 0.0 }
        );
    }
}

fn recovery(dir: &Path, keys: usize) {
    println!(
        "\nrecovery after SIGKILL, about {keys} keys of 16 bytes (-r {keys} -n {})\n",
        keys * 3
    );
    println!(
        "{:<40} {:>9} {:>12} {:>12} {:>10}",
        "what", "keys", "restart ms", "disk bytes", "bytes/key"
    );
    let row = |what: &str, count: &str, took: Duration, bytes: u64| {
        let count_n: f64 = count.parse().unwrap_or(0.0);
        println!(
            "{what:<40} {count:>9} {:>12} {bytes:>12} {:>10.1}",
            took.as_millis(),
            if count_n > 0.0 {
                bytes as f64 / count_n
            } else {
                0.0
            }
        );
    };

    // redis-server: the AOF, then an RDB file of the same data.
    let port = free_tcp().port();
    let redis_dir = dir.join("redis-recovery");
    let aof = ["--appendonly", "yes", "--appendfsync", "everysec"];
    let server = redis(&redis_dir, port, &aof);
    wait_for_port(([127, 0, 0, 1], port).into());
    fill(port, keys);
    let count = redis_cli(port, &["DBSIZE"]);
    std::thread::sleep(Duration::from_millis(1500));
    let aof_bytes = bytes_under(&redis_dir.join("appendonlydir"));
    let _ = redis_cli(port, &["SAVE"]);
    let rdb_bytes = bytes_under(&redis_dir.join("dump.rdb"));
    kill(server);
    let server = redis(&redis_dir, port, &aof);
    let took = until_pong(port);
    let loaded = redis_cli(port, &["DBSIZE"]);
    row("redis-server, from its AOF", &loaded, took, aof_bytes);
    kill(server);
    let server = redis(&redis_dir, port, &["--appendonly", "no"]);
    let took = until_pong(port);
    let loaded = redis_cli(port, &["DBSIZE"]);
    row(
        "redis-server, from an RDB file (SAVE)",
        &loaded,
        took,
        rdb_bytes,
    );
    kill(server);
    assert_eq!(loaded, count, "redis-server reloaded a different key count");

    // quorumkv, one node: the log as written, then after a snapshot has compacted it.
    let mut procs = Procs(Vec::new());
    let started = start_cluster(
        BIN,
        dir,
        "recovery",
        1,
        1,
        "durability = \"everysec\"",
        &mut procs,
    );
    fill(started.port(), keys);
    let count = redis_cli(started.port(), &["DBSIZE"]);
    std::thread::sleep(Duration::from_millis(1500));
    let data = dir.join("recovery-data").join("n1").join("data");
    let bytes = bytes_under(&data);
    let child = procs.0.pop().expect("the node");
    kill(child);
    let log = dir.join("recovery-n1-restart.log");
    let start = Instant::now();
    procs.0.push(start_node(BIN, &started.config, "n1", &log));
    wait_for_health(started.http);
    let took = start.elapsed();
    let loaded = redis_cli(started.port(), &["DBSIZE"]);
    row(
        "quorumkv 1 node, everysec, from its log",
        &loaded,
        took,
        bytes,
    );
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    if let Some(line) = said.lines().find(|l| l.contains("recovered")) {
        println!("  node log: {}", line.trim());
    }
    assert_eq!(loaded, count, "quorumkv reloaded a different key count");
}
