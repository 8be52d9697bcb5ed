//! What the benchmarks against redis-server share: processes killed on drop, free ports,
//! one-node and three-node quorumkv clusters, and redis-benchmark runs parsed from its CSV.
#![allow(dead_code)] // each bench uses a different part

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_quorumkv");

pub fn free_tcp() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
    l.local_addr().expect("addr")
}

/// Processes started here; killed on drop.
pub struct Procs(pub Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn found(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

pub fn wait_for_port(addr: SocketAddr) {
    let start = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{addr} never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn wait_for_health(http: SocketAddr) {
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

/// Waits until a node with `client_tls` takes a write over `rediss://` (it serves).
pub fn wait_for_tls_resp(resp: SocketAddr, ca: &Path) {
    let start = Instant::now();
    loop {
        let out = Command::new("redis-cli")
            .args(["--tls", "--cacert"])
            .arg(ca)
            .args(["-h", "127.0.0.1", "-p", &resp.port().to_string()])
            .args(["SET", "__bench_ready", "1"])
            .output();
        if out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "OK") {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{resp} never served over TLS"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A cluster started by [`start_cluster`].
pub struct Started {
    /// The first node's Redis address.
    pub resp: SocketAddr,
    /// The first node's HTTP address.
    pub http: SocketAddr,
    /// The cluster file.
    pub config: PathBuf,
}

impl Started {
    /// The first node's Redis port.
    pub fn port(&self) -> u16 {
        self.resp.port()
    }
}

/// Starts node `id` of `config` in the background, its log in `log`.
pub fn start_node(bin: &str, config: &Path, id: &str, log: &Path) -> Child {
    let log = std::fs::File::create(log).expect("log");
    Command::new(bin)
        .args(["node", "--config"])
        .arg(config)
        .args(["--id", id])
        .env("RUST_LOG", "warn,quorumkv::process=info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start node")
}

/// Starts a quorumkv cluster of `nodes` nodes with N = `replicas` and the `[cluster]` lines
/// `settings`.
pub fn start_cluster(
    bin: &str,
    dir: &Path,
    name: &str,
    nodes: usize,
    replicas: usize,
    settings: &str,
    procs: &mut Procs,
) -> Started {
    let config = dir.join(format!("{name}.toml"));
    // One runtime thread per node, as redis-server runs its commands on one thread. Measured
    // cheaper per request than one per core: three nodes share these two cores with
    // redis-benchmark, and a single node's second thread mostly wakes and steals from the
    // first (docs/benchmarks.md).
    let threads = 1;
    let mut text = format!(
        "[cluster]\nname = \"{name}\"\nreplicas = {replicas}\ndata_dir = \"{name}-data\"\n\
         worker_threads = {threads}\n{settings}\n"
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
        let log = dir.join(format!("{name}-{id}.log"));
        procs.0.push(start_node(bin, &config, id, &log));
    }
    if settings.contains("client_tls = true") {
        let ca = dir.join(format!("{name}-data/tls/ca.pem"));
        for (_, _, resp) in &addrs {
            wait_for_tls_resp(*resp, &ca);
        }
    } else {
        for (_, http, _) in &addrs {
            wait_for_health(*http);
        }
    }
    Started {
        resp: addrs[0].2,
        http: addrs[0].1,
        config,
    }
}

/// One redis-benchmark run: requests per second, p50 and p99 in ms, by test (`SET`, `GET`,
/// `MSET (10 keys)`, ...).
pub fn run(port: u16, tests: &str, pipeline: usize, requests: usize) -> BTreeMap<String, Sample> {
    run_with(port, tests, pipeline, requests, &[])
}

/// [`run`] with more redis-benchmark arguments (`--tls --cacert FILE`).
pub fn run_with(
    port: u16,
    tests: &str,
    pipeline: usize,
    requests: usize,
    extra: &[&str],
) -> BTreeMap<String, Sample> {
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(extra)
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

/// One run's requests per second, p50 and p99 (ms).
pub type Sample = (f64, f64, f64);

/// The median of `v` (0 for none).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}
