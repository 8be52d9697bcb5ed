//! Many clients at once, and a client that sends without reading its replies, against a real
//! `quorumkv node` over RESP.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::TestCluster;

fn resident_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn line(reader: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).expect("reply");
    line
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_clients_are_served_at_once() {
    let mut c = TestCluster::with_settings("conns", 1, false, "replicas = 1");
    c.start_all(&["n1"]).await;
    let addr = c.node("n1").resp;
    let clients = tokio::task::spawn_blocking(move || {
        let mut open = Vec::new();
        for i in 0..2000 {
            let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("client {i}: {e}"));
            s.set_read_timeout(Some(Duration::from_secs(30))).ok();
            open.push(s);
        }
        // Every one of them, still open, is answered.
        for (i, s) in open.iter_mut().enumerate() {
            s.write_all(&command(&[b"PING"])).expect("send");
            let mut reply = [0u8; 7];
            s.read_exact(&mut reply)
                .unwrap_or_else(|e| panic!("client {i} got no PONG: {e}"));
            assert_eq!(&reply, b"+PONG\r\n", "client {i}");
        }
        let mut reader = BufReader::new(open[0].try_clone().expect("clone"));
        open[0]
            .write_all(&command(&[b"INFO", b"clients"]))
            .expect("send");
        let header = line(&mut reader);
        let len: usize = header[1..].trim().parse().expect("bulk length");
        let mut body = vec![0; len + 2];
        reader.read_exact(&mut body).expect("INFO body");
        let info = String::from_utf8_lossy(&body).to_string();
        drop(open);
        info
    })
    .await
    .expect("clients");
    let connected: u64 = clients
        .lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        connected >= 2000,
        "INFO clients says {connected}:\n{clients}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_its_replies_is_not_buffered_without_bound() {
    let mut c = TestCluster::with_settings("stall", 1, false, "replicas = 1");
    c.start_all(&["n1"]).await;
    let addr = c.node("n1").resp;
    let pid = c.procs["n1"].id();
    // One 512 KiB value, then 20,000 GETs of it sent without reading a reply: 10 GiB of
    // replies asked for.
    let value = vec![b'x'; 512 * 1024];
    let mut setter = TcpStream::connect(addr).expect("connect");
    setter
        .write_all(&command(&[b"SET", b"big", &value]))
        .expect("SET");
    let mut ok = [0u8; 5];
    setter.read_exact(&mut ok).expect("SET reply");
    assert_eq!(&ok, b"+OK\r\n");
    let before = resident_kib(pid);
    let greedy = TcpStream::connect(addr).expect("connect");
    let mut sender = greedy.try_clone().expect("clone");
    let gets: Vec<u8> = (0..20_000)
        .flat_map(|_| command(&[b"GET", b"big"]))
        .collect();
    // Blocks once the node stops reading: that is the point.
    std::thread::spawn(move || {
        let _ = sender.write_all(&gets);
    });
    let start = Instant::now();
    let mut peak = before;
    while start.elapsed() < Duration::from_secs(8) {
        peak = peak.max(resident_kib(pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let grown_mib = peak.saturating_sub(before) / 1024;
    // About 64 replies at a time (32 MiB) and what the socket buffers hold; a node reading
    // on would hold gigabytes.
    assert!(
        grown_mib < 160,
        "the node grew by {grown_mib} MiB for a client that reads nothing"
    );
    // Everyone else is still served.
    setter.write_all(&command(&[b"PING"])).expect("PING");
    let mut pong = [0u8; 7];
    setter.read_exact(&mut pong).expect("PONG");
    assert_eq!(&pong, b"+PONG\r\n");
    drop(greedy);
}
