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
    let operator = Operator::new(&config, Duration::from_secs(1))?;
    let deadline = Instant::now() + START_TIMEOUT;
    for n in &config.nodes {
        let url = operator.url(n, "/health");
        loop {
            if operator
                .client
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
    let tls = config.cluster.client_tls;
    println!(
        "  {:<8} {:<10} {:<30} {:<30} {:<22}",
        "node", "zone", "http", "resp", "peer (quic)"
    );
    for n in &config.nodes {
        println!(
            "  {:<8} {:<10} {:<30} {:<30} {:<22}",
            n.id,
            n.zone,
            format!("{}://{}", if tls { "https" } else { "http" }, n.http),
            format!("{}://{}", if tls { "rediss" } else { "redis" }, n.resp),
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

/// How the `quorumkv cluster` commands (and so `make`) reach the nodes of a file: over
/// `https://` with the cluster CA when the file sets `client_tls`, and as an admin when it
/// has users: `QUORUMKV_USER` and `QUORUMKV_PASSWORD`, or else the first admin of the file
/// whose password it holds (`password` or `password_file`; the operator has the file).
struct Operator {
    client: reqwest::Client,
    scheme: &'static str,
    admin: Option<(String, String)>,
}

impl Operator {
    fn new(config: &Config, timeout: Duration) -> Result<Operator, String> {
        let mut builder = reqwest::Client::builder().timeout(timeout);
        let scheme = if config.cluster.client_tls {
            let paths = crate::tls::TlsPaths::new(&config.data_dir());
            let ca = crate::tls::load_ca_cert(&paths.ca_cert()).map_err(|e| e.to_string())?;
            let tls = crate::tls::clients::client_port_client_config(&ca, &[b"http/1.1"])
                .map_err(|e| e.to_string())?;
            builder = builder.use_preconfigured_tls(tls);
            "https"
        } else {
            "http"
        };
        let client = builder.build().map_err(|e| e.to_string())?;
        Ok(Operator {
            client,
            scheme,
            admin: admin_credentials(config),
        })
    }

    fn url(&self, n: &crate::config::NodeSettings, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, n.http)
    }

    /// `request` with the admin's credentials, if there are users.
    fn login(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.admin {
            Some((user, password)) => request.basic_auth(user, Some(password)),
            None => request,
        }
    }
}

/// The admin credentials the cluster commands use (see [`Operator`]).
fn admin_credentials(config: &Config) -> Option<(String, String)> {
    if let (Ok(user), Ok(password)) = (
        std::env::var("QUORUMKV_USER"),
        std::env::var("QUORUMKV_PASSWORD"),
    ) {
        return Some((user, password));
    }
    config
        .users
        .iter()
        .filter(|u| u.role == crate::auth::Role::Admin)
        .find_map(|u| {
            let password = match (&u.password, &u.password_file) {
                (Some(p), _) => p.clone(),
                (None, Some(file)) => {
                    let text = std::fs::read_to_string(config.base_dir.join(file)).ok()?;
                    text.trim_end_matches(['\n', '\r']).to_string()
                }
                (None, None) => return None,
            };
            Some((u.name.clone(), password))
        })
}

/// `quorumkv cluster partition "n1,n2|n3"`: through `/admin/faults` on every listed node,
/// each group drops all traffic with the other groups. Nodes not listed keep talking to all.
pub async fn cluster_partition(config_path: &Path, spec: &str) -> Result<(), String> {
    let config = load(config_path)?;
    let groups = parse_groups(&config, spec)?;
    let operator = Operator::new(&config, Duration::from_secs(5))?;
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
            let url = operator.url(node, "/admin/faults");
            let resp = operator
                .login(operator.client.post(&url))
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
    let operator = Operator::new(&config, Duration::from_secs(5))?;
    for n in &config.nodes {
        let url = operator.url(n, "/admin/faults");
        match operator.login(operator.client.delete(&url)).send().await {
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
    let operator = Operator::new(&config, Duration::from_secs(2))?;
    for n in &config.nodes {
        let process = match running_pid(&config, &n.id) {
            Some(pid) => format!("running (pid {pid})"),
            None => "not running".to_string(),
        };
        println!("{} {process}, {}", n.id, operator.url(n, ""));
        let url = operator.url(n, "/admin/status");
        let Ok(resp) = operator.login(operator.client.get(&url)).send().await else {
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
