//! Durability with real processes: every node killed with SIGKILL at once right after a mixed
//! load, then restarted on its data; a whole-cluster graceful stop and start; hints that
//! survive a restart of the node holding them; and a damaged log that stops a node with a
//! message naming the file.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{BIN, DEADLINE, TestCluster};
use serde_json::{Value, json};
use tokio::sync::Mutex;

const IDS: [&str; 3] = ["n1", "n2", "n3"];

/// What the load had acknowledged.
#[derive(Default)]
struct Acked {
    lww: BTreeMap<String, String>,
    deleted: BTreeSet<String>,
    kv: BTreeMap<String, String>,
    counters: BTreeMap<String, i64>,
    sets: BTreeMap<String, BTreeSet<String>>,
    hash_fields: BTreeMap<String, BTreeMap<String, String>>,
    hash_counts: BTreeMap<String, i64>,
}

async fn ok(resp: reqwest::Result<reqwest::Response>) -> bool {
    resp.is_ok_and(|r| r.status().is_success())
}

/// One worker's share of the load: every key space, deletes included, round-robin over the
/// nodes; records what was acknowledged.
async fn load(c: Arc<TestCluster>, worker: usize, until: Instant, acked: Arc<Mutex<Acked>>) {
    let mut i = 0usize;
    while Instant::now() < until {
        let node = IDS[(worker + i) % IDS.len()];
        let base = c.base(node);
        let http = &c.http;
        match i % 6 {
            0 => {
                let key = format!("w{worker}-{i}");
                let value = format!("v{i}");
                let url = format!("{base}/lww/{key}");
                if ok(http.put(url).body(value.clone()).send().await).await {
                    acked.lock().await.lww.insert(key, value);
                }
            }
            1 => {
                let key = format!("k{worker}-{i}");
                let value = format!("kv{i}");
                let url = format!("{base}/kv/{key}");
                if ok(http.put(url).body(value.clone()).send().await).await {
                    acked.lock().await.kv.insert(key, value);
                }
            }
            2 => {
                let key = format!("c{}", i % 5);
                let url = format!("{base}/counter/{key}?delta=1");
                if ok(http.post(url).send().await).await {
                    *acked.lock().await.counters.entry(key).or_default() += 1;
                }
            }
            3 => {
                let key = format!("s{worker}");
                let member = format!("m{i}");
                let body = json!({ "add": [member] }).to_string();
                let url = format!("{base}/set/{key}");
                if ok(http.post(url).body(body).send().await).await {
                    acked
                        .lock()
                        .await
                        .sets
                        .entry(key)
                        .or_default()
                        .insert(member);
                }
            }
            4 => {
                let key = format!("h{worker}");
                let (field, value) = (format!("f{i}"), format!("x{i}"));
                let body = json!({ "set": { field.clone(): value.clone() }, "incr": { "n": 1 } })
                    .to_string();
                let url = format!("{base}/hash/{key}");
                if ok(http.post(url).body(body).send().await).await {
                    let mut a = acked.lock().await;
                    a.hash_fields
                        .entry(key.clone())
                        .or_default()
                        .insert(field, value);
                    *a.hash_counts.entry(key).or_default() += 1;
                }
            }
            _ if i % 12 == 11 => {}
            _ => {
                // Delete every other string, five steps after it was written.
                let key = format!("w{worker}-{}", i - 5);
                let url = format!("{base}/lww/{key}");
                if ok(http.delete(url).send().await).await {
                    let mut a = acked.lock().await;
                    a.lww.remove(&key);
                    a.deleted.insert(key);
                }
            }
        }
        i += 1;
    }
}

/// A write that must succeed: `PUT` of `body` at `path` on `node`.
async fn put_ok(c: &TestCluster, node: &str, path: String, body: String) {
    let url = format!("{}{path}", c.base(node));
    let resp = c.http.put(url).body(body).send().await.expect("put");
    assert!(resp.status().is_success(), "PUT {path}: {}", resp.status());
}

async fn get_text(c: &TestCluster, node: &str, path: &str) -> (u16, String) {
    let url = format!("{}{path}", c.base(node));
    match c.http.get(url).send().await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// Checks that everything `acked` holds reads back, from any node.
async fn check(c: &TestCluster, acked: &Acked) {
    let mut problems = Vec::new();
    for (i, (key, value)) in acked.lww.iter().enumerate() {
        let node = IDS[i % 3];
        let got = get_text(c, node, &format!("/lww/{key}")).await;
        if got != (200, value.clone()) {
            problems.push(format!("/lww/{key}: {got:?}, acknowledged {value:?}"));
        }
    }
    for key in &acked.deleted {
        let got = get_text(c, "n2", &format!("/lww/{key}")).await;
        if got.0 != 404 {
            problems.push(format!("/lww/{key} was deleted but reads {got:?}"));
        }
    }
    for (i, (key, value)) in acked.kv.iter().enumerate() {
        let got = get_text(c, IDS[i % 3], &format!("/kv/{key}")).await;
        if got != (200, value.clone()) {
            problems.push(format!("/kv/{key}: {got:?}, acknowledged {value:?}"));
        }
    }
    for (key, count) in &acked.counters {
        let got = get_text(c, "n3", &format!("/counter/{key}?r=all")).await;
        let value = serde_json::from_str::<Value>(&got.1)
            .ok()
            .and_then(|v| v["value"].as_i64());
        if value != Some(*count) {
            problems.push(format!(
                "/counter/{key}: {got:?}, acknowledged {count} increments"
            ));
        }
    }
    for (key, members) in &acked.sets {
        let got = get_text(c, "n1", &format!("/set/{key}")).await;
        let read: BTreeSet<String> = serde_json::from_str::<Value>(&got.1)
            .ok()
            .and_then(|v| serde_json::from_value(v["members"].clone()).ok())
            .unwrap_or_default();
        if !members.is_subset(&read) {
            let missing: Vec<_> = members.difference(&read).collect();
            problems.push(format!("/set/{key} lost {missing:?}"));
        }
    }
    for (key, fields) in &acked.hash_fields {
        let got = get_text(c, "n2", &format!("/hash/{key}")).await;
        let read: BTreeMap<String, String> = serde_json::from_str::<Value>(&got.1)
            .ok()
            .and_then(|v| serde_json::from_value(v["fields"].clone()).ok())
            .unwrap_or_default();
        for (f, v) in fields {
            if read.get(f) != Some(v) {
                problems.push(format!(
                    "/hash/{key} field {f}: {:?}, acknowledged {v}",
                    read.get(f)
                ));
            }
        }
        let n = read.get("n").and_then(|n| n.parse::<i64>().ok());
        if n != acked.hash_counts.get(key).copied() {
            problems.push(format!(
                "/hash/{key} field n: {n:?}, acknowledged {:?} increments",
                acked.hash_counts.get(key)
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems after the restart, first ones:\n{}\n{}",
        problems.len(),
        problems
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n"),
        c.all_logs()
    );
}

/// SIGKILL to every node at once.
fn kill_all(c: &mut TestCluster) {
    for child in c.procs.values_mut() {
        let _ = child.kill();
    }
    for (_, mut child) in std::mem::take(&mut c.procs) {
        let _ = child.wait();
    }
}

async fn mixed_load(c: TestCluster, seconds: u64) -> (TestCluster, Acked) {
    let c = Arc::new(c);
    let acked = Arc::new(Mutex::new(Acked::default()));
    let until = Instant::now() + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..4)
        .map(|w| tokio::spawn(load(c.clone(), w, until, acked.clone())))
        .collect();
    for w in workers {
        w.await.expect("load worker");
    }
    let c = Arc::into_inner(c).expect("no other owner of the cluster");
    let acked = Arc::into_inner(acked).expect("load done").into_inner();
    (c, acked)
}

async fn crash_everything_and_check(durability: &str) {
    let settings = format!("durability = \"{durability}\"");
    let mut c = TestCluster::with_settings(&format!("crash-{durability}"), 3, false, &settings);
    c.start_all(&IDS).await;
    let (mut c, acked) = mixed_load(c, 3).await;
    let increments: i64 = acked.counters.values().sum();
    assert!(
        acked.lww.len() > 20 && acked.deleted.len() > 20 && increments > 20,
        "too little load: {} strings, {} deletes, {increments} increments",
        acked.lww.len(),
        acked.deleted.len()
    );
    kill_all(&mut c);
    c.start_all(&IDS).await;
    for id in IDS.iter().filter(|_| durability != "memory") {
        assert!(
            c.log(id).contains("recovered"),
            "{id} did not say what it recovered:\n{}",
            c.log(id)
        );
    }
    check(&c, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_of_every_node_everysec() {
    crash_everything_and_check("everysec").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_of_every_node_always() {
    crash_everything_and_check("always").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_and_start_of_the_whole_cluster_keeps_everything() {
    // Small snapshots, so the restart reads a snapshot and the log after it.
    let mut c = TestCluster::with_settings("stop-start", 3, false, "snapshot_after_bytes = 65536");
    c.start_all(&IDS).await;
    let (mut c, acked) = mixed_load(c, 3).await;
    for id in IDS {
        assert!(c.terminate(id).success());
    }
    c.start_all(&IDS).await;
    let snapshots: usize = IDS
        .iter()
        .map(|id| c.log(id).matches("snapshot written").count())
        .sum();
    assert!(snapshots > 0, "no snapshot was written:\n{}", c.all_logs());
    check(&c, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hints_survive_a_restart_of_the_node_that_holds_them() {
    // No anti-entropy: only the hints can bring n3 what it missed.
    let mut c = TestCluster::with_settings("hints", 3, true, "anti_entropy_interval_ms = 0");
    c.start_all(&IDS).await;
    c.partition(&["n1", "n2"], &["n3"]).await;
    for i in 0..20 {
        put_ok(&c, "n1", format!("/lww/h{i}?w=2"), format!("v{i}")).await;
    }
    let held = c.metric("n1", "quorumkv_hints_pending").await;
    assert_eq!(held, 20.0, "n1 holds a hint per key for n3");
    // A hint is no client's write: the log writer puts it on the file within a few
    // milliseconds instead of making the request wait. Give it that time (generously, for a
    // loaded machine) before the crash, which is all `everysec` promises for a hint.
    tokio::time::sleep(Duration::from_secs(1)).await;
    // n1 restarts (and without its faults: they are not kept) and must still hold them.
    c.kill9("n1");
    for id in ["n2", "n3"] {
        assert_eq!(c.delete_faults(id).await, 204);
    }
    c.start("n1");
    c.until_healthy(&["n1"]).await;
    assert!(c.log("n1").contains("and 20 hints"), "{}", c.log("n1"));
    let start = Instant::now();
    loop {
        let keys = c
            .status("n3")
            .await
            .and_then(|s| s["store"]["keys"].as_u64());
        if keys == Some(20) {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "n3 has {keys:?} keys: n1 did not deliver its hints after its restart:\n{}",
            c.log("n1")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(c.metric("n1", "quorumkv_hints_delivered_total").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_log_stops_the_node_and_a_torn_end_is_cut() {
    let mut c = TestCluster::with_settings("damage", 1, false, "replicas = 1");
    c.start_all(&["n1"]).await;
    for i in 0..50 {
        put_ok(&c, "n1", format!("/lww/d{i}"), format!("value-{i}")).await;
    }
    c.kill9("n1");
    let data = c.dir.join("data").join("n1").join("data");
    let mut segments: Vec<_> = std::fs::read_dir(&data)
        .expect("data dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    let segment = segments.last().expect("a log segment").clone();
    let whole = std::fs::read(&segment).expect("read segment");
    assert!(whole.len() > 1000);

    // A torn end: the node starts and holds every record before it.
    std::fs::write(&segment, &whole[..whole.len() - 7]).expect("cut");
    c.start_all(&["n1"]).await;
    assert!(
        c.log("n1").contains("cut a torn end off"),
        "{}",
        c.log("n1")
    );
    for i in 0..49 {
        let got = get_text(&c, "n1", &format!("/lww/d{i}")).await;
        assert_eq!(got, (200, format!("value-{i}")));
    }
    c.kill9("n1");

    // A flipped byte in the middle: the node refuses to start and says what to do.
    let mut bad = std::fs::read(&segment).expect("read segment");
    let middle = bad.len() / 2;
    bad[middle] ^= 0x40;
    std::fs::write(&segment, &bad).expect("damage");
    let out = std::process::Command::new(BIN)
        .args(["node", "--config"])
        .arg(&c.config)
        .args(["--id", "n1"])
        .output()
        .expect("run node");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&segment.display().to_string()), "{stderr}");
    assert!(stderr.contains("Move"), "{stderr}");
}

/// Reads server-sent events from `response` until `want` events are in: (id, data JSON).
async fn read_events(response: &mut reqwest::Response, want: usize) -> Vec<(u64, Value)> {
    let mut events = Vec::new();
    let (mut line, mut id, mut data) = (Vec::new(), None, String::new());
    let deadline = Instant::now() + DEADLINE;
    while events.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, response.chunk())
            .await
            .unwrap_or_else(|_| panic!("only {} of {want} events arrived", events.len()))
            .expect("feed read")
            .expect("the feed ended");
        for &byte in chunk.iter() {
            if byte != b'\n' {
                line.push(byte);
                continue;
            }
            let text = String::from_utf8_lossy(&line).to_string();
            line.clear();
            if text.is_empty() {
                if let Some(id) = id.take() {
                    events.push((id, serde_json::from_str(&data).expect("event JSON")));
                }
                data.clear();
            } else if let Some(v) = text.strip_prefix("id:") {
                id = v.trim().parse().ok();
            } else if let Some(v) = text.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_feed_resumes_after_its_last_event_and_misses_nothing() {
    let mut c = TestCluster::with_settings("feed", 1, false, "replicas = 1");
    c.start_all(&["n1"]).await;
    let feed = reqwest::Client::new();
    let put = |i: usize| put_ok(&c, "n1", format!("/lww/f{}", i % 7), format!("v{i}"));
    // A consumer following from now on sees a write made after it connected.
    let mut live = feed
        .get(format!("{}/changes", c.base("n1")))
        .send()
        .await
        .expect("feed");
    assert_eq!(live.status(), 200);
    assert!(
        live.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    for i in 0..40 {
        put(i).await;
    }
    let first = read_events(&mut live, 40).await;
    drop(live);
    for (i, (_, event)) in first.iter().enumerate() {
        assert_eq!(event["space"], "lww");
        assert_eq!(event["key"], format!("f{}", i % 7));
        assert_eq!(event["deleted"], false);
        let value = base64_decode(event["value"].as_str().expect("value"));
        assert_eq!(
            value,
            format!("v{i}"),
            "each event shows the value its change wrote"
        );
    }
    // Writes while nobody listens, then a consumer resuming after the 25th event.
    for i in 40..60 {
        put(i).await;
    }
    let resume = first[24].0;
    let mut again = feed
        .get(format!("{}/changes", c.base("n1")))
        .header("Last-Event-ID", resume.to_string())
        .send()
        .await
        .expect("feed");
    let rest = read_events(&mut again, 35).await;
    let ids: Vec<u64> = first[..25].iter().chain(&rest).map(|(id, _)| *id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    let values: Vec<String> = first[..25]
        .iter()
        .chain(&rest)
        .map(|(_, e)| base64_decode(e["value"].as_str().expect("value")))
        .collect();
    let want: Vec<String> = (0..60).map(|i| format!("v{i}")).collect();
    assert_eq!(values, want, "every change once, in order");
    // since= works the same; a position that is no number is a 400.
    let mut since = feed
        .get(format!("{}/changes?since={}", c.base("n1"), rest[33].0))
        .send()
        .await
        .expect("feed");
    let last = read_events(&mut since, 1).await;
    assert_eq!(last[0].0, rest[34].0);
    let bad = feed
        .get(format!("{}/changes?since=soon", c.base("n1")))
        .send()
        .await
        .expect("feed");
    assert_eq!(bad.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_compacted_away_is_gone_with_the_oldest_position() {
    let mut c = TestCluster::with_settings(
        "feed-gone",
        1,
        false,
        "replicas = 1\nsnapshot_after_bytes = 65536",
    );
    c.start_all(&["n1"]).await;
    let value = "x".repeat(1000);
    for i in 0..400 {
        put_ok(&c, "n1", format!("/lww/g{i}"), value.clone()).await;
    }
    let start = Instant::now();
    let body = loop {
        let resp = c
            .http
            .get(format!("{}/changes?since=1", c.base("n1")))
            .send()
            .await
            .expect("feed");
        if resp.status() == 410 {
            break resp.json::<Value>().await.expect("json");
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the log was never compacted\n{}",
            c.log("n1")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(body["error"], "gone");
    let oldest = body["oldest"].as_u64().expect("oldest");
    assert!(oldest > 2, "{body}");
    // From the oldest kept on, the feed still serves.
    let mut feed = c
        .http
        .get(format!("{}/changes?since=0", c.base("n1")))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("feed");
    assert_eq!(feed.status(), 200);
    let events = read_events(&mut feed, 1).await;
    assert!(events[0].0 >= oldest);
}

fn base64_decode(text: &str) -> String {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64");
    String::from_utf8(bytes).expect("utf-8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_stays_removed_after_the_whole_cluster_restarts() {
    let mut c = TestCluster::new("removed", 3, false);
    c.start_all(&IDS).await;
    c.kill9("n3");
    c.until_states(&["n1", "n2"], &["n3"], "dead").await;
    let url = format!("{}/admin/members/n3", c.base("n1"));
    let resp = c.http.delete(url).send().await.expect("remove");
    assert!(resp.status().is_success(), "{:?}", resp.text().await);
    c.until_states(&["n1", "n2"], &["n3"], "left").await;
    // A moment for the removal to reach n2's log (it learns it by gossip).
    tokio::time::sleep(Duration::from_millis(500)).await;
    kill_all(&mut c);
    for id in ["n1", "n2"] {
        c.start(id);
    }
    c.until_states(&["n1", "n2"], &["n1", "n2"], "alive").await;
    for id in ["n1", "n2"] {
        let status = c.status(id).await.expect("status");
        let n3 = status["members"]
            .as_array()
            .expect("members")
            .iter()
            .find(|m| m["id"] == "n3")
            .cloned()
            .expect("n3 listed");
        assert_eq!(n3["state"], "left", "{id} sees n3 as {n3}\n{}", c.log(id));
        assert_eq!(n3["ring_share"], 0.0, "{id}: {n3}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorumkv_changes_prints_the_feed_as_json_lines() {
    let mut c = TestCluster::with_settings("feed-cli", 1, false, "replicas = 1");
    c.start_all(&["n1"]).await;
    for (i, space) in ["lww", "counter"].iter().enumerate() {
        let url = match *space {
            "lww" => format!("{}/lww/cli-key", c.base("n1")),
            _ => format!("{}/counter/cli-count?delta=4", c.base("n1")),
        };
        let req = if i == 0 {
            c.http.put(url).body("hello")
        } else {
            c.http.post(url)
        };
        assert!(req.send().await.expect("write").status().is_success());
    }
    let mut child = tokio::process::Command::new(BIN)
        .args(["changes", "--node", &c.base("n1"), "--since", "0"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("quorumkv changes");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let line = tokio::time::timeout(DEADLINE, lines.next_line())
            .await
            .expect("a line in time")
            .expect("read")
            .expect("the command ended early");
        seen.push(serde_json::from_str::<Value>(&line).expect("a JSON line"));
    }
    assert_eq!(seen[0]["key"], "cli-key");
    assert_eq!(seen[0]["space"], "lww");
    assert_eq!(
        base64_decode(seen[0]["value"].as_str().expect("value")),
        "hello"
    );
    assert_eq!(seen[1]["space"], "counter");
    assert_eq!(seen[1]["value"], 4);
    assert!(seen[0]["id"].as_u64() < seen[1]["id"].as_u64());
    let _ = child.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_persistence_reports_the_log() {
    let mut c = TestCluster::with_settings("info", 1, false, "replicas = 1");
    c.start_all(&["n1"]).await;
    put_ok(&c, "n1", "/lww/i".into(), "v".into()).await;
    let out = std::process::Command::new("redis-cli")
        .args([
            "-p",
            &c.node("n1").resp.port().to_string(),
            "INFO",
            "persistence",
        ])
        .output()
        .expect("redis-cli");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("aof_enabled:1"), "{text}");
    assert!(text.contains("aof_last_write_status:ok"), "{text}");
    let size: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("aof_current_size:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("aof_current_size");
    assert!(size > 0, "{text}");
}
