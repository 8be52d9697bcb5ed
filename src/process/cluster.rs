//! A local development cluster of background processes, driven from the cluster file:
//! start, stop, status, kill, partition and heal.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{load, node_dir, pid_path};
use crate::config::Config;

/// How long `cluster start` waits for every node's `/health`.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `cluster stop` waits after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The pid in a node's pid file, if that process is running.
fn running_pid(config: &Config, id: &str) -> Option<i32> {
    let text = fs::read_to_string(pid_path(config, id)).ok()?;
    let pid: i32 = text.trim().parse().ok()?;
    (pid > 0 && is_alive(pid)).then_some(pid)
}

/// Whether process `pid` exists and is not a zombie (a killed node whose parent has not
/// reaped it yet is dead for our purposes).
fn is_alive(pid: i32) -> bool {
    if kill(Pid::from_raw(pid), None).is_err() {
        return false;
    }
    // /proc/PID/stat: "pid (comm) S ..."; the state follows the last ')'.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state != "Z" && state != "X"),
        Err(_) => true,
    }
}

/// `quorumkv cluster start`: starts every node of the file (or only `only`) in the
/// background, waits for their `/health`, and prints their addresses.
pub async fn cluster_start(config_path: &Path, only: Option<&str>) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let mut config = load(config_path)?;
    if let Some(id) = only {
        let node = config
            .node(id)
            .cloned()
            .ok_or_else(|| unknown_node(&config, id))?;
        config.nodes = vec![node];
    }
    let config_abs =
        fs::canonicalize(config_path).map_err(|e| format!("{}: {e}", config_path.display()))?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own binary: {e}"))?;
    let mut children = std::collections::BTreeMap::new();
    for n in &config.nodes {
        if let Some(pid) = running_pid(&config, &n.id) {
            println!("{} already running (pid {pid})", n.id);
            continue;
        }
        let dir = node_dir(&config, &n.id);
        fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let log_path = dir.join("node.log");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
        let err = log
            .try_clone()
            .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
        let child = std::process::Command::new(&exe)
            .arg("node")
            .arg("--config")
            .arg(&config_abs)
            .arg("--id")
            .arg(&n.id)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(err)
            // Its own process group: the node outlives `make` and ignores the terminal's ^C.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", n.id))?;
        children.insert(n.id.clone(), child);
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + START_TIMEOUT;
    for n in &config.nodes {
        let url = format!("http://{}/health", n.http);
        loop {
            if client
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                break;
            }
            let log = node_dir(&config, &n.id).join("node.log");
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not answer {url} within {START_TIMEOUT:?}; see {}",
                    n.id,
                    log.display()
                ));
            }
            let exited = children
                .get_mut(&n.id)
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                return Err(format!(
                    "{} exited ({status}); its log {} ends with:\n{}",
                    n.id,
                    log.display(),
                    tail(&log, 10)
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    println!("cluster {:?} is up:", config.cluster.name);
    print_addresses(&config);
    Ok(())
}

fn print_addresses(config: &Config) {
    println!(
        "  {:<8} {:<10} {:<22} {:<22} {:<22}",
        "node", "zone", "http", "resp", "peer (quic)"
    );
    for n in &config.nodes {
        println!(
            "  {:<8} {:<10} {:<22} {:<22} {:<22}",
            n.id,
            n.zone,
            format!("http://{}", n.http),
            n.resp.to_string(),
            n.peer.to_string()
        );
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn unknown_node(config: &Config, id: &str) -> String {
    let ids: Vec<&str> = config.nodes.iter().map(|n| n.id.as_str()).collect();
    format!("no node {id:?} in the cluster file; its nodes are {ids:?}")
}

/// `quorumkv cluster kill --id ID`: SIGKILL, as a crash would (the pid file stays behind, as
/// it would after a crash; `cluster start` sees the process is gone).
pub fn cluster_kill(config_path: &Path, id: &str) -> Result<(), String> {
    let config = load(config_path)?;
    config.node(id).ok_or_else(|| unknown_node(&config, id))?;
    let pid = running_pid(&config, id).ok_or_else(|| format!("{id} is not running"))?;
    kill(Pid::from_raw(pid), Signal::SIGKILL).map_err(|e| format!("kill {pid}: {e}"))?;
    let deadline = Instant::now() + STOP_TIMEOUT;
    while is_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("{id} killed (pid {pid})");
    Ok(())
}

/// Splits `"n1,n2|n3"` into groups, checking every id against the file.
fn parse_groups(config: &Config, spec: &str) -> Result<Vec<Vec<String>>, String> {
    let groups: Vec<Vec<String>> = spec
        .split('|')
        .map(|g| {
            g.split(',')
                .map(str::trim)
                .filter(|id| !id.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    if groups.len() < 2 || groups.iter().any(Vec::is_empty) {
        return Err(format!(
            "{spec:?} is not a partition; give two or more groups of node ids, as \"n1,n2|n3\""
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for id in groups.iter().flatten() {
        config.node(id).ok_or_else(|| unknown_node(config, id))?;
        if !seen.insert(id.clone()) {
            return Err(format!("{id} is in two groups"));
        }
    }
    Ok(groups)
}

fn admin_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())
}

/// `quorumkv cluster partition "n1,n2|n3"`: through `/admin/faults` on every listed node,
/// each group drops all traffic with the other groups. Nodes not listed keep talking to all.
pub async fn cluster_partition(config_path: &Path, spec: &str) -> Result<(), String> {
    let config = load(config_path)?;
    let groups = parse_groups(&config, spec)?;
    let client = admin_client()?;
    for (i, group) in groups.iter().enumerate() {
        let others: Vec<&String> = groups
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .flat_map(|(_, g)| g)
            .collect();
        for id in group {
            let Some(node) = config.node(id) else {
                continue;
            };
            let url = format!("http://{}/admin/faults", node.http);
            let resp = client
                .post(&url)
                .json(&serde_json::json!({ "drop": others }))
                .send()
                .await
                .map_err(|e| format!("{id}: {url}: {e}"))?;
            if !resp.status().is_success() {
                let status = resp.status();
                let body = resp.text().await.unwrap_or_default();
                return Err(format!("{id}: {status}: {body}"));
            }
            println!("{id} drops {others:?}");
        }
    }
    Ok(())
}

/// `quorumkv cluster heal`: clears the faults of every node of the file that answers.
pub async fn cluster_heal(config_path: &Path) -> Result<(), String> {
    let config = load(config_path)?;
    let client = admin_client()?;
    for n in &config.nodes {
        let url = format!("http://{}/admin/faults", n.http);
        match client.delete(&url).send().await {
            Ok(r) if r.status().is_success() => println!("{} healed", n.id),
            Ok(r) => println!("{}: {}", n.id, r.status()),
            Err(_) => println!("{} does not answer", n.id),
        }
    }
    Ok(())
}

/// `quorumkv cluster stop`: SIGTERM to every node of the file, SIGKILL after 10 s.
pub async fn cluster_stop(config_path: &Path) -> Result<(), String> {
    let config = load(config_path)?;
    let mut waiting = Vec::new();
    for n in &config.nodes {
        match running_pid(&config, &n.id) {
            Some(pid) => {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
                waiting.push((n.id.clone(), pid));
            }
            None => println!("{} is not running", n.id),
        }
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    for (id, pid) in waiting {
        while is_alive(pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if is_alive(pid) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = fs::remove_file(pid_path(&config, &id));
            println!("{id} did not stop in {STOP_TIMEOUT:?}: killed (pid {pid})");
        } else {
            println!("{id} stopped (pid {pid})");
        }
    }
    Ok(())
}

/// `quorumkv cluster status`: which nodes run, and the membership as each sees it.
pub async fn cluster_status(config_path: &Path) -> Result<(), String> {
    let config = load(config_path)?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| e.to_string())?;
    for n in &config.nodes {
        let process = match running_pid(&config, &n.id) {
            Some(pid) => format!("running (pid {pid})"),
            None => "not running".to_string(),
        };
        println!("{} {process}, http://{}", n.id, n.http);
        let url = format!("http://{}/admin/status", n.http);
        let Ok(resp) = client.get(&url).send().await else {
            continue;
        };
        let Ok(body) = resp.json::<serde_json::Value>().await else {
            continue;
        };
        let members = body["members"].as_array().cloned().unwrap_or_default();
        for m in members {
            println!(
                "    sees {:<8} {:<8} zone {:<10} ring share {:>5.1}%",
                m["id"].as_str().unwrap_or("?"),
                m["state"].as_str().unwrap_or("?"),
                m["zone"].as_str().unwrap_or("?"),
                m["ring_share"].as_f64().unwrap_or(0.0) * 100.0
            );
        }
    }
    Ok(())
}
