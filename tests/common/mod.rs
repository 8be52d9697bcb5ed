//! What the real-process tests share: a cluster of `quorumkv node` processes on loopback in a
//! temporary directory, with free ports, that kills whatever it started when dropped.
#![allow(dead_code)] // each test binary uses a different part

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_quorumkv");
/// Generous: default detection takes about 7 s, a rejoin about 1 s.
pub const DEADLINE: Duration = Duration::from_secs(40);

/// Ports the tests hand to nodes come from below the system's ephemeral range (32768 and
/// up on Linux), so no outgoing connection and no `bind(0)` of another test can take a port
/// between the moment it is picked and the moment the node binds it. Each test process starts
/// at its own offset and never hands a port out twice; a port something else holds is skipped.
const PORTS: std::ops::Range<u32> = 15_000..32_000;

fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = PORTS.end - PORTS.start;
    let offset = (std::process::id().wrapping_mul(7_919)) % span;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < span, "no free test port left");
        let port = (PORTS.start + (offset + n) % span) as u16;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        // Free for both, so a port can serve either kind of socket.
        if TcpListener::bind(addr).is_ok() && UdpSocket::bind(addr).is_ok() {
            return port;
        }
    }
}

fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

pub fn free_tcp() -> SocketAddr {
    free_addr()
}

pub fn free_udp() -> SocketAddr {
    free_addr()
}

/// Free addresses for `n` nodes: (peer over UDP, http, resp).
pub fn free_node_addrs(n: usize) -> Vec<(SocketAddr, SocketAddr, SocketAddr)> {
    (0..n)
        .map(|_| (free_addr(), free_addr(), free_addr()))
        .collect()
}

pub struct NodeAddrs {
    pub id: String,
    pub peer: SocketAddr,
    pub http: SocketAddr,
    pub resp: SocketAddr,
}

/// A cluster of real processes in a temporary directory; stops them all when dropped.
pub struct TestCluster {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub nodes: Vec<NodeAddrs>,
    pub procs: BTreeMap<String, Child>,
    pub http: reqwest::Client,
    /// The admin the helpers authenticate as, for a cluster with users.
    pub admin: Option<(String, String)>,
    /// `http`, or `https` for a cluster with `client_tls`.
    pub scheme: &'static str,
}

impl TestCluster {
    pub fn new(name: &str, n: usize, fault_injection: bool) -> TestCluster {
        Self::with_settings(name, n, fault_injection, "")
    }

    /// A cluster whose `[cluster]` table also holds `settings` (TOML lines).
    pub fn with_settings(
        name: &str,
        n: usize,
        fault_injection: bool,
        settings: &str,
    ) -> TestCluster {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "quorumkv-{name}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let nodes: Vec<NodeAddrs> = free_node_addrs(n)
            .into_iter()
            .enumerate()
            .map(|(i, (peer, http, resp))| NodeAddrs {
                id: format!("n{}", i + 1),
                peer,
                http,
                resp,
            })
            .collect();
        let config = dir.join("cluster.toml");
        let text = config_text(name, &nodes, fault_injection, "data").replacen(
            "\n\n[[node]]",
            &format!("\n{settings}\n\n[[node]]"),
            1,
        );
        std::fs::write(&config, text).expect("write config");
        let cluster = TestCluster {
            dir,
            config,
            nodes,
            procs: BTreeMap::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .expect("http client"),
            admin: None,
            scheme: "http",
        };
        cluster.certs(&cluster.config);
        cluster
    }

    /// The cluster CA certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("data/tls/ca.pem")
    }

    /// Makes the helpers authenticate as `admin` and, with `tls`, speak HTTPS trusting the
    /// cluster CA (for a cluster file with users or `client_tls`).
    pub fn secure(&mut self, admin: Option<(&str, &str)>, tls: bool) {
        self.admin = admin.map(|(u, p)| (u.to_string(), p.to_string()));
        if tls {
            let access = quorumkv::client::Access {
                user: None,
                ca_file: Some(self.ca_file()),
            };
            let config = quorumkv::client::https_config(&access)
                .expect("CA")
                .expect("a CA was given");
            self.http = reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .use_preconfigured_tls(config)
                .build()
                .expect("https client");
            self.scheme = "https";
        }
    }

    /// `request` with the admin's credentials, if any.
    pub fn login(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.admin {
            Some((user, password)) => request.basic_auth(user, Some(password)),
            None => request,
        }
    }

    pub fn certs(&self, config: &Path) {
        let out = Command::new(BIN)
            .args(["certs", "--config"])
            .arg(config)
            .output()
            .expect("run quorumkv certs");
        assert!(
            out.status.success(),
            "quorumkv certs failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn node(&self, id: &str) -> &NodeAddrs {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .expect("node in cluster")
    }

    pub fn log_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.log"))
    }

    pub fn log(&self, id: &str) -> String {
        std::fs::read_to_string(self.log_path(id)).unwrap_or_default()
    }

    /// Starts node `id` with extra arguments, logging to `<dir>/<id>.log`.
    pub fn start_with(&mut self, id: &str, config: &Path, extra: &[&str]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(id))
            .expect("log file");
        let err = log.try_clone().expect("log file");
        let child = Command::new(BIN)
            .args(["node", "--config"])
            .arg(config)
            .args(["--id", id])
            .args(extra)
            .env("RUST_LOG", "info,quinn=warn")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("start node");
        self.procs.insert(id.to_string(), child);
    }

    pub fn start(&mut self, id: &str) {
        let config = self.config.clone();
        self.start_with(id, &config, &[]);
    }

    pub fn kill9(&mut self, id: &str) {
        if let Some(mut child) = self.procs.remove(id) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then the exit status (within 15 s).
    pub fn terminate(&mut self, id: &str) -> std::process::ExitStatus {
        let mut child = self.procs.remove(id).expect("running node");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "node {id} did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub async fn get(&self, id: &str, path: &str) -> Option<(u16, Value)> {
        let url = format!("{}{path}", self.base(id));
        let resp = self.login(self.http.get(url)).send().await.ok()?;
        let status = resp.status().as_u16();
        Some((status, resp.json().await.unwrap_or(Value::Null)))
    }

    pub async fn status(&self, id: &str) -> Option<Value> {
        self.get(id, "/admin/status").await.map(|(_, v)| v)
    }

    /// `viewer`'s opinion of `member`, if `viewer` answers.
    pub async fn state(&self, viewer: &str, member: &str) -> Option<String> {
        let status = self.status(viewer).await?;
        status["members"]
            .as_array()?
            .iter()
            .find(|m| m["id"] == member)
            .and_then(|m| m["state"].as_str().map(str::to_string))
    }

    /// Polls until every viewer sees every member in the expected state; returns the time.
    pub async fn until_states(&self, viewers: &[&str], members: &[&str], want: &str) -> Duration {
        let start = Instant::now();
        loop {
            let mut all = true;
            let mut seen = String::new();
            for v in viewers {
                for m in members {
                    let s = self.state(v, m).await;
                    let _ = write!(seen, "{v} sees {m} {s:?}; ");
                    all &= s.as_deref() == Some(want);
                }
            }
            if all {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < DEADLINE,
                "not all {want} after {DEADLINE:?}: {seen}\nlogs:\n{}",
                self.all_logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn post_faults(&self, id: &str, body: &str) -> (u16, Value) {
        let url = format!("http://{}/admin/faults", self.node(id).http);
        let resp = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("POST /admin/faults");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn delete_faults(&self, id: &str) -> u16 {
        let url = format!("http://{}/admin/faults", self.node(id).http);
        let resp = self
            .http
            .delete(url)
            .send()
            .await
            .expect("DELETE /admin/faults");
        resp.status().as_u16()
    }

    /// `http://HOST:PORT` of node `id`.
    pub fn base(&self, id: &str) -> String {
        format!("{}://{}", self.scheme, self.node(id).http)
    }

    /// A `quorumkv::Client` of node `id`.
    pub fn client(&self, id: &str) -> quorumkv::Client {
        let access = quorumkv::client::Access {
            user: self
                .admin
                .as_ref()
                .map(|(user, password)| quorumkv::client::Credentials {
                    user: user.clone(),
                    password: password.clone(),
                }),
            ca_file: (self.scheme == "https").then(|| self.ca_file()),
        };
        quorumkv::Client::connect(&self.base(id), Duration::from_secs(30), &access).expect("client")
    }

    /// Starts the nodes and waits until each sees all of them alive and serves (`/health`
    /// is 200 once a node has pulled its keys: before, it answers no reads).
    pub async fn start_all(&mut self, ids: &[&str]) {
        for id in ids {
            self.start(id);
        }
        self.until_states(ids, ids, "alive").await;
        self.until_healthy(ids).await;
    }

    /// Polls until every node of `ids` answers `/health` with 200.
    pub async fn until_healthy(&self, ids: &[&str]) {
        let start = Instant::now();
        for id in ids {
            while self.get(id, "/health").await.map(|(code, _)| code) != Some(200) {
                assert!(
                    start.elapsed() < DEADLINE,
                    "{id} never healthy\n{}",
                    self.all_logs()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// Sets `/admin/faults` so that `left` and `right` cannot reach each other.
    pub async fn partition(&self, left: &[&str], right: &[&str]) {
        let faults = |other: &[&str]| serde_json::json!({ "drop": other }).to_string();
        for id in left {
            let (code, body) = self.post_faults(id, &faults(right)).await;
            assert_eq!(code, 204, "{body}");
        }
        for id in right {
            let (code, body) = self.post_faults(id, &faults(left)).await;
            assert_eq!(code, 204, "{body}");
        }
    }

    /// Clears the faults of every node.
    pub async fn heal(&self) {
        for n in &self.nodes {
            assert_eq!(self.delete_faults(&n.id).await, 204);
        }
    }

    /// The sum of a Prometheus metric's samples on node `id` (all label sets).
    pub async fn metric(&self, id: &str, name: &str) -> f64 {
        let url = format!("{}/metrics", self.base(id));
        let text = self
            .http
            .get(url)
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub fn all_logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("--- {} ---\n{}", n.id, self.log(&n.id)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for (_, mut child) in std::mem::take(&mut self.procs) {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Nodes started by `quorumkv cluster start` are not our children: find them by the
        // pid files they write.
        for n in &self.nodes {
            let pid_file = self.dir.join("data").join(&n.id).join("node.pid");
            let pid = std::fs::read_to_string(pid_file)
                .ok()
                .and_then(|t| t.trim().parse::<i32>().ok());
            // Only if that pid is still a quorumkv (pids get reused).
            let ours = |pid: i32| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains("quorumkv"))
            };
            if let Some(pid) = pid.filter(|&p| ours(p)) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn config_text(
    name: &str,
    nodes: &[NodeAddrs],
    fault_injection: bool,
    data_dir: &str,
) -> String {
    let mut s = format!(
        "[cluster]\nname = \"{name}\"\nfault_injection = {fault_injection}\ndata_dir = \"{data_dir}\"\n"
    );
    for (i, n) in nodes.iter().enumerate() {
        let zone = if i % 2 == 0 { "zone-a" } else { "zone-b" };
        let _ = write!(
            s,
            "\n[[node]]\nid = \"{}\"\nzone = \"{zone}\"\npeer = \"{}\"\nhttp = \"{}\"\nresp = \"{}\"\n",
            n.id, n.peer, n.http, n.resp
        );
    }
    s
}
