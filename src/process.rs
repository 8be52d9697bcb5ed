//! Running quorumkv as processes: one node in the foreground (`quorumkv node`), the TLS
//! material (`quorumkv certs`), and a local cluster in the background (`quorumkv cluster
//! start|stop|status`, which `make cluster|stop|status` call).

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::clock::SystemClock;
use crate::config::{Config, NodeSettings};
use crate::coordinator::hints::HintStore;
use crate::coordinator::replica::PeerHandler;
use crate::coordinator::transfer::JoinPlan;
use crate::coordinator::{Coordinator, CoordinatorSpec, Defaults};
use crate::http::{self, ApiState};
use crate::membership::{GossipConfig, NodeInfo};
use crate::metrics::Metrics;
use crate::node::{Node, NodeSpec};
use crate::storage::{MemStore, StoreOptions};
use crate::tls::{self, NodeCredentials, TlsPaths};
use crate::transport::Transport;
use crate::transport::quic::QuicTransport;

/// How long `cluster start` waits for every node's `/health`.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a leaving node spends handing its keys over (`make stop` kills after 10 s);
/// anti-entropy finishes what it could not.
const HAND_OFF_TIME: Duration = Duration::from_secs(4);
/// How long `cluster stop` waits after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The node's identity as gossip carries it, from its config entry.
pub fn node_info(config: &Config, node: &NodeSettings, generation: u64) -> NodeInfo {
    NodeInfo {
        id: node.id.clone(),
        zone: node.zone.clone(),
        peer: node.peer,
        http: node.http,
        resp: node.resp,
        vnodes: node.vnodes.unwrap_or(config.cluster.vnodes),
        generation,
        leaving: false,
    }
}

/// The cluster file, with errors as the message the command prints.
fn load(config_path: &Path) -> Result<Config, String> {
    Config::load(config_path).map_err(|e| e.to_string())
}

fn node_dir(config: &Config, id: &str) -> PathBuf {
    config.data_dir().join(id)
}

fn pid_path(config: &Config, id: &str) -> PathBuf {
    node_dir(config, id).join("node.pid")
}

/// The pid file of a running node; removed when the node exits cleanly.
struct PidFile(PathBuf);

impl PidFile {
    fn create(path: PathBuf) -> Result<PidFile, String> {
        fs::write(&path, format!("{}\n", std::process::id()))
            .map_err(|e| format!("cannot write pid file {}: {e}", path.display()))?;
        Ok(PidFile(path))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// `quorumkv certs`: creates whatever TLS material is missing.
pub fn certs(config_path: &Path) -> Result<(), String> {
    let config = load(config_path)?;
    let paths = TlsPaths::new(&config.data_dir());
    let ids: Vec<String> = config.nodes.iter().map(|n| n.id.clone()).collect();
    let created = tls::ensure_material(&paths, &config.cluster.name, &ids)
        .map_err(|e| format!("{}: {e}", paths.dir.display()))?;
    if created.is_empty() {
        println!("TLS material complete in {}", paths.dir.display());
    }
    for path in created {
        println!("created {}", path.display());
    }
    Ok(())
}

/// `quorumkv node`: runs one node in the foreground until SIGTERM or SIGINT, then leaves
/// the cluster gracefully.
pub async fn run_node(config_path: &Path, id: &str, join: Option<&str>) -> Result<(), String> {
    let config = load(config_path)?;
    let settings = config.node(id).ok_or_else(|| {
        let ids: Vec<&str> = config.nodes.iter().map(|n| n.id.as_str()).collect();
        format!(
            "no node {id:?} in {}; its nodes are {ids:?}",
            config_path.display()
        )
    })?;
    let paths = TlsPaths::new(&config.data_dir());
    let missing = [paths.ca_cert(), paths.node_cert(id), paths.node_key(id)]
        .into_iter()
        .find(|p| !p.exists());
    if let Some(missing) = missing {
        return Err(format!(
            "node {id} has no TLS certificate ({} is missing); create it with `quorumkv certs --config {}`",
            missing.display(),
            config_path.display()
        ));
    }
    let creds = NodeCredentials::load(&paths.node_cert(id), &paths.node_key(id))
        .map_err(|e| e.to_string())?;
    if creds.node_id() != id {
        return Err(format!(
            "{} is a certificate for {:?}, not {id:?}",
            paths.node_cert(id).display(),
            creds.node_id()
        ));
    }
    let ca = tls::load_ca_cert(&paths.ca_cert()).map_err(|e| e.to_string())?;

    let dir = node_dir(&config, id);
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let _pid = PidFile::create(pid_path(&config, id))?;

    let transport = QuicTransport::bind(settings.peer, &ca, &creds)
        .map_err(|e| format!("cannot listen on peer address {}: {e}", settings.peer))?;
    let listener = tokio::net::TcpListener::bind(settings.http)
        .await
        .map_err(|e| format!("cannot listen on http address {}: {e}", settings.http))?;
    let resp_listener = tokio::net::TcpListener::bind(settings.resp)
        .await
        .map_err(|e| format!("cannot listen on resp address {}: {e}", settings.resp))?;

    // A new generation per process life: the newest life of a node wins over what others
    // remember of an older one.
    let generation = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_millis() as u64);
    let me = node_info(&config, settings, generation);
    let seeds: Vec<NodeInfo> = config
        .nodes
        .iter()
        .filter(|n| n.id != id)
        .map(|n| node_info(&config, n, 0))
        .collect();
    // Other zones are far away, by zone_delay_ms, from the first message on.
    let zone_delay = Duration::from_millis(config.cluster.zone_delay_ms / 2);
    if !zone_delay.is_zero() {
        for n in config.nodes.iter().filter(|n| n.zone != settings.zone) {
            transport.faults().set_base_delay(&n.id, zone_delay);
        }
    }
    let node = Node::start(
        NodeSpec {
            me,
            seeds: seeds.clone(),
            gossip: GossipConfig::default(),
            rng_seed: generation ^ u64::from(std::process::id()),
        },
        Arc::new(transport.clone()) as Arc<dyn Transport>,
    );
    let store = MemStore::new(StoreOptions {
        node: id.to_string(),
        boot: generation,
        tombstone_grace_ms: config.cluster.tombstone_grace_s.saturating_mul(1000),
        ..StoreOptions::default()
    });
    let coordinator = Coordinator::new(CoordinatorSpec {
        me: id.to_string(),
        view: node.subscribe(),
        transport: Arc::new(transport.clone()) as Arc<dyn Transport>,
        store: Arc::new(store),
        clock: Arc::new(SystemClock),
        defaults: Defaults::from(&config.cluster),
        metrics: Metrics::new(),
        hints: Arc::new(HintStore::new(Defaults::from(&config.cluster).hints)),
    });
    // No reads until the node has heard of its cluster and pulled its keys (bootstrap).
    let join_plan = JoinPlan {
        expected: seeds.iter().map(|s| s.id.clone()).collect(),
        needs_a_peer: join.is_some(),
        grace: http::JOIN_GRACE,
    };
    coordinator.begin_joining(&join_plan);
    let maintenance = coordinator.spawn_maintenance();
    transport.serve(Arc::new(PeerHandler {
        gossip: node.handler(),
        coordinator: coordinator.clone(),
    }));
    if !zone_delay.is_zero() {
        // Members learned by gossip (joined with --join) are far away too.
        let (mut view, faults, zone) = (
            node.subscribe(),
            transport.faults().clone(),
            settings.zone.clone(),
        );
        tokio::spawn(async move {
            while view.changed().await.is_ok() {
                let members = view.borrow_and_update().members.clone();
                for m in members.iter().filter(|m| m.info.zone != zone) {
                    faults.set_base_delay(&m.info.id, zone_delay);
                }
            }
        });
    }

    if let Some(join) = join {
        join_through(&transport, &node, &seeds, join).await?;
    }
    let bootstrap = {
        let coordinator = coordinator.clone();
        tokio::spawn(async move { coordinator.bootstrap(join_plan).await })
    };

    let api = http::router(ApiState {
        view: node.subscribe(),
        faults: transport.faults().clone(),
        fault_injection: config.cluster.fault_injection,
        coordinator: coordinator.clone(),
        membership: node.control(),
    });
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, api)
            .with_graceful_shutdown(async {
                let _ = http_stopped.await;
            })
            .await
    });
    let resp_server = tokio::spawn(crate::resp::serve(resp_listener, coordinator.clone()));
    tracing::info!(
        node = id,
        peer = %settings.peer,
        http = %settings.http,
        resp = %settings.resp,
        "node started"
    );

    wait_for_signal().await;
    tracing::info!("shutting down");
    bootstrap.abort();
    // Hand the keys to the nodes that take over, leave, then hand over what arrived meanwhile.
    let pushed = coordinator
        .hand_off(tokio::time::Instant::now() + HAND_OFF_TIME)
        .await;
    tracing::info!(keys = pushed, "handed off");
    if tokio::time::timeout(Duration::from_secs(3), node.leave())
        .await
        .is_err()
    {
        tracing::warn!("leave did not finish in 3 s");
    }
    coordinator
        .hand_off(tokio::time::Instant::now() + Duration::from_secs(1))
        .await;
    let _ = stop_http.send(());
    resp_server.abort();
    maintenance.abort();
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), transport.endpoint().close()).await;
    tracing::info!("stopped");
    Ok(())
}

/// Finds who listens at `addr` (it proves it with its certificate) and announces to it.
async fn join_through(
    transport: &QuicTransport,
    node: &Node,
    seeds: &[NodeInfo],
    addr: &str,
) -> Result<(), String> {
    let resolved: SocketAddr = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| format!("--join {addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("--join {addr}: no address"))?;
    let conn = transport
        .endpoint()
        .identify(resolved, Duration::from_secs(5))
        .await
        .map_err(|e| format!("--join {addr}: cannot reach a cluster member there: {e}"))?;
    let id = conn.peer_id().to_owned();
    let info = seeds
        .iter()
        .find(|s| s.id == id)
        .cloned()
        .unwrap_or(NodeInfo {
            id: id.clone(),
            zone: String::new(),
            peer: resolved,
            http: resolved,
            resp: resolved,
            vnodes: 0,
            generation: 0,
            leaving: false,
        });
    tracing::info!(through = %id, %addr, "joining");
    node.announce(NodeInfo {
        peer: resolved,
        ..info
    })
    .await;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

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
