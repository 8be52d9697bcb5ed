//! Writes the seed corpus of the fuzz targets into `tests/fuzz/corpus/<target>/`: a few valid
//! inputs of each, made by quorumkv's own encoders (rpc frames, log frames and records,
//! snapshots, context tokens, gossip packets), so that libFuzzer starts from what nodes really
//! exchange and store. Run it again after a change of a wire or disk format:
//!
//! ```sh
//! cargo +nightly run --manifest-path tests/fuzz/Cargo.toml --example seeds
//! ```

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use quorumkv::causality::{CausalContext, Dot, Timestamp};
use quorumkv::crdt::typed::{Number, TtlChange};
use quorumkv::crdt::{MvRegister, PnCounter, TypedValue, Version};
use quorumkv::http::token::ContextTokens;
use quorumkv::membership::{GossipConfig, Membership, NodeInfo};
use quorumkv::ring::RingArc;
use quorumkv::rpc::{self, OneWay, Request, Response};
use quorumkv::storage::journal::{self, Record};
use quorumkv::storage::merkle::{MerkleDiff, MerkleTree};
use quorumkv::storage::{Key, Kind, MemStore, Store, StoreOptions, Value};
use quorumkv::tls::secret::ClusterSecret;
use quorumkv::wal::{SnapshotWriter, frame};

const NOW: u64 = 1_790_000_000_000;
/// The Merkle depth the peer_frame seeds ask for (their control byte).
const DEPTH: u8 = 4;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    resp(&root.join("resp_parse"));
    http(&root.join("http_params"));
    peer(&root.join("peer_frame"));
    log(&root.join("log_record"));
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

/// A command as clients send it: an array of bulk strings.
fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn resp(dir: &Path) {
    // Control byte: value limit (low 3 bits: 0 is the default 1 MiB, 2 is 16 bytes), reads of
    // (bits 3-5: 0 all at once, 1 one byte, 4 seven bytes).
    let seed = |name: &str, ctl: u8, wire: &[u8]| {
        let mut bytes = vec![ctl];
        bytes.extend_from_slice(wire);
        write(dir, name, &bytes);
    };
    seed("set", 0, &command(&[b"SET", b"colour", b"blue"]));
    seed(
        "set-options",
        0,
        &command(&[b"SET", b"k", b"v", b"EX", b"10", b"NX", b"GET"]),
    );
    seed("get", 0, &command(&[b"GET", b"colour"]));
    let mut pipeline = command(&[b"PING"]);
    pipeline.extend(command(&[b"INCRBY", b"visits", b"5"]));
    pipeline.extend(command(&[b"MGET", b"a", b"b", b"c"]));
    seed("pipeline", 0, &pipeline);
    seed("pipeline-bytewise", 1 << 3, &pipeline);
    let mut multi = command(&[b"MULTI"]);
    multi.extend(command(&[b"SADD", b"s", b"x", b"y"]));
    multi.extend(command(&[b"HSET", b"h", b"f", b"v"]));
    multi.extend(command(&[b"EXEC"]));
    seed("multi", 4 << 3, &multi);
    seed(
        "scan",
        0,
        &command(&[b"SCAN", b"0", b"MATCH", b"user:*", b"COUNT", b"100"]),
    );
    seed(
        "hello",
        0,
        &command(&[b"HELLO", b"3", b"AUTH", b"app", b"secret"]),
    );
    seed("inline", 0, b"PING hello\r\n\r\nQUIT\r\n");
    // Not only bulk strings: the codec's path.
    seed("codec", 0, b"*3\r\n+SET\r\n:1\r\n$1\r\nv\r\n");
    // An argument longer than 16 bytes, refused at its header and skipped; a PING after it.
    let mut oversized = command(&[b"SET", b"k", &[b'x'; 40], b"EX", b"5"]);
    oversized.extend(command(&[b"PING"]));
    seed("oversized-skipped", 2 | (4 << 3), &oversized);
}

fn http(dir: &Path) {
    let tokens = ContextTokens::new(ClusterSecret::from_bytes([7; 32]));
    let mut ctx = CausalContext::new();
    ctx.insert(Dot::new("n1.1a2", 1));
    ctx.insert(Dot::new("n2.1a5", 3)); // out of order: in the cloud
    let signed = tokens.issue("kv", "colour", &ctx);
    let seed = |name: &str, query: &str, header: &str, key: &str| {
        write(dir, name, format!("{query}\n{header}\n{key}").as_bytes());
    };
    seed(
        "kv-put",
        "w=2&r=quorum&timeout_ms=500&sloppy=false&ttl=10",
        &signed,
        "colour",
    );
    seed("kv-get", "r=2&n=3", "", "colour");
    seed("zones", "w=local_quorum&r=each_quorum", "", "k");
    seed("counter", "delta=-3&w=all", "", "visits");
    seed("encoded", "w=%32&sloppy=tr%75e&ttl=+5", " \t", "a%2Fb");
    seed("unsigned-context", "", &ctx.to_token(), "colour");
    seed("typo", "ww=2&w=2&w=3", &CausalContext::new().to_token(), "");
}

fn typed_values() -> Vec<Value> {
    let ts = Timestamp {
        millis: NOW,
        logical: 2,
        node: "n1".into(),
    };
    let string = TypedValue::new().set_string(
        Bytes::from_static(b"blue"),
        TtlChange::At(NOW + 10_000),
        &ts,
        NOW,
    );
    let (set, _, _) = TypedValue::new()
        .update_set(
            "n1.1a2",
            &[Bytes::from_static(b"x"), Bytes::from_static(b"y")],
            &[],
            &ts,
            NOW,
        )
        .unwrap();
    let (hash, ..) = TypedValue::new()
        .update_hash(
            "n1.1a2",
            &[(Bytes::from_static(b"f"), Bytes::from_static(b"v"))],
            &[(Bytes::from_static(b"n"), Number::Int(4))],
            &[],
            &ts,
            NOW,
        )
        .unwrap();
    [string, set, hash]
        .into_iter()
        .map(|v| Value::Typed(Box::new(v)))
        .collect()
}

/// A key and a value of each kind.
fn values() -> Vec<(Key, Value)> {
    let kv = MvRegister::new()
        .write(
            "n1.1a2",
            &CausalContext::new(),
            Version::new(Bytes::from_static(b"blue"), Some(NOW + 60_000)),
        )
        .unwrap();
    let counter = PnCounter::new().add("n1.1a2", 5).unwrap();
    let mut out = vec![
        (Key::new(Kind::Kv, "colour"), Value::Kv(Box::new(kv))),
        (Key::new(Kind::Counter, "visits"), Value::Counter(counter)),
    ];
    for (i, v) in typed_values().into_iter().enumerate() {
        out.push((Key::new(Kind::Typed, format!("typed{i}")), v));
    }
    out
}

fn peer(dir: &Path) {
    let seed = |name: &str, frame: Vec<u8>| {
        let mut bytes = vec![DEPTH];
        bytes.extend(frame);
        write(dir, name, &bytes);
    };
    let values = values();
    let ts = Timestamp {
        millis: NOW,
        logical: 0,
        node: "n2".into(),
    };
    let requests: Vec<(&str, Request)> = vec![
        ("ping", Request::Ping),
        (
            "read",
            Request::Read(rpc::Read {
                key: values[0].0.clone(),
            }),
        ),
        (
            "merge-kv",
            Request::Merge(rpc::Merge {
                key: values[0].0.clone(),
                value: values[0].1.clone(),
                reply_state: true,
            }),
        ),
        (
            "merge-counter",
            Request::Merge(rpc::Merge {
                key: values[1].0.clone(),
                value: values[1].1.clone(),
                reply_state: false,
            }),
        ),
        (
            "hint",
            Request::Hint(rpc::Hint {
                owner: "n3".into(),
                key: values[2].0.clone(),
                value: values[2].1.clone(),
            }),
        ),
        (
            "merge-batch",
            Request::MergeBatch(rpc::MergeBatch {
                items: values.clone(),
            }),
        ),
        (
            "read-batch",
            Request::ReadBatch(rpc::ReadBatch {
                keys: values.iter().map(|(k, _)| k.clone()).collect(),
            }),
        ),
        (
            "arc-hashes",
            Request::ArcHashes(rpc::ArcHashes {
                arcs: vec![
                    RingArc::FULL,
                    RingArc {
                        after: 1 << 62,
                        upto: 3 << 62,
                    },
                ],
            }),
        ),
        (
            "scan-keys",
            Request::ScanKeys(rpc::ScanKeys {
                kind: Kind::Typed,
                from: 0,
                upto: u64::MAX,
                limit: 100,
                flushed: Some(ts.clone()),
            }),
        ),
        ("clock-now", Request::ClockNow(rpc::ClockNow)),
        ("flush", Request::Flush(rpc::Flush { before: ts })),
    ];
    let mut batch = Vec::new();
    for (name, req) in &requests {
        let bytes = rpc::encode(req).unwrap();
        if batch.len() < 4 {
            batch.push(Bytes::from(bytes.clone()));
        }
        seed(name, bytes);
    }
    seed(
        "batch",
        rpc::encode(&Request::Batch(batch.clone())).unwrap(),
    );
    // A Merkle query of a tree of the replica's depth, and an answer to one.
    let store = MemStore::new(StoreOptions {
        merkle_depth: DEPTH,
        ..StoreOptions::default()
    });
    for (k, v) in &values {
        store.absorb(k, v, NOW).unwrap();
    }
    let empty = MerkleTree::<Key>::new(DEPTH);
    let diff = MerkleDiff::new(&empty, RingArc::FULL);
    let query = diff.query().unwrap().clone();
    seed(
        "merkle-step",
        rpc::encode(&Request::MerkleStep(rpc::MerkleStep {
            query: query.clone(),
        }))
        .unwrap(),
    );
    let answer = store.merkle().answer(&query).unwrap();
    seed(
        "merkle-answer",
        rpc::encode(&Response::Merkle(answer)).unwrap(),
    );
    let responses = vec![
        ("pong", Response::Pong { node: "n2".into() }),
        ("state", Response::State(Some(values[0].1.clone()))),
        (
            "states",
            Response::States(vec![Some(values[4].1.clone()), None]),
        ),
        ("response-batch", Response::Batch(batch)),
    ];
    for (name, r) in responses {
        seed(name, rpc::encode(&r).unwrap());
    }
    // Gossip: what a member that joins sends, as a frame and as a bare packet.
    for (i, packet) in gossip().into_iter().enumerate() {
        seed(
            &format!("gossip-{i}"),
            rpc::encode(&OneWay::Gossip(packet.clone())).unwrap(),
        );
        seed(&format!("gossip-packet-{i}"), packet.to_vec());
    }
}

fn node(id: &str, last: u8) -> NodeInfo {
    NodeInfo::simulated(id, Ipv4Addr::new(10, 0, 0, last), "zone-a", 128, 1)
}

/// Packets n2 and n3 send to n1 while they join it.
fn gossip() -> Vec<Bytes> {
    let mut n1 = Membership::new(node("n1", 1), &[], GossipConfig::default(), 1);
    let mut n2 = Membership::new(node("n2", 2), &[], GossipConfig::default(), 2);
    let mut to_n1: Vec<Bytes> = n2
        .announce(node("n1", 1))
        .sends
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let mut to_n2 = Vec::new();
        for p in to_n1.drain(..) {
            to_n2.extend(n1.handle_data("n2", &p).unwrap().sends);
            seen.push(p);
        }
        for (to, p) in to_n2 {
            if to.id == "n2" {
                to_n1.extend(
                    n2.handle_data("n1", &p)
                        .unwrap()
                        .sends
                        .into_iter()
                        .filter(|(to, _)| to.id == "n1")
                        .map(|(_, p)| p),
                );
            }
        }
    }
    seen.truncate(4);
    seen
}

/// The records a node logs, one of each.
fn records() -> Vec<Record> {
    let values = values();
    let ts = Timestamp {
        millis: NOW,
        logical: 1,
        node: "n1".into(),
    };
    vec![
        Record::Clock {
            millis: NOW + 5_000,
        },
        Record::Merge {
            key: values[0].0.clone(),
            value: values[0].1.clone(),
        },
        Record::State {
            key: values[1].0.clone(),
            value: values[1].1.clone(),
        },
        Record::Merge {
            key: values[3].0.clone(),
            value: values[3].1.clone(),
        },
        Record::Hint {
            owner: "n3".into(),
            key: values[4].0.clone(),
            value: values[4].1.clone(),
            created_ms: NOW - 1_000,
        },
        Record::HintGone {
            owner: "n3".into(),
            key: values[4].0.clone(),
        },
        Record::Forget {
            key: values[0].0.clone(),
        },
        Record::Flush { before: ts },
        Record::Removed {
            id: "n4".into(),
            generation: 2,
            info: rmp_serde::to_vec(&node("n4", 4)).unwrap(),
        },
    ]
}

fn payload(record: &Record) -> Vec<u8> {
    let mut buf = Vec::new();
    journal::encode(record, &mut buf);
    buf
}

fn log(dir: &Path) {
    let records = records();
    // Mode 1: one record's payload.
    for (i, r) in records.iter().enumerate() {
        let mut bytes = vec![1];
        bytes.extend(payload(r));
        write(dir, &format!("record-{i}"), &bytes);
    }
    // Mode 0: a segment whose first record is position 1.
    let mut segment = Vec::new();
    for (i, r) in records.iter().enumerate() {
        frame::push(&mut segment, i as u64 + 1, |buf| journal::encode(r, buf));
    }
    let mut bytes = vec![0];
    bytes.extend(&segment);
    write(dir, "segment", &bytes);
    let mut torn = bytes.clone();
    torn.truncate(torn.len() - 7);
    write(dir, "segment-torn", &torn);
    // Mode 2: a snapshot covering position 4 (its first three records) and the segment from 3.
    let snapshot = snapshot_file(&records[..3], 4);
    let mut from_three = Vec::new();
    for (i, r) in records.iter().enumerate().skip(2) {
        frame::push(&mut from_three, i as u64 + 1, |buf| journal::encode(r, buf));
    }
    let mut bytes = vec![2, 4, 3];
    bytes.extend((snapshot.len() as u16).to_le_bytes());
    bytes.extend(&snapshot);
    bytes.extend(&from_three);
    write(dir, "files", &bytes);
    let mut bytes = vec![2, 0, 1, 0, 0];
    bytes.extend(&segment);
    write(dir, "files-segment-only", &bytes);
    // Mode 3: the same, framed by the target itself.
    let mut bytes = vec![3, 4, 3];
    for (i, r) in records.iter().enumerate() {
        let p = payload(r);
        let tag = u8::from(i < 3);
        bytes.push(tag);
        bytes.extend((p.len() as u16).to_le_bytes());
        bytes.extend(p);
    }
    write(dir, "records", &bytes);
}

/// A snapshot of `records` as the crate writes one, covering `covers`.
fn snapshot_file(records: &[Record], covers: u64) -> Vec<u8> {
    let dir: PathBuf = std::env::temp_dir().join(format!("qkv-seeds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut writer = SnapshotWriter::create(&dir, covers).unwrap();
    for r in records {
        writer.push(|buf| journal::encode(r, buf)).unwrap();
    }
    writer.finish().unwrap();
    let path = quorumkv::wal::snapshot::snapshot_path(&dir, covers);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    bytes
}
