//! Client security with real processes: users and roles on both client ports, protected
//! mode, TLS on both client ports, and signed context tokens.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{BIN, DEADLINE, TestCluster, free_node_addrs};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// Three users, one per role, with passwords in the clear, in a password file and hashed.
fn users_toml(dir: &std::path::Path) -> String {
    std::fs::write(dir.join("writer.pw"), "writer-secret\n").expect("password file");
    let hash = quorumkv::auth::hash_password("admin-secret").expect("hash");
    format!(
        "replicas = 1\n\n\
         [[user]]\nname = \"reader\"\npassword = \"reader-secret\"\nrole = \"read\"\n\n\
         [[user]]\nname = \"writer\"\npassword_file = \"writer.pw\"\nrole = \"write\"\n\n\
         [[user]]\nname = \"admin\"\npassword_hash = \"{hash}\"\nrole = \"admin\"\n"
    )
}

/// A cluster of one node with [`users_toml`] (and `extra` cluster settings).
fn cluster_with_users(name: &str, extra: &str) -> TestCluster {
    let c = TestCluster::with_settings(name, 1, false, extra);
    let text = std::fs::read_to_string(&c.config).expect("config");
    let text = text.replacen(
        "\n\n[[node]]",
        &format!("\n{}\n\n[[node]]", users_toml(&c.dir)),
        1,
    );
    std::fs::write(&c.config, text).expect("config");
    c
}

/// A minimal RESP client over any stream: sends a command, reads one reply as text
/// (`+OK`, `-ERR ...`, `:1`, `$value`, `nil`, or `[...]` for aggregates).
struct Resp<S> {
    stream: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Resp<S> {
    fn new(stream: S) -> Self {
        Resp {
            stream: BufReader::new(stream),
        }
    }

    async fn cmd(&mut self, args: &[&str]) -> String {
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.stream
            .get_mut()
            .write_all(out.as_bytes())
            .await
            .expect("send");
        tokio::time::timeout(Duration::from_secs(10), self.reply())
            .await
            .expect("a reply within 10 s")
    }

    fn reply(&mut self) -> std::pin::Pin<Box<dyn Future<Output = String> + Send + '_>> {
        Box::pin(async move {
            let mut line = String::new();
            self.stream.read_line(&mut line).await.expect("read");
            let line = line.trim_end().to_string();
            let (kind, rest) = line.split_at(1.min(line.len()));
            match kind {
                "$" => {
                    let len: i64 = rest.parse().expect("bulk length");
                    if len < 0 {
                        return "nil".into();
                    }
                    let mut buf = vec![0; len as usize + 2];
                    self.stream.read_exact(&mut buf).await.expect("bulk");
                    format!("${}", String::from_utf8_lossy(&buf[..len as usize]))
                }
                "*" | "%" | "~" => {
                    let n: usize = rest.parse().expect("aggregate length");
                    let n = if kind == "%" { 2 * n } else { n };
                    let mut parts = Vec::new();
                    for _ in 0..n {
                        parts.push(self.reply().await);
                    }
                    format!("[{}]", parts.join(","))
                }
                "_" => "nil".into(),
                _ => line,
            }
        })
    }
}

async fn resp_plain(addr: SocketAddr) -> Resp<tokio::net::TcpStream> {
    Resp::new(tokio::net::TcpStream::connect(addr).await.expect("connect"))
}

fn admin() -> Option<(&'static str, &'static str)> {
    Some(("admin", "admin-secret"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_held_to_their_roles_on_both_ports() {
    let mut c = cluster_with_users("roles", "");
    c.secure(admin(), false);
    c.start_all(&["n1"]).await;
    let base = c.base("n1");
    let http = reqwest::Client::new();
    let status = |r: reqwest::Response| r.status().as_u16();

    // HTTP: /health is open; everything else needs a user, and each role its requests.
    let r = http
        .get(format!("{base}/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(status(r), 200);
    let r = http.get(format!("{base}/lww/a")).send().await.expect("get");
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["error"], "unauthorized", "{body}");
    let r = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(status(r), 401);
    let wrong = http
        .get(format!("{base}/lww/a"))
        .basic_auth("reader", Some("nope"))
        .send()
        .await
        .expect("get");
    assert_eq!(status(wrong), 401);
    let as_user = |user: &str, password: &str, method: reqwest::Method, path: &str| {
        http.request(method, format!("{base}{path}"))
            .basic_auth(user, Some(password))
    };
    let r = as_user("reader", "reader-secret", reqwest::Method::PUT, "/lww/a")
        .body("v")
        .send()
        .await
        .expect("put");
    assert_eq!(r.status().as_u16(), 403);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["error"], "forbidden", "{body}");
    let r = as_user("writer", "writer-secret", reqwest::Method::PUT, "/lww/a")
        .body("v1")
        .send()
        .await
        .expect("put");
    assert_eq!(status(r), 204);
    let r = as_user("reader", "reader-secret", reqwest::Method::GET, "/lww/a")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.text().await.expect("body"), "v1");
    let r = as_user("reader", "reader-secret", reqwest::Method::GET, "/metrics")
        .send()
        .await
        .expect("metrics");
    assert_eq!(status(r), 200);
    let r = as_user(
        "writer",
        "writer-secret",
        reqwest::Method::GET,
        "/admin/status",
    )
    .send()
    .await
    .expect("status");
    assert_eq!(status(r), 403);
    let r = as_user(
        "admin",
        "admin-secret",
        reqwest::Method::GET,
        "/admin/status",
    )
    .send()
    .await
    .expect("status");
    assert_eq!(status(r), 200);

    // RESP: NOAUTH before AUTH, WRONGPASS, NOPERM beyond the role.
    let mut r = resp_plain(c.node("n1").resp).await;
    assert_eq!(r.cmd(&["PING"]).await, "-NOAUTH Authentication required.");
    assert_eq!(
        r.cmd(&["GET", "a"]).await,
        "-NOAUTH Authentication required."
    );
    assert!(
        r.cmd(&["HELLO", "3"])
            .await
            .starts_with("-NOAUTH HELLO must be called")
    );
    assert_eq!(
        r.cmd(&["AUTH", "reader", "wrong"]).await,
        "-WRONGPASS invalid username-password pair or user is disabled."
    );
    assert_eq!(
        r.cmd(&["AUTH", "wrong"]).await,
        "-WRONGPASS invalid username-password pair or user is disabled."
    );
    assert_eq!(r.cmd(&["AUTH", "reader", "reader-secret"]).await, "+OK");
    assert_eq!(r.cmd(&["GET", "a"]).await, "$v1");
    assert_eq!(
        r.cmd(&["SET", "a", "x"]).await,
        "-NOPERM User reader has no permissions to run the 'set' command"
    );
    assert!(r.cmd(&["FLUSHALL"]).await.starts_with("-NOPERM"));
    assert!(
        r.cmd(&["CONFIG", "GET", "maxmemory"])
            .await
            .starts_with("-NOPERM")
    );
    // A command refused inside MULTI aborts the block, as Redis's.
    assert_eq!(r.cmd(&["MULTI"]).await, "+OK");
    assert!(r.cmd(&["SET", "a", "x"]).await.starts_with("-NOPERM"));
    assert!(r.cmd(&["EXEC"]).await.starts_with("-EXECABORT"));
    assert_eq!(r.cmd(&["GET", "a"]).await, "$v1");
    assert_eq!(r.cmd(&["AUTH", "writer", "writer-secret"]).await, "+OK");
    assert_eq!(r.cmd(&["SET", "a", "v2"]).await, "+OK");
    assert!(r.cmd(&["FLUSHALL"]).await.starts_with("-NOPERM"));
    // HELLO ... AUTH authenticates and switches the protocol in one step.
    let hello = r
        .cmd(&["HELLO", "3", "AUTH", "admin", "admin-secret"])
        .await;
    assert!(hello.contains("$proto,:3"), "{hello}");
    assert!(
        r.cmd(&["CONFIG", "GET", "maxmemory"])
            .await
            .starts_with('[')
    );
    // RESET goes back to no user.
    assert_eq!(r.cmd(&["RESET"]).await, "+RESET");
    assert_eq!(
        r.cmd(&["GET", "a"]).await,
        "-NOAUTH Authentication required."
    );

    // The CLI takes credentials from its flags or the environment.
    let out = Command::new(BIN)
        .args(["get", "a", "--type", "lww", "--node", &base])
        .output()
        .expect("cli");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unauthorized"));
    let out = Command::new(BIN)
        .args(["get", "a", "--type", "lww", "--node", &base])
        .env("QUORUMKV_USER", "reader")
        .env("QUORUMKV_PASSWORD", "reader-secret")
        .output()
        .expect("cli");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "v2");
    // No password appears in the node's log.
    let log = c.log("n1");
    for secret in ["reader-secret", "writer-secret", "admin-secret"] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
}

/// A config whose only node listens for clients on every address.
fn open_config(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let (peer, http, resp) = free_node_addrs(1)[0];
    let text = format!(
        "[cluster]\nname = \"protected\"\nreplicas = 1\ndata_dir = \"data\"\n{extra}\n\n\
         [[node]]\nid = \"n1\"\npeer = \"{peer}\"\nhttp = \"0.0.0.0:{}\"\nresp = \"{resp}\"\n",
        http.port()
    );
    let path = dir.join(format!("open{}.toml", extra.len()));
    std::fs::write(&path, text).expect("config");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_mode_refuses_an_open_node_on_a_public_address() {
    let mut c = TestCluster::new("protected", 1, false);
    let config = open_config(&c.dir, "");
    c.certs(&config);
    let out = Command::new(BIN)
        .args(["node", "--config"])
        .arg(&config)
        .args(["--id", "n1"])
        .output()
        .expect("run node");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("insecure_open_access") && err.contains("[[user]]"),
        "{err}"
    );

    // On purpose: it starts.
    let config = open_config(&c.dir, "insecure_open_access = true");
    let text = std::fs::read_to_string(&config).expect("config");
    let port = text
        .lines()
        .find_map(|l| l.strip_prefix("http = \"0.0.0.0:"))
        .and_then(|p| p.trim_end_matches('"').parse::<u16>().ok())
        .expect("port");
    c.start_with("n1", &config, &[]);
    let url = format!("http://127.0.0.1:{port}/health");
    let start = Instant::now();
    loop {
        let ok = c
            .http
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if ok {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "never healthy\n{}", c.log("n1"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A TLS connection to a client port, trusting the cluster CA.
async fn tls_connect(
    ca: &std::path::Path,
    addr: SocketAddr,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let ca = quorumkv::tls::load_ca_cert(ca).expect("ca");
    let config = quorumkv::tls::clients::client_port_client_config(&ca, &[]).expect("config");
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::from(addr.ip());
    connector.connect(name, tcp).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_clients_connect_and_plain_ones_are_refused_on_both_ports() {
    let mut c = cluster_with_users("tls", "client_tls = true");
    c.secure(admin(), true);
    c.start_all(&["n1"]).await;
    let n1 = (c.node("n1").http, c.node("n1").resp);

    // The Rust client over HTTPS.
    let client = c.client("n1");
    client
        .lww_put(
            "t",
            bytes::Bytes::from_static(b"over-tls"),
            None,
            &Default::default(),
        )
        .await
        .expect("put over https");
    // Plain HTTP on the HTTPS port gets no answer.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let r = plain.get(format!("http://{}/health", n1.0)).send().await;
    assert!(r.is_err(), "plain HTTP was answered: {r:?}");

    // RESP over TLS: AUTH, then commands.
    let mut r = Resp::new(tls_connect(&c.ca_file(), n1.1).await.expect("tls"));
    assert_eq!(r.cmd(&["PING"]).await, "-NOAUTH Authentication required.");
    assert_eq!(r.cmd(&["AUTH", "writer", "writer-secret"]).await, "+OK");
    assert_eq!(r.cmd(&["GET", "t"]).await, "$over-tls");
    // Plain RESP on the TLS port: no reply, the connection is closed.
    let mut tcp = tokio::net::TcpStream::connect(n1.1).await.expect("connect");
    tcp.write_all(b"*1\r\n$4\r\nPING\r\n").await.expect("send");
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(15), tcp.read(&mut buf))
        .await
        .expect("closed within the handshake timeout");
    assert!(
        !matches!(read, Ok(n) if n > 0 && buf.starts_with(b"+PONG")),
        "plain RESP was answered"
    );

    // The tools people use: curl --cacert and redis-cli --tls, where installed.
    let ca = c.ca_file();
    if let Ok(out) = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(&ca)
        .args(["-u", "reader:reader-secret"])
        .arg(format!("https://{}/lww/t", n1.0))
        .output()
    {
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "over-tls",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    match Command::new("redis-cli")
        .args(["--tls", "--cacert"])
        .arg(&ca)
        .args(["-h", &n1.1.ip().to_string(), "-p", &n1.1.port().to_string()])
        .args([
            "--user",
            "reader",
            "--pass",
            "reader-secret",
            "--no-auth-warning",
        ])
        .args(["GET", "t"])
        .output()
    {
        Ok(out) => assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "over-tls",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(_) => assert!(
            std::env::var_os("QKV_REQUIRE_REDIS_CLI").is_none(),
            "redis-cli is required here"
        ),
    }
    let python =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/.venv/bin/python");
    if python.exists() {
        let script = format!(
            "import redis\n\
             r = redis.Redis(host='{}', port={}, ssl=True, ssl_ca_certs='{}', \
             username='reader', password='reader-secret')\n\
             assert r.get('t') == b'over-tls', r.get('t')\n\
             print('redis-py over TLS: ok')\n",
            n1.1.ip(),
            n1.1.port(),
            ca.display()
        );
        let out = Command::new(&python)
            .args(["-c", &script])
            .output()
            .expect("python");
        assert!(
            out.status.success(),
            "redis-py with ssl=True failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_swapped_context_tokens_are_refused_and_write_nothing() {
    let mut c = TestCluster::with_settings("tokens", 1, false, "replicas = 1");
    c.start_all(&["n1"]).await;
    let base = c.base("n1");
    let put = |path: &str, token: Option<&str>, body: &'static str| {
        let mut r = c.http.put(format!("{base}{path}")).body(body);
        if let Some(t) = token {
            r = r.header("x-context", t);
        }
        r.send()
    };
    let r = put("/kv/a", None, "a1").await.expect("put");
    assert_eq!(r.status().as_u16(), 204);
    let r = c
        .http
        .get(format!("{base}/kv/a"))
        .send()
        .await
        .expect("get");
    let token = r.headers()["x-context"]
        .to_str()
        .expect("ascii")
        .to_string();

    // Another key's token: 400, and nothing written.
    let r = put("/kv/b", Some(&token), "b1").await.expect("put");
    assert_eq!(r.status().as_u16(), 400);
    let body: serde_json::Value = r.json().await.expect("json");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("unchanged")),
        "{body}"
    );
    let r = c
        .http
        .get(format!("{base}/kv/b"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 404);

    // A hand-made context (claiming dots never issued) under the real code: 400.
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let signed = b64.decode(&token).expect("base64url token");
    let (body, mac) = signed.split_at(signed.len() - quorumkv::tls::secret::MAC_LEN);
    let mut forged = quorumkv::causality::CausalContext::new();
    forged.insert(quorumkv::causality::Dot::new("n1", 1_000_000));
    let mut forged = forged.to_bytes();
    forged.extend_from_slice(mac);
    let forged = b64.encode(forged);
    let r = put("/kv/a", Some(&forged), "a-forged").await.expect("put");
    assert_eq!(r.status().as_u16(), 400);
    // The unsigned encoding of old: 400.
    let unsigned = b64.encode(body);
    let r = put("/kv/a", Some(&unsigned), "a-unsigned")
        .await
        .expect("put");
    assert_eq!(r.status().as_u16(), 400);
    // A token sent to another key space's endpoint: 400.
    let r = c
        .http
        .put(format!("{base}/lww/a"))
        .header("x-context", &token)
        .body("x")
        .send()
        .await
        .expect("put");
    assert_eq!(r.status().as_u16(), 400);
    let r = c
        .http
        .get(format!("{base}/kv/a"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.text().await.expect("body"), "a1");

    // The token as issued still works, and supersedes what it saw.
    let r = put("/kv/a", Some(&token), "a2").await.expect("put");
    assert_eq!(r.status().as_u16(), 204);
    let r = c
        .http
        .get(format!("{base}/kv/a"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.text().await.expect("body"), "a2");
}
