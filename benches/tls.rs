//! What TLS on the client port costs, side by side: `redis-benchmark -t set,get -c 50 -r
//! 100000`, without and with `-P 16`, against redis-server plain and with `--tls-port`, and
//! against quorumkv one-node and three-node clusters plain and with `client_tls = true`, all
//! on this machine in interleaved rounds (median of each cell). redis-server's TLS port uses
//! the certificate `quorumkv certs` made for the one-node cluster's node, so both servers
//! present the same kind of certificate to the same client.
//!
//! `make bench` runs it; `cargo bench --bench tls` alone. Environment: `QKV_BENCH_ROUNDS`
//! (default 3), `QKV_BENCH_REQUESTS` (default 200000).

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::{BIN, Procs, Sample, found, free_tcp, median, run_with, start_cluster, wait_for_port};

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    if !benching {
        println!("tls bench: run with `cargo bench --bench tls` (or `make bench`)");
        return;
    }
    if !(found("redis-server") && found("redis-benchmark") && found("redis-cli")) {
        eprintln!("tls bench: redis-server, redis-benchmark and redis-cli are needed");
        std::process::exit(1);
    }
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let rounds = env("QKV_BENCH_ROUNDS", 3);
    let requests = env("QKV_BENCH_REQUESTS", 200_000);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tls-bench");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench dir");

    let mut procs = Procs(Vec::new());
    let one = start_cluster(BIN, &dir, "plain1", 1, 1, "", &mut procs);
    let one_tls = start_cluster(BIN, &dir, "tls1", 1, 1, "client_tls = true", &mut procs);
    let three = start_cluster(BIN, &dir, "plain3", 3, 3, "", &mut procs);
    let three_tls = start_cluster(BIN, &dir, "tls3", 3, 3, "client_tls = true", &mut procs);
    let tls_dir = dir.join("tls1-data/tls");
    let ca = tls_dir.join("ca.pem").display().to_string();
    let ca3 = dir.join("tls3-data/tls/ca.pem").display().to_string();
    let (redis, redis_tls) = (free_tcp(), free_tcp());
    for (port, tls) in [(redis, false), (redis_tls, true)] {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        if tls {
            cmd.args(["--port", "0", "--tls-port", &port.port().to_string()])
                .arg("--tls-cert-file")
                .arg(tls_dir.join("client-n1.pem"))
                .arg("--tls-key-file")
                .arg(tls_dir.join("client-n1.key"))
                .args(["--tls-ca-cert-file", &ca, "--tls-auth-clients", "no"]);
        } else {
            cmd.args(["--port", &port.port().to_string()]);
        }
        procs
            .0
            .push(cmd.stdout(Stdio::null()).spawn().expect("redis-server"));
        wait_for_port(port);
    }
    let with = |ca: &str| vec!["--tls".to_string(), "--cacert".to_string(), ca.to_string()];
    let targets: Vec<(&str, u16, Vec<String>)> = vec![
        ("redis-server", redis.port(), Vec::new()),
        ("redis-server --tls-port", redis_tls.port(), with(&ca)),
        ("quorumkv 1 node", one.port(), Vec::new()),
        ("quorumkv 1 node, client_tls", one_tls.port(), with(&ca)),
        ("quorumkv 3 nodes", three.port(), Vec::new()),
        ("quorumkv 3 nodes, client_tls", three_tls.port(), with(&ca3)),
    ];
    let mut samples: BTreeMap<(usize, usize, String), Vec<Sample>> = BTreeMap::new();
    for round in 0..rounds {
        for pipeline in [1, 16] {
            let n = if pipeline == 1 {
                requests
            } else {
                requests * 4
            };
            for (t, (name, port, extra)) in targets.iter().enumerate() {
                let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
                for (test, cell) in run_with(*port, "set,get", pipeline, n, &extra) {
                    eprintln!(
                        "round {} -P {pipeline:>2} {name:<30} {test}: {:>9.0} req/s p99 {:.3} ms",
                        round + 1,
                        cell.0,
                        cell.2
                    );
                    samples.entry((t, pipeline, test)).or_default().push(cell);
                }
            }
        }
    }
    println!(
        "\nredis-benchmark -t set,get -c 50 -r 100000 (-n {requests}, or 4x with -P 16), median of {rounds} interleaved rounds\n"
    );
    println!(
        "{:<30} {:>3} {:>5} {:>11} {:>9} {:>9} {:>13}",
        "target", "-P", "op", "req/s", "p50 ms", "p99 ms", "x same plain"
    );
    for pipeline in [1, 16] {
        for test in ["SET", "GET"] {
            for (t, (name, _, _)) in targets.iter().enumerate() {
                let Some(s) = samples.get(&(t, pipeline, test.to_string())) else {
                    continue;
                };
                let rps = median(s.iter().map(|c| c.0).collect());
                let p50 = median(s.iter().map(|c| c.1).collect());
                let p99 = median(s.iter().map(|c| c.2).collect());
                // TLS targets against the plain target before them.
                let ratio = if t % 2 == 1 {
                    samples
                        .get(&(t - 1, pipeline, test.to_string()))
                        .map(|b| median(b.iter().map(|c| c.0).collect()))
                        .filter(|b| *b > 0.0)
                        .map_or(String::new(), |b| format!("{:.2}x", rps / b))
                } else {
                    String::new()
                };
                println!(
                    "{name:<30} {pipeline:>3} {test:>5} {rps:>11.0} {p50:>9.3} {p99:>9.3} {ratio:>13}"
                );
            }
        }
    }
}
