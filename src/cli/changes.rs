//! `quorumkv changes --node URL [--since ID]`: a node's change feed as JSON lines, one per
//! change (`{"id": 17, "space": "lww", "key": "a", "deleted": false, "value": "..."}`). It
//! reconnects after a dropped connection and resumes after the last change it printed.

use std::io::Write;
use std::time::Duration;

use serde_json::Value as Json;

use crate::client::{Access, https_config};

/// One server-sent event being read.
#[derive(Default)]
struct Pending {
    id: Option<u64>,
    event: Option<String>,
    data: String,
}

/// Follows the feed of `node` from after `since` (from the oldest change kept with 0; from
/// now on without it) until stdout closes or the node answers an error.
pub async fn follow(node: &str, since: Option<u64>, access: &Access) -> Result<(), String> {
    let base = if node.contains("://") {
        node.trim_end_matches('/').to_string()
    } else {
        format!("http://{}", node.trim_end_matches('/'))
    };
    let mut builder = reqwest::Client::builder();
    if let Some(config) = https_config(access).map_err(|e| e.to_string())? {
        builder = builder.use_preconfigured_tls(config);
    }
    let http = builder.build().map_err(|e| e.to_string())?;
    let mut last = since;
    loop {
        let mut request = http.get(format!("{base}/changes"));
        if let Some(c) = &access.user {
            request = request.basic_auth(&c.user, Some(&c.password));
        }
        if let Some(id) = last {
            request = request.query(&[("since", id)]);
        }
        let mut response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("quorumkv changes: {base}: {e}; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if !response.status().is_success() {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            return Err(format!("{base}/changes answered {status}: {body}"));
        }
        let mut line = Vec::new();
        let mut event = Pending::default();
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => {
                    eprintln!("quorumkv changes: {e}; reconnecting");
                    break;
                }
            };
            for &byte in chunk.iter() {
                if byte != b'\n' {
                    line.push(byte);
                    continue;
                }
                let text = String::from_utf8_lossy(&line)
                    .trim_end_matches('\r')
                    .to_string();
                line.clear();
                if text.is_empty() {
                    let done = std::mem::take(&mut event);
                    if done.event.as_deref() == Some("error") {
                        return Err(format!("{base}/changes: {}", done.data));
                    }
                    if let Some(id) = print(&done)? {
                        last = Some(id);
                    }
                } else if let Some(name) = text.strip_prefix("event:") {
                    event.event = Some(name.trim().to_string());
                } else if let Some(id) = text.strip_prefix("id:") {
                    event.id = id.trim().parse().ok();
                } else if let Some(data) = text.strip_prefix("data:") {
                    event.data.push_str(data.trim_start());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Prints one event as a JSON line with its id; returns the id.
fn print(event: &Pending) -> Result<Option<u64>, String> {
    let Some(id) = event.id else {
        return Ok(None);
    };
    let mut json: Json =
        serde_json::from_str(&event.data).unwrap_or(Json::String(event.data.clone()));
    if let Json::Object(map) = &mut json {
        map.insert("id".into(), Json::from(id));
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{json}")
        .and_then(|()| out.flush())
        .map_err(|e| format!("stdout: {e}"))?;
    Ok(Some(id))
}
