//! Zones as regions, with real `quorumkv node` processes: `local_quorum` and `each_quorum`
//! over HTTP and RESP, a zone cut off (the other keeps serving at `local_quorum`, and the cut
//! one catches up after the heal), with `zone_delay_ms` standing in for the distance.

mod common;

use std::time::{Duration, Instant};

use common::{DEADLINE, TestCluster};
use quorumkv::config::Quorum;
use quorumkv::ops::Consistency;

// config_text puts odd nodes in zone-a and even ones in zone-b.
const ZONE_A: [&str; 2] = ["n1", "n3"];
const ZONE_B: [&str; 2] = ["n2", "n4"];
const ALL: [&str; 4] = ["n1", "n2", "n3", "n4"];

fn q(w: &str, r: &str) -> Consistency {
    Consistency {
        w: Some(Quorum::parse(w).expect("w")),
        r: Some(Quorum::parse(r).expect("r")),
        timeout_ms: Some(1500),
        ..Consistency::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_quorum_keeps_each_zone_available_and_the_cut_zone_catches_up() {
    let mut c = TestCluster::with_settings("zones", 4, true, "zone_delay_ms = 80");
    c.start_all(&ALL).await;
    let local = q("local_quorum", "local_quorum");

    // Every form works over HTTP, and bad names are a 400 listing the good ones.
    let a = c.client("n1");
    for form in ["local_quorum", "each_quorum", "quorum"] {
        a.lww_put("k", form, None, &q(form, form))
            .await
            .unwrap_or_else(|e| panic!("w={form}: {e}"));
        let got = a.lww_get("k", &q(form, form)).await.expect("read");
        assert_eq!(got.as_deref(), Some(form.as_bytes()));
    }
    let url = format!("{}/lww/k?w=local_quorums", c.base("n1"));
    let resp = c.http.get(url).send().await.expect("get");
    assert_eq!(resp.status().as_u16(), 400);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("local_quorum")
    );

    // Zone b is cut off from zone a.
    c.partition(&ZONE_A, &ZONE_B).await;
    for (side, ids) in [("a", ZONE_A), ("b", ZONE_B)] {
        for id in ids {
            let client = c.client(id);
            for i in 0..20 {
                let key = format!("{side}-{id}-{i}");
                client
                    .lww_put(&key, "v", None, &local)
                    .await
                    .unwrap_or_else(|e| panic!("{id} local_quorum write of {key}: {e}"));
                let got = client.lww_get(&key, &local).await.expect("local read");
                assert_eq!(got.as_deref(), Some(&b"v"[..]), "{id} reads its own zone");
                client.counter_add("hits", 1, &local).await.expect("incr");
            }
            let e = client
                .lww_put("each", "v", None, &q("each_quorum", "each_quorum"))
                .await
                .expect_err("each_quorum across a cut");
            assert_eq!(e.status(), Some(503), "{e}");
            assert!(e.to_string().contains("zone"), "{e}");
        }
    }

    // Healed, zone b catches up on what zone a wrote (and back): a read at each_quorum
    // from anywhere sees every write, and so does a read confined to zone b.
    c.heal().await;
    c.until_states(&ALL, &ALL, "alive").await;
    let each = q("each_quorum", "each_quorum");
    let start = Instant::now();
    let b = c.client("n2");
    loop {
        let mut missing = Vec::new();
        for side in ["a", "b"] {
            let ids = if side == "a" { ZONE_A } else { ZONE_B };
            for id in ids {
                for i in 0..20 {
                    let key = format!("{side}-{id}-{i}");
                    if b.lww_get(&key, &local).await.ok().flatten().is_none() {
                        missing.push(key);
                    }
                }
            }
        }
        let hits = b.counter_get("hits", &each).await.ok();
        if missing.is_empty() && hits == Some(80) {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "zone b still misses {missing:?}, hits {hits:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp_connections_take_zone_quorums() {
    let mut c = TestCluster::with_settings("zonesresp", 4, true, "zone_delay_ms = 20");
    c.start_all(&ALL).await;
    let url = format!("redis://{}/", c.node("n2").resp);
    let mut con = redis::Client::open(url)
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let ok: String = redis::cmd("QUORUM")
        .arg("3")
        .arg("local_quorum")
        .arg("local_quorum")
        .query_async(&mut con)
        .await
        .expect("QUORUM with zone forms");
    assert_eq!(ok, "OK");
    let _: () = redis::cmd("SET")
        .arg("r")
        .arg("v")
        .query_async(&mut con)
        .await
        .expect("set");
    let got: Option<String> = redis::cmd("GET")
        .arg("r")
        .query_async(&mut con)
        .await
        .expect("get");
    assert_eq!(got.as_deref(), Some("v"));
    c.partition(&ZONE_A, &ZONE_B).await;
    let _: () = redis::cmd("SET")
        .arg("r")
        .arg("w")
        .query_async(&mut con)
        .await
        .expect("local_quorum set with zone a cut off");
    let e = redis::cmd("QUORUM")
        .arg("3")
        .arg("each_quorum")
        .arg("one")
        .query_async::<String>(&mut con)
        .await;
    assert!(e.is_ok());
    let e = redis::cmd("SET")
        .arg("r")
        .arg("x")
        .query_async::<()>(&mut con)
        .await
        .expect_err("each_quorum with a zone cut off");
    assert!(e.to_string().contains("QUORUM"), "{e}");
}
