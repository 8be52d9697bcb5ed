//! Where a node's memory goes: starts one node (N=1) built with the `heap-profile` feature
//! (dhat as its allocator), writes keys into it over RESP, stops it, and prints what was live
//! at the heap's peak grouped by the quorumkv function that allocated it, in bytes per key.
//!
//! `make heap-profile` builds the node and runs this; alone:
//! `cargo run --example heap_profile -- path/to/quorumkv [strings|sets|hashes] [count]`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_addr() -> SocketAddr {
    // Held only while the next is picked; the node binds it a moment later.
    let probe = TcpListener::bind("127.0.0.1:0").expect("bind");
    probe.local_addr().expect("addr")
}

fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    let _ = write!(out, "*{}\r\n", args.len());
    for a in args {
        let _ = write!(out, "${}\r\n", a.len());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// The `i`-th write of `what`.
fn write_one(what: &str, i: usize, out: &mut Vec<u8>) {
    match what {
        "sets" => {
            let key = format!("set:{i:06}");
            let members: Vec<String> = (0..10).map(|m| format!("member:{m}")).collect();
            let mut args: Vec<&[u8]> = vec![b"SADD", key.as_bytes()];
            args.extend(members.iter().map(|m| m.as_bytes()));
            command(out, &args);
        }
        "hashes" => {
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
        _ => {
            let key = format!("key:{i:07}");
            let value = format!("{i:064}");
            command(out, &[b"SET", key.as_bytes(), value.as_bytes()]);
        }
    }
}

fn load(addr: SocketAddr, what: &str, count: usize) {
    let stream = TcpStream::connect(addr).expect("connect");
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let mut sent = 0;
    while sent < count {
        let batch = 500.min(count - sent);
        let mut out = Vec::new();
        for i in sent..sent + batch {
            write_one(what, i, &mut out);
        }
        writer.write_all(&out).expect("send");
        for _ in 0..batch {
            line.clear();
            reader.read_line(&mut line).expect("reply");
            assert!(
                line.starts_with('+') || line.starts_with(':'),
                "node answered {line:?}"
            );
        }
        sent += batch;
    }
}

/// The first frames of a program point that are quorumkv's own code, shortened.
fn site(frames: &[&str]) -> String {
    let ours: Vec<String> = frames
        .iter()
        .filter(|f| f.contains("quorumkv::"))
        .take(2)
        .map(|f| {
            let f = f.split_once(": ").map_or(*f, |(_, rest)| rest);
            let f = f.split(" (").next().unwrap_or(f);
            f.replace("quorumkv::", "")
        })
        .collect();
    if ours.is_empty() {
        "(outside quorumkv)".to_string()
    } else {
        ours.join(" <- ")
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let bin = args
        .next()
        .expect("usage: heap_profile QUORUMKV [what] [count]");
    let what = args.next().unwrap_or_else(|| "strings".into());
    let count: usize = args.next().and_then(|c| c.parse().ok()).unwrap_or(100_000);
    let dir = std::env::temp_dir().join(format!("quorumkv-heap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let peer = UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("udp");
    let (http, resp) = (free_addr(), free_addr());
    let config = dir.join("cluster.toml");
    std::fs::write(
        &config,
        format!(
            "[cluster]\nname = \"heap\"\nreplicas = 1\ndata_dir = \"data\"\n\
             durability = \"memory\"\n\n[[node]]\nid = \"n1\"\nzone = \"z\"\n\
             peer = \"{peer}\"\nhttp = \"{http}\"\nresp = \"{resp}\"\n"
        ),
    )
    .expect("config");
    let run = |args: &[&str]| {
        let mut command = Command::new(&bin);
        command
            .args(args)
            .arg("--config")
            .arg(&config)
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        command
    };
    assert!(run(&["certs"]).status().expect("certs").success());
    let mut node = run(&["node"])
        .args(["--id", "n1"])
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("start node");
    let start = Instant::now();
    while TcpStream::connect(resp).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "node never listened"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    load(resp, &what, count);
    let _ = Command::new("kill")
        .args(["-TERM", &node.id().to_string()])
        .status();
    let _ = node.wait();
    let json = std::fs::read_to_string(dir.join("dhat-heap.json"))
        .expect("dhat-heap.json (was the node built with --features heap-profile?)");
    let profile: serde_json::Value = serde_json::from_str(&json).expect("dhat json");
    let frames: Vec<&str> = profile["ftbl"]
        .as_array()
        .map(|a| a.iter().filter_map(|f| f.as_str()).collect())
        .unwrap_or_default();
    let mut by_site: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut total = 0;
    for pp in profile["pps"].as_array().into_iter().flatten() {
        let bytes = pp["gb"].as_u64().unwrap_or(0);
        let blocks = pp["gbk"].as_u64().unwrap_or(0);
        if bytes == 0 {
            continue;
        }
        total += bytes;
        let fs: Vec<&str> = pp["fs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i.as_u64())
            .filter_map(|i| frames.get(i as usize).copied())
            .collect();
        let e = by_site.entry(site(&fs)).or_default();
        e.0 += bytes;
        e.1 += blocks;
    }
    let mut rows: Vec<(String, (u64, u64))> = by_site.into_iter().collect();
    rows.sort_by_key(|row| std::cmp::Reverse(row.1.0));
    println!(
        "{count} {what}: {:.1} MiB live at the peak, {:.0} bytes per key\n",
        total as f64 / 1048576.0,
        total as f64 / count as f64
    );
    println!("| bytes per key | blocks per key | allocated in |");
    println!("| --- | --- | --- |");
    for (site, (bytes, blocks)) in rows.iter().take(20) {
        println!(
            "| {:.1} | {:.2} | `{site}` |",
            *bytes as f64 / count as f64,
            *blocks as f64 / count as f64
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
