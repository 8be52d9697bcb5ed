//! One node in the foreground: its TLS material, its wiring (transport, membership,
//! coordinator, HTTP and Redis front ends), its pid file, and its graceful leave on SIGTERM.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_rustls::TlsAcceptor;

use super::{load, node_dir, pid_path};
use crate::auth::{self, Users};
use crate::clock::Clock;
use crate::clock::SystemClock;
use crate::config::{Config, NodeSettings};
use crate::coordinator::transfer::JoinPlan;
use crate::coordinator::{Coordinator, CoordinatorSpec, Defaults, PeerHandler};
use crate::http::token::ContextTokens;
use crate::http::{self, ApiState};
use crate::membership::{GossipConfig, NodeInfo};
use crate::metrics::Metrics;
use crate::node::{Node, NodeSpec};
use crate::replica::durable;
use crate::storage::StoreOptions;
use crate::storage::journal::Journal;
use crate::tls::clients::TlsListener;
use crate::tls::secret::ClusterSecret;
use crate::tls::{self, NodeCredentials, TlsPaths};
use crate::transport::Transport;
use crate::transport::quic::QuicTransport;

/// How long a leaving node spends handing its keys over (`make stop` kills after 10 s);
/// anti-entropy finishes what it could not.
const HAND_OFF_TIME: Duration = Duration::from_secs(4);

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
        cert: None,
    }
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
    let nodes: Vec<tls::NodeMaterial> = config
        .nodes
        .iter()
        .map(|n| tls::NodeMaterial {
            id: n.id.clone(),
            client_names: tls::clients::client_cert_names(&[n.http, n.resp], &n.host_names),
        })
        .collect();
    let created = tls::ensure_material(&paths, &config.cluster.name, &nodes)
        .map_err(|e| format!("{}: {e}", paths.dir.display()))?;
    if created.is_empty() {
        println!("TLS material complete in {}", paths.dir.display());
    }
    for path in created {
        println!("created {}", path.display());
    }
    Ok(())
}

/// The resident memory past which a node with memory limit `limit` stops growing: the
/// bound its resident memory is held to (1.1 times the limit plus 64 MiB) less what the data
/// can add between two measurements (a tenth of a second of writes).
fn resident_ceiling(limit: u64) -> u64 {
    (limit + limit / 10 + (64 << 20)).saturating_sub((20 << 20).max(limit / 25))
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
    // What the process holds before it loads any data: the base of the memory calibration,
    // in allocated bytes (resident bytes under an allocator that does not count).
    let base_allocated = crate::alloc::allocated();
    let base_resident = crate::metrics::resident_bytes();
    raise_open_file_limit();
    let users = Arc::new(Users::from_settings(&config.users, &config.base_dir)?);
    auth::check_exposure(
        &users,
        config.cluster.insecure_open_access,
        &[settings.http, settings.resp],
    )?;
    let paths = TlsPaths::new(&config.data_dir());
    let mut needed = vec![
        paths.ca_cert(),
        paths.node_cert(id),
        paths.node_key(id),
        paths.cluster_secret(),
    ];
    if config.cluster.client_tls {
        needed.extend([paths.client_cert(id), paths.client_key(id)]);
    }
    let missing = needed.into_iter().find(|p| !p.exists());
    if let Some(missing) = missing {
        return Err(format!(
            "node {id} is missing its TLS material ({} is missing); create it with `quorumkv certs --config {}`",
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
    let secret = ClusterSecret::load(&paths.cluster_secret()).map_err(|e| e.to_string())?;
    let client_tls = |alpn: &[&[u8]]| -> Result<Option<TlsAcceptor>, String> {
        if !config.cluster.client_tls {
            return Ok(None);
        }
        tls::clients::client_port_acceptor(&paths.client_cert(id), &paths.client_key(id), alpn)
            .map(Some)
            .map_err(|e| e.to_string())
    };
    let http_tls = client_tls(&[b"http/1.1"])?;
    let resp_tls = client_tls(&[])?;

    let dir = node_dir(&config, id);
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let _pid = PidFile::create(pid_path(&config, id))?;

    let transport =
        QuicTransport::bind_limited(settings.peer, &ca, &creds, config.cluster.peer_budget_bytes)
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
    let me = NodeInfo {
        cert: Some(tls::revocation::fingerprint(creds.cert_der())),
        ..node_info(&config, settings, generation)
    };
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
    let durability = settings.durability.unwrap_or(config.cluster.durability);
    let hint_limits = Defaults::from(&config.cluster).hints;
    let recovered = durable::recover(
        &dir,
        durability,
        StoreOptions {
            node: id.to_string(),
            boot: generation,
            tombstone_grace_ms: config.cluster.tombstone_grace_s.saturating_mul(1000),
            ..StoreOptions::default()
        },
        hint_limits,
        SystemClock.now_ms(),
    )?;
    tracing::info!(durability = durability.name(), "{}", recovered.summary);
    let removed: Vec<NodeInfo> = recovered
        .removed
        .iter()
        .filter_map(|r| rmp_serde::from_slice(&r.info).ok())
        .collect();
    // Before any peer connects: the certificates of removed members stay refused.
    let revoked_file = dir.join("revoked-certs");
    transport
        .revocations()
        .keep_in(&revoked_file)
        .map_err(|e| format!("cannot read {}: {e}", revoked_file.display()))?;
    for cert in removed.iter().filter_map(|r| r.cert) {
        transport.revocations().revoke(cert);
    }
    let node = Node::start(
        NodeSpec {
            me,
            seeds: seeds.clone(),
            gossip: GossipConfig::default(),
            rng_seed: generation ^ u64::from(std::process::id()),
            removed,
        },
        Arc::new(transport.clone()) as Arc<dyn Transport>,
    );
    let coordinator = Coordinator::new(CoordinatorSpec {
        membership: Some(node.control()),
        me: id.to_string(),
        view: node.subscribe(),
        transport: Arc::new(transport.clone()) as Arc<dyn Transport>,
        store: recovered.store.clone(),
        clock: Arc::new(SystemClock),
        defaults: Defaults::from(&config.cluster),
        metrics: Metrics::new(),
        hints: recovered.hints.clone(),
    });
    coordinator.replica().resume_clock(recovered.clock);
    match base_allocated {
        Some(base) => coordinator
            .memory_gauge()
            .track_process(|| crate::alloc::allocated().unwrap_or(0), base),
        None => coordinator
            .memory_gauge()
            .track_process(crate::metrics::resident_bytes, base_resident),
    }
    let limit = coordinator.defaults().max_memory_bytes;
    if limit > 0 {
        coordinator
            .memory_gauge()
            .guard_resident(crate::metrics::resident_bytes, resident_ceiling(limit));
    }
    revoke_removed(node.subscribe(), transport.revocations().clone());
    let stop_snapshots = Arc::new(AtomicBool::new(false));
    let snapshots = match &recovered.log {
        Some(log) => {
            let replica = coordinator.clone();
            let view = node.subscribe();
            keep_removals(
                node.subscribe(),
                Journal::new(log.clone()),
                &recovered.removed,
            );
            Some(
                durable::Snapshots {
                    dir: durable::data_path(&dir),
                    log: log.clone(),
                    store: recovered.store.clone(),
                    hints: recovered.hints.clone(),
                    clock: Box::new(move || replica.replica().clock_mark()),
                    removed: Box::new(move || removals(&view.borrow().removed)),
                    after_bytes: config.cluster.snapshot_after_bytes,
                }
                .spawn(stop_snapshots.clone())
                .map_err(|e| format!("cannot start the snapshot thread: {e}"))?,
            )
        }
        None => None,
    };
    // No reads until the node has heard of its cluster and pulled its keys (bootstrap).
    let join_plan = JoinPlan {
        expected: seeds.iter().map(|s| s.id.clone()).collect(),
        needs_a_peer: join.is_some(),
        grace: http::JOIN_GRACE,
    };
    // A node that recovered its data serves it at once and catches up on what it missed by
    // hints and anti-entropy; one that has none pulls its keys from its replicas first.
    if !recovered.had_data {
        coordinator.begin_joining(&join_plan);
    }
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
        let pull = !recovered.had_data;
        tokio::spawn(async move {
            if pull {
                coordinator.bootstrap(join_plan).await;
            }
        })
    };

    let api = http::router(ApiState {
        view: node.subscribe(),
        faults: transport.faults().clone(),
        fault_injection: config.cluster.fault_injection,
        coordinator: coordinator.clone(),
        membership: node.control(),
        users: Arc::clone(&users),
        tokens: ContextTokens::new(secret),
    });
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let stopped = async {
        let _ = http_stopped.await;
    };
    let server = match http_tls {
        None => tokio::spawn(async move {
            axum::serve(listener, api)
                .with_graceful_shutdown(stopped)
                .await
        }),
        Some(acceptor) => {
            let listener = TlsListener::new(listener, acceptor)
                .map_err(|e| format!("cannot listen on http address {}: {e}", settings.http))?;
            tokio::spawn(async move {
                axum::serve(listener, api)
                    .with_graceful_shutdown(stopped)
                    .await
            })
        }
    };
    let resp_server = tokio::spawn(crate::resp::serve(
        resp_listener,
        coordinator.clone(),
        users,
        resp_tls,
    ));
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
    stop_snapshots.store(true, Ordering::Relaxed);
    if let Some(snapshots) = snapshots {
        let _ = tokio::task::spawn_blocking(move || snapshots.join()).await;
    }
    if let Some(log) = &recovered.log {
        log.close();
    }
    tracing::info!("stopped");
    Ok(())
}

/// Removed members as the log keeps them.
fn removals(lives: &[NodeInfo]) -> Vec<durable::Removal> {
    lives
        .iter()
        .filter_map(|info| {
            Some(durable::Removal {
                id: info.id.clone(),
                generation: info.generation,
                info: rmp_serde::to_vec(info).ok()?,
            })
        })
        .collect()
}

/// Writes every removal this node learns to its durable log, so it outlives a restart of
/// the whole cluster.
fn keep_removals(
    mut view: tokio::sync::watch::Receiver<Arc<crate::node::ClusterView>>,
    journal: Journal,
    known: &[durable::Removal],
) {
    let mut logged: std::collections::BTreeSet<(String, u64)> =
        known.iter().map(|r| (r.id.clone(), r.generation)).collect();
    tokio::spawn(async move {
        loop {
            let lives = view.borrow_and_update().removed.clone();
            for r in removals(&lives) {
                if logged.insert((r.id.clone(), r.generation)) {
                    journal.removed(&r.id, r.generation, &r.info);
                }
            }
            if view.changed().await.is_err() {
                return;
            }
        }
    });
}

/// Revokes the certificate of every member removed, as the node learns of removals.
fn revoke_removed(
    mut view: tokio::sync::watch::Receiver<Arc<crate::node::ClusterView>>,
    revocations: tls::revocation::Revocations,
) {
    tokio::spawn(async move {
        loop {
            let lives = view.borrow_and_update().removed.clone();
            for (id, cert) in lives.iter().filter_map(|r| Some((&r.id, r.cert?))) {
                if revocations.revoke(cert) {
                    tracing::info!(member = %id, "revoked the certificate of a removed member");
                }
            }
            if view.changed().await.is_err() {
                return;
            }
        }
    });
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
            cert: None,
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

/// Raises the soft limit on open files to the hard limit, as redis-server does for its
/// `maxclients`: each client connection is a file, and the usual soft limit of 1,024 would
/// refuse the thousand-and-first client. Logs what it got.
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::info!(from = soft, to = hard, "raised the open file limit"),
            Err(e) => tracing::warn!(
                limit = soft,
                "could not raise the open file limit ({e}): at most about {soft} client connections"
            ),
        },
        Ok((soft, _)) => tracing::debug!(limit = soft, "open file limit"),
        Err(e) => tracing::warn!("could not read the open file limit: {e}"),
    }
}
