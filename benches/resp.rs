//! quorumkv against redis-server, side by side, with the same client: `redis-benchmark -t
//! set,get,incr,hset,mset -c 50 -r 100000`, without and with `-P 16`, against
//!
//! - a `redis-server` on loopback (the distribution's package; no persistence),
//! - a one-node quorumkv cluster (N = 1), and
//! - a three-node quorumkv cluster (N = 3, W = 2, R = 2: the cluster defaults),
//!
//! each on its own free ports, all on this machine. The runs are interleaved and repeated,
//! and the median of each cell is reported with its ratio to redis-server. Then
//! `redis-benchmark -q` with its default test list runs once against the one-node cluster, to
//! show which tests quorumkv serves and which it refuses (lists, sorted sets).
//!
//! `make bench` runs it (after the criterion benchmarks); `cargo bench --bench resp` alone.
//! Environment: `QKV_BENCH_ROUNDS` (default 3), `QKV_BENCH_REQUESTS` (default 200000),
//! `QKV_BENCH_TESTS` (default `set,get,incr,hset,mset`), and
//! `QKV_BENCH_BASELINE=/path/to/an/older/quorumkv`: that binary's one-node and three-node
//! clusters run in the same interleaved rounds, so a change is measured against the build
//! before it on the same machine at the same time.
//! Under `cargo test --benches` (no `--bench` flag) it only checks that it would run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_quorumkv");

fn free_tcp() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
    l.local_addr().expect("addr")
}

/// Processes started here; killed on drop.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn found(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn wait_for_port(addr: SocketAddr) {
    let start = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{addr} never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_for_health(http: SocketAddr) {
    let start = Instant::now();
    loop {
        if let Ok(mut s) = TcpStream::connect(http) {
            use std::io::{Read, Write};
            let _ = s.write_all(b"GET /health HTTP/1.0\r\n\r\n");
            let mut reply = String::new();
            let _ = s.read_to_string(&mut reply);
            if reply.starts_with("HTTP/1.1 200") || reply.starts_with("HTTP/1.0 200") {
                return;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{http} never healthy"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts a quorumkv cluster of `nodes` nodes with N = `replicas`; returns the first node's
/// RESP address.
fn start_cluster(
    bin: &str,
    dir: &Path,
    name: &str,
    nodes: usize,
    replicas: usize,
    procs: &mut Procs,
) -> SocketAddr {
    let config = dir.join(format!("{name}.toml"));
    // One runtime thread per node, as redis-server runs its commands on one thread. Measured
    // cheaper per request than one per core: three nodes share these two cores with
    // redis-benchmark, and a single node's second thread mostly wakes and steals from the
    // first (docs/benchmarks.md).
    let threads = 1;
    let mut text = format!(
        "[cluster]\nname = \"{name}\"\nreplicas = {replicas}\ndata_dir = \"{name}-data\"\n\
         worker_threads = {threads}\n"
    );
    // Every socket stays bound until all ports are picked, so none is handed out twice.
    let held: Vec<(UdpSocket, TcpListener, TcpListener)> = (0..nodes)
        .map(|_| {
            (
                UdpSocket::bind("127.0.0.1:0").expect("bind udp"),
                TcpListener::bind("127.0.0.1:0").expect("bind tcp"),
                TcpListener::bind("127.0.0.1:0").expect("bind tcp"),
            )
        })
        .collect();
    let mut addrs = Vec::new();
    for (i, (u, h, r)) in (1..=nodes).zip(&held) {
        let addr = |a: std::io::Result<SocketAddr>| a.expect("addr");
        let (peer, http, resp) = (
            addr(u.local_addr()),
            addr(h.local_addr()),
            addr(r.local_addr()),
        );
        let _ = write!(
            text,
            "\n[[node]]\nid = \"n{i}\"\nzone = \"z\"\npeer = \"{peer}\"\nhttp = \"{http}\"\nresp = \"{resp}\"\n"
        );
        addrs.push((format!("n{i}"), http, resp));
    }
    std::fs::write(&config, text).expect("write config");
    drop(held);
    let out = Command::new(bin)
        .args(["certs", "--config"])
        .arg(&config)
        .output()
        .expect("quorumkv certs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (id, _, _) in &addrs {
        let log = std::fs::File::create(dir.join(format!("{name}-{id}.log"))).expect("log");
        let child = Command::new(bin)
            .args(["node", "--config"])
            .arg(&config)
            .args(["--id", id])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start node");
        procs.0.push(child);
    }
    for (_, http, _) in &addrs {
        wait_for_health(*http);
    }
    addrs[0].2
}

/// One redis-benchmark run: requests per second, p50 and p99 in ms, by test (`SET`, `GET`,
/// `MSET (10 keys)`, ...).
fn run(port: u16, tests: &str, pipeline: usize, requests: usize) -> BTreeMap<String, Sample> {
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-t", tests, "-c", "50", "-r", "100000", "--csv"])
        .args(["-n", &requests.to_string(), "-P", &pipeline.to_string()])
        .stderr(Stdio::null())
        .output()
        .expect("redis-benchmark");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut result = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with("\"test\"")) {
        let cells: Vec<&str> = line.split(',').map(|c| c.trim_matches('"')).collect();
        if cells.len() >= 7
            && let (Ok(rps), Ok(p50), Ok(p99)) = (
                cells[1].parse::<f64>(),
                cells[4].parse::<f64>(),
                cells[6].parse::<f64>(),
            )
        {
            result.insert(cells[0].to_string(), (rps, p50, p99));
        }
    }
    result
}

/// A table cell: target index, pipeline depth, test name.
type Cell = (usize, usize, String);
/// One run's requests per second, p50 and p99 (ms).
type Sample = (f64, f64, f64);

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

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
    let tests =
        std::env::var("QKV_BENCH_TESTS").unwrap_or_else(|_| "set,get,incr,hset,mset".into());
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
    let one = start_cluster(BIN, &dir, "one", 1, 1, &mut procs);
    let three = start_cluster(BIN, &dir, "three", 3, 3, &mut procs);
    let mut targets = vec![
        ("redis-server".to_string(), redis.port()),
        ("quorumkv 1 node, N=1".to_string(), one.port()),
        ("quorumkv 3 nodes, N=3 W=2 R=2".to_string(), three.port()),
    ];
    if let Ok(baseline) = std::env::var("QKV_BENCH_BASELINE") {
        let one = start_cluster(&baseline, &dir, "base-one", 1, 1, &mut procs);
        let three = start_cluster(&baseline, &dir, "base-three", 3, 3, &mut procs);
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
    default_list(one.port(), 100_000);
}

/// Where a test's rows go in the table: in the order of the default list.
fn order(test: &str) -> usize {
    ["SET", "GET", "INCR", "HSET", "MSET (10 keys)"]
        .iter()
        .position(|t| *t == test)
        .unwrap_or(usize::MAX)
}

/// `redis-benchmark -q` with its default test list, once, against `port`: each test's
/// throughput, or the error the server answered it with.
fn default_list(port: u16, requests: usize) {
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-q", "-n", &requests.to_string()])
        .stdin(Stdio::null())
        .output()
        .expect("redis-benchmark");
    println!(
        "\nredis-benchmark -q -n {requests} (its default test list) against one quorumkv node\n"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let errors = String::from_utf8_lossy(&out.stderr);
    // -q prints progress with carriage returns; the last piece of each line is the result.
    for line in text.lines().chain(errors.lines()) {
        let last = line.rsplit('\r').next().unwrap_or(line).trim();
        if !last.is_empty() {
            println!("  {last}");
        }
    }
}
