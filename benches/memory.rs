//! What a key costs in memory, side by side with redis-server in the same run: 1,000,000
//! strings of 64-byte values, then 100,000 sets of 10 members and 100,000 hashes of 10
//! fields, loaded over RESP in pipelines of 1,000 commands into redis-server (no persistence),
//! a one-node quorumkv (N=1) and a three-node quorumkv (N=3, every node holds every key).
//! Each figure is the growth of the process's resident memory (`VmRSS`) over the load,
//! divided by what was loaded; for three nodes, per node.
//!
//! `make bench` runs it; `cargo bench --bench memory` alone. Environment: `QKV_MEM_KEYS`
//! (default 1000000), `QKV_MEM_COLLECTIONS` (default 100000).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{BIN, Procs, found, free_tcp, start_cluster, wait_for_port};

/// Commands sent before their replies are read.
const PIPELINE: usize = 1_000;

/// The resident memory of process `pid`, in bytes.
fn resident(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// RESP encoding of one command.
fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    let _ = write!(out, "*{}\r\n", args.len());
    for a in args {
        let _ = write!(out, "${}\r\n", a.len());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Sends `count` commands made by `make`, in pipelines, and checks every reply is not an
/// error.
fn load(addr: SocketAddr, count: usize, make: impl Fn(usize, &mut Vec<u8>)) {
    let stream = TcpStream::connect(addr).expect("connect");
    let mut writer = stream.try_clone().expect("clone stream");
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let mut sent = 0;
    while sent < count {
        let batch = PIPELINE.min(count - sent);
        let mut out = Vec::with_capacity(batch * 128);
        for i in sent..sent + batch {
            make(i, &mut out);
        }
        writer.write_all(&out).expect("send");
        for _ in 0..batch {
            line.clear();
            reader.read_line(&mut line).expect("reply");
            assert!(
                line.starts_with('+') || line.starts_with(':'),
                "{addr} answered {line:?}"
            );
        }
        sent += batch;
    }
}

/// One load phase: what it writes and how many of it.
struct Phase {
    name: &'static str,
    count: usize,
    make: fn(usize, &mut Vec<u8>),
}

fn strings(i: usize, out: &mut Vec<u8>) {
    let key = format!("key:{i:07}");
    let value = format!("{i:064}");
    command(out, &[b"SET", key.as_bytes(), value.as_bytes()]);
}

fn sets(i: usize, out: &mut Vec<u8>) {
    let key = format!("set:{i:06}");
    let members: Vec<String> = (0..10).map(|m| format!("member:{m}")).collect();
    let mut args: Vec<&[u8]> = vec![b"SADD", key.as_bytes()];
    args.extend(members.iter().map(|m| m.as_bytes()));
    command(out, &args);
}

fn hashes(i: usize, out: &mut Vec<u8>) {
    let key = format!("hash:{i:06}");
    let pairs: Vec<(String, String)> = (0..10)
        .map(|f| (format!("field:{f}"), format!("value:{f:02}")))
        .collect();
    let mut args: Vec<&[u8]> = vec![b"HSET", key.as_bytes()];
    for (f, v) in &pairs {
        args.push(f.as_bytes());
        args.push(v.as_bytes());
    }
    command(out, &args);
}

/// A server under test: where to send and whose memory to read.
struct Target {
    name: &'static str,
    addr: SocketAddr,
    pids: Vec<u32>,
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    if !benching {
        println!("memory bench: run with `cargo bench --bench memory` (or `make bench`)");
        return;
    }
    if !found("redis-server") {
        eprintln!("memory bench: redis-server is needed");
        std::process::exit(1);
    }
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let keys = env("QKV_MEM_KEYS", 1_000_000);
    let collections = env("QKV_MEM_COLLECTIONS", 100_000);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("memory-bench");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench dir");

    let mut procs = Procs(Vec::new());
    let redis = free_tcp();
    procs.0.push(
        Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--port", &redis.port().to_string()])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server"),
    );
    wait_for_port(redis);
    let mut targets = vec![Target {
        name: "redis-server",
        addr: redis,
        pids: vec![procs.0[0].id()],
    }];
    for (name, nodes) in [("quorumkv 1 node, N=1", 1), ("quorumkv 3 nodes, N=3", 3)] {
        let before = procs.0.len();
        let started = start_cluster(
            BIN,
            &dir,
            &format!("mem{nodes}"),
            nodes,
            nodes,
            "",
            &mut procs,
        );
        targets.push(Target {
            name,
            addr: started.resp,
            pids: procs.0[before..].iter().map(|c| c.id()).collect(),
        });
    }

    let phases = [
        Phase {
            name: "strings, 64-byte values",
            count: keys,
            make: strings,
        },
        Phase {
            name: "sets of 10 members",
            count: collections,
            make: sets,
        },
        Phase {
            name: "hashes of 10 fields",
            count: collections,
            make: hashes,
        },
    ];
    println!("| target | what | count | resident before | after | bytes each | × redis |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let mut redis_each = vec![0.0; phases.len()];
    for target in &targets {
        for (p, phase) in phases.iter().enumerate() {
            let before: Vec<u64> = target.pids.iter().map(|&pid| resident(pid)).collect();
            load(target.addr, phase.count, phase.make);
            // What settles after the load (replication to the other nodes, the log writer).
            std::thread::sleep(Duration::from_secs(3));
            let after: Vec<u64> = target.pids.iter().map(|&pid| resident(pid)).collect();
            let grown: Vec<f64> = before
                .iter()
                .zip(&after)
                .map(|(b, a)| a.saturating_sub(*b) as f64 / phase.count as f64)
                .collect();
            let each = grown.iter().sum::<f64>() / grown.len() as f64;
            if target.name == "redis-server" {
                redis_each[p] = each;
            }
            let mib = |v: &[u64]| {
                v.iter()
                    .map(|b| format!("{:.1}", *b as f64 / 1048576.0))
                    .collect::<Vec<_>>()
                    .join(" / ")
            };
            println!(
                "| {} | {} | {} | {} MiB | {} MiB | {:.0}{} | {:.2} |",
                target.name,
                phase.name,
                phase.count,
                mib(&before),
                mib(&after),
                each,
                if grown.len() > 1 { " per node" } else { "" },
                each / redis_each[p].max(1.0)
            );
        }
    }
}
