//! The mutual-TLS QUIC layer through the public API: node ids in certificates, PEM files
//! and their permissions, mutual authentication between [`NodeEndpoint`]s, and
//! [`QuicTransport`] end to end (one-way messages, calls, injected faults, hostile peers).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use quorumkv::rpc::{self, OneWay, Read, ReplicaError, Request, Response};
use quorumkv::tls::{self, ClusterCa, NodeCredentials, TlsError, TlsPaths};
use quorumkv::transport::quic::{
    self, MAX_FRAME_PAYLOAD, NodeEndpoint, QuicError, QuicTransport, accept_peer,
};
use quorumkv::transport::{AnswerTo, BoxFuture, Faults, Handler, Peer, Transport, TransportError};

/// Generous deadline for anything that should happen "now".
const T: Duration = Duration::from_secs(5);

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A 64-byte id, the longest allowed.
fn long_id() -> String {
    let mut id = String::from("eu.west-1_");
    while id.len() < tls::MAX_NODE_ID_LEN {
        id.push('x');
    }
    id
}

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "quorumkv-quic-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

/// Checks with webpki alone that `cert` chains to `ca` as a client and server certificate.
fn chains_to(
    cert: &rustls::pki_types::CertificateDer<'_>,
    ca: &rustls::pki_types::CertificateDer<'_>,
) {
    let anchor = webpki::anchor_from_trusted_cert(ca).expect("anchor");
    let ee = webpki::EndEntityCert::try_from(cert).expect("parse");
    for usage in [
        webpki::KeyUsage::client_auth(),
        webpki::KeyUsage::server_auth(),
    ] {
        ee.verify_for_usage(
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .all,
            std::slice::from_ref(&anchor),
            &[],
            rustls::pki_types::UnixTime::now(),
            usage,
            None,
            None,
        )
        .expect("certificate chains to the CA");
    }
}

// ---------------------------------------------------------------------------
// 1. Node ids <-> DNS names
// ---------------------------------------------------------------------------

#[test]
fn node_id_dns_name_round_trip() {
    assert_eq!(tls::node_dns_name("n1").expect("n1"), "6e31.quorumkv");
    assert_eq!(tls::node_dns_name("N1").expect("N1"), "4e31.quorumkv");

    let ca = ClusterCa::generate("alpha").expect("ca");
    let long = long_id();
    assert_eq!(long.len(), 64);
    let ids = [
        "n1",
        "N1",
        "Node_1",
        "eu.west-1",
        "a",
        "0",
        "-",
        "_n_",
        ".",
        "..",
        long.as_str(),
    ];
    for id in ids {
        assert!(tls::validate_node_id(id).is_ok(), "{id:?} should be valid");
        let name = tls::node_dns_name(id).expect("dns name");
        assert!(name.ends_with(".quorumkv"), "{name}");
        assert_eq!(name, name.to_ascii_lowercase(), "lowercase hex: {name}");
        assert!(name.len() <= 253, "{name}");
        for label in name.split('.') {
            assert!(
                !label.is_empty() && label.len() <= 63,
                "label {label:?} in {name}"
            );
        }
        // rustls accepts it as a server name to dial.
        rustls::pki_types::ServerName::try_from(name.clone()).expect("valid server name");
        // And the id comes back out of a certificate carrying it.
        let creds = ca.issue_node(id).expect("issue");
        assert_eq!(creds.node_id(), id);
        assert_eq!(tls::node_id_from_cert(creds.cert_der()).expect("id"), id);
    }
    // Ids differing only in case are different nodes with different names.
    assert_ne!(
        tls::node_dns_name("node").expect("node"),
        tls::node_dns_name("Node").expect("Node")
    );

    let too_long = "x".repeat(tls::MAX_NODE_ID_LEN + 1);
    for bad in [
        "",
        too_long.as_str(),
        "n 1",
        "n/1",
        "../n1",
        "n1!",
        "n:1",
        "n\u{e9}",
        "n\0",
        "n\n",
        "*",
    ] {
        assert!(
            matches!(tls::validate_node_id(bad), Err(TlsError::InvalidNodeId(_))),
            "{bad:?} should be invalid"
        );
        assert!(
            matches!(tls::node_dns_name(bad), Err(TlsError::InvalidNodeId(_))),
            "{bad:?}"
        );
        assert!(
            matches!(ca.issue_node(bad), Err(TlsError::InvalidNodeId(_))),
            "{bad:?}"
        );
    }

    // The CA certificate names no node.
    assert!(matches!(
        tls::node_id_from_cert(ca.cert_der()),
        Err(TlsError::NoNodeIdInCert)
    ));
    // Neither does garbage.
    let garbage = rustls::pki_types::CertificateDer::from(vec![0x30, 0x03, 0x01, 0x01, 0xff]);
    assert!(tls::node_id_from_cert(&garbage).is_err());
}

// ---------------------------------------------------------------------------
// 2. PEM files, permissions, ensure_material
// ---------------------------------------------------------------------------

#[test]
fn pem_files_round_trip_and_permissions() {
    let dir = TempDir::new();
    let ca = ClusterCa::generate("alpha").expect("ca");
    assert_eq!(ca.cluster_name(), "alpha");
    ca.save(&dir.path("ca.pem"), &dir.path("ca.key"))
        .expect("save ca");
    let n1 = ca.issue_node("Node_1").expect("issue");
    n1.save(&dir.path("n1.pem"), &dir.path("n1.key"))
        .expect("save n1");

    for key in ["ca.key", "n1.key"] {
        assert_eq!(mode(&dir.path(key)), 0o600, "{key}");
    }
    let key_text = std::fs::read_to_string(dir.path("n1.key")).expect("read key");
    assert!(key_text.starts_with("-----BEGIN PRIVATE KEY-----"));
    let cert_text = std::fs::read_to_string(dir.path("n1.pem")).expect("read cert");
    assert!(cert_text.starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(
        std::fs::read_to_string(dir.path("ca.pem")).expect("read ca"),
        ca.cert_pem()
    );

    // Reload the CA and issue with it: the certificate chains to the original CA cert.
    let loaded = ClusterCa::load("alpha", &dir.path("ca.pem"), &dir.path("ca.key")).expect("load");
    assert_eq!(loaded.cert_der(), ca.cert_der());
    let n2 = loaded.issue_node("n2").expect("n2");
    chains_to(n2.cert_der(), ca.cert_der());
    chains_to(n1.cert_der(), ca.cert_der());

    // Another cluster name rebuilds another issuer DN: refused.
    assert!(matches!(
        ClusterCa::load("beta", &dir.path("ca.pem"), &dir.path("ca.key")),
        Err(TlsError::CaMismatch)
    ));
    // A key that is not the CA's: refused.
    assert!(matches!(
        ClusterCa::load("alpha", &dir.path("ca.pem"), &dir.path("n1.key")),
        Err(TlsError::CaMismatch)
    ));

    let back = NodeCredentials::load(&dir.path("n1.pem"), &dir.path("n1.key")).expect("load n1");
    assert_eq!(back.node_id(), "Node_1");
    assert_eq!(back.cert_der(), n1.cert_der());
    assert_eq!(
        tls::load_ca_cert(&dir.path("ca.pem")).expect("ca cert"),
        *ca.cert_der()
    );
    // The CA certificate is not a node certificate.
    assert!(matches!(
        NodeCredentials::load(&dir.path("ca.pem"), &dir.path("n1.key")),
        Err(TlsError::NoNodeIdInCert)
    ));
    // A certificate file that is not PEM.
    std::fs::write(dir.path("junk.pem"), "not a certificate\n").expect("write junk");
    assert!(matches!(
        tls::load_ca_cert(&dir.path("junk.pem")),
        Err(TlsError::Pem { .. })
    ));
    assert!(matches!(
        tls::load_ca_cert(&dir.path("missing.pem")),
        Err(TlsError::Io { .. })
    ));

    // Group/other-readable keys are refused, for nodes and for the CA.
    for key in ["n1.key", "ca.key"] {
        std::fs::set_permissions(dir.path(key), std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
    }
    let err = NodeCredentials::load(&dir.path("n1.pem"), &dir.path("n1.key"))
        .expect_err("0644 node key accepted");
    assert!(
        matches!(err, TlsError::InsecureKeyPermissions { mode: 0o644, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("644"), "{err}");
    assert!(matches!(
        ClusterCa::load("alpha", &dir.path("ca.pem"), &dir.path("ca.key")),
        Err(TlsError::InsecureKeyPermissions { mode: 0o644, .. })
    ));
    std::fs::set_permissions(dir.path("n1.key"), std::fs::Permissions::from_mode(0o640))
        .expect("chmod");
    assert!(matches!(
        NodeCredentials::load(&dir.path("n1.pem"), &dir.path("n1.key")),
        Err(TlsError::InsecureKeyPermissions { mode: 0o640, .. })
    ));

    // Saving over an existing, too open key file tightens it to 0600.
    n1.save(&dir.path("n1.pem"), &dir.path("n1.key"))
        .expect("save again");
    assert_eq!(mode(&dir.path("n1.key")), 0o600);
    NodeCredentials::load(&dir.path("n1.pem"), &dir.path("n1.key")).expect("load after resave");

    // Debug output never contains key material.
    let debug = format!("{ca:?} {n1:?}");
    assert!(!debug.contains("PRIVATE"), "{debug}");
}

/// Contents of every file under `dir`, by name.
fn snapshot(dir: &Path) -> BTreeMap<String, (Vec<u8>, u32)> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| {
            let path = e.expect("entry").path();
            let name = path
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            (name, (std::fs::read(&path).expect("read"), mode(&path)))
        })
        .collect()
}

/// What `quorumkv certs` makes for nodes `ids` on loopback.
fn material(ids: &[String]) -> Vec<tls::NodeMaterial> {
    ids.iter()
        .map(|id| tls::NodeMaterial {
            id: id.clone(),
            client_names: vec!["127.0.0.1".into(), "localhost".into()],
        })
        .collect()
}

#[test]
fn ensure_material_creates_once_and_is_idempotent() {
    let data = TempDir::new();
    let paths = TlsPaths::new(&data.0);
    assert_eq!(paths.dir, data.0.join("tls"));
    let ids: Vec<String> = ["n1", "Node_1", "eu.west-1"]
        .iter()
        .map(|s| s.to_string())
        .collect();

    let created = tls::ensure_material(&paths, "alpha", &material(&ids)).expect("first run");
    let mut expected = vec![paths.ca_cert(), paths.cluster_secret()];
    expected.extend(ids.iter().map(|id| paths.node_cert(id)));
    expected.extend(ids.iter().map(|id| paths.client_cert(id)));
    assert_eq!(created, expected);

    assert_eq!(mode(&paths.ca_key()), 0o600);
    let ca_cert = tls::load_ca_cert(&paths.ca_cert()).expect("ca cert");
    for id in &ids {
        assert_eq!(mode(&paths.node_key(id)), 0o600, "{id}");
        assert_eq!(mode(&paths.client_key(id)), 0o600, "{id}");
        let creds =
            NodeCredentials::load(&paths.node_cert(id), &paths.node_key(id)).expect("load node");
        assert_eq!(creds.node_id(), id);
        chains_to(creds.cert_der(), &ca_cert);
    }

    // Second run: nothing to do, nothing touched.
    let before = snapshot(&paths.dir);
    assert_eq!(before.len(), 3 + 4 * ids.len());
    assert_eq!(mode(&paths.cluster_secret()), 0o600);
    let created = tls::ensure_material(&paths, "alpha", &material(&ids)).expect("second run");
    assert!(created.is_empty(), "{created:?}");
    assert_eq!(snapshot(&paths.dir), before);

    // A new node: only its certificate is created, by the same CA.
    let mut more = ids.clone();
    more.push("n4".into());
    let created = tls::ensure_material(&paths, "alpha", &material(&more)).expect("third run");
    assert_eq!(
        created,
        vec![paths.node_cert("n4"), paths.client_cert("n4")]
    );
    let n4 = NodeCredentials::load(&paths.node_cert("n4"), &paths.node_key("n4")).expect("n4");
    chains_to(n4.cert_der(), &ca_cert);
    let after = snapshot(&paths.dir);
    for (name, contents) in &before {
        assert_eq!(after.get(name), Some(contents), "{name} changed");
    }

    // A lost node key is recreated (with a new certificate), the CA is kept.
    std::fs::remove_file(paths.node_key("n1")).expect("rm key");
    let created = tls::ensure_material(&paths, "alpha", &material(&more)).expect("fourth run");
    assert_eq!(created, vec![paths.node_cert("n1")]);
    assert_eq!(
        tls::load_ca_cert(&paths.ca_cert()).expect("ca cert"),
        ca_cert
    );
    let n1 = NodeCredentials::load(&paths.node_cert("n1"), &paths.node_key("n1")).expect("n1");
    chains_to(n1.cert_der(), &ca_cert);

    // Other cluster name: the existing CA does not match, nothing is overwritten.
    let before = snapshot(&paths.dir);
    assert!(matches!(
        tls::ensure_material(&paths, "beta", &material(&more)),
        Err(TlsError::CaMismatch)
    ));
    // Invalid ids are refused.
    assert!(matches!(
        tls::ensure_material(&paths, "alpha", &material(&["bad id".to_string()])),
        Err(TlsError::InvalidNodeId(_))
    ));
    assert_eq!(snapshot(&paths.dir), before);
}

/// A node may be called `ca` (the config allows it), but its files must not be the CA's.
#[test]
fn ensure_material_node_named_ca() {
    let data = TempDir::new();
    let paths = TlsPaths::new(&data.0);
    tls::ensure_material(&paths, "alpha", &material(&["ca".to_string()])).expect("ensure");
    let creds = NodeCredentials::load(&paths.node_cert("ca"), &paths.node_key("ca"))
        .expect("node `ca` has a node certificate");
    assert_eq!(creds.node_id(), "ca");
}

/// A node host holds the CA certificate but not the CA key (the documented model):
/// `ensure_material` must not replace the cluster's trust anchor with a new CA.
#[test]
fn ensure_material_keeps_ca_cert_without_key() {
    let data = TempDir::new();
    let paths = TlsPaths::new(&data.0);
    let ids = vec!["n1".to_string(), "n2".to_string()];
    tls::ensure_material(&paths, "alpha", &material(&ids)).expect("ensure");
    let ca_before = std::fs::read(paths.ca_cert()).expect("read ca");
    std::fs::remove_file(paths.ca_key()).expect("rm ca key");
    let _ = tls::ensure_material(&paths, "alpha", &material(&ids));
    assert_eq!(
        std::fs::read(paths.ca_cert()).expect("read ca"),
        ca_before,
        "ca.pem was replaced; n1/n2 certificates no longer chain to it"
    );
}

// ---------------------------------------------------------------------------
// 3-6. Mutual TLS between endpoints
// ---------------------------------------------------------------------------

fn endpoint(
    ca_cert: &rustls::pki_types::CertificateDer<'static>,
    node: &NodeCredentials,
) -> NodeEndpoint {
    NodeEndpoint::bind(loopback(), ca_cert, node).expect("bind endpoint")
}

fn addr_of(ep: &NodeEndpoint) -> SocketAddr {
    ep.local_addr().expect("local addr")
}

/// Accepts exactly one connection on `ep`; on success serves it with a handler that
/// answers `"<our id> got <body> from <peer id>"`.
fn accept_one(ep: &NodeEndpoint) -> JoinHandle<Result<String, QuicError>> {
    let ep = ep.clone();
    tokio::spawn(async move {
        let incoming = tokio::time::timeout(T, ep.accept())
            .await
            .map_err(|_| QuicError::Timeout("accept"))?
            .ok_or(QuicError::Protocol("endpoint closed"))?;
        let peer = accept_peer(incoming, ep.node_id(), T).await?;
        let peer_id = peer.peer_id().to_owned();
        assert_eq!(quic::peer_node_id(peer.connection())?, peer_id);
        let me = ep.node_id().to_owned();
        tokio::spawn(peer.serve(
            move |from, body| {
                format!("{me} got {} from {from}", String::from_utf8_lossy(&body)).into_bytes()
            },
            T,
        ));
        Ok(peer_id)
    })
}

type Outcome = (Result<String, String>, Result<String, String>);

/// One attempt `client -> server` dialling `dial_as` (or identifying the server when
/// `None`): (client result, server result), errors rendered as strings.
async fn attempt(client: &NodeEndpoint, server: &NodeEndpoint, dial_as: Option<&str>) -> Outcome {
    let accept = accept_one(server);
    let to = addr_of(server);
    let c = match dial_as {
        Some(id) => client.connect(to, id, T).await,
        None => client.identify(to, T).await,
    }
    .map(|p| p.peer_id().to_owned());
    let s = tokio::time::timeout(T + T, accept)
        .await
        .expect("server side finished")
        .expect("server task");
    (c.map_err(|e| e.to_string()), s.map_err(|e| e.to_string()))
}

fn report(case: &str, r: &Outcome) {
    eprintln!("[{case}]\n  client: {:?}\n  server: {:?}", r.0, r.1);
}

/// Both the client and the server side failed, each with an error mentioning `why`.
fn assert_both_fail_with(r: &Outcome, why: &str) {
    assert!(r.0.as_ref().is_err_and(|e| e.contains(why)), "{r:?}");
    assert!(r.1.as_ref().is_err_and(|e| e.contains(why)), "{r:?}");
}

#[tokio::test]
async fn same_ca_connection_learns_both_ids() {
    let dir = TempDir::new();
    let ca = ClusterCa::generate("alpha").expect("ca");
    ca.save(&dir.path("ca.pem"), &dir.path("ca.key"))
        .expect("save ca");
    for id in ["n1", "n2"] {
        ca.issue_node(id)
            .expect("issue")
            .save(
                &dir.path(&format!("{id}.pem")),
                &dir.path(&format!("{id}.key")),
            )
            .expect("save node");
    }
    // Nodes only get the CA certificate and their own files.
    let ca_cert = tls::load_ca_cert(&dir.path("ca.pem")).expect("ca cert");
    let load = |id: &str| {
        NodeCredentials::load(
            &dir.path(&format!("{id}.pem")),
            &dir.path(&format!("{id}.key")),
        )
        .expect("load node")
    };
    let ep1 = endpoint(&ca_cert, &load("n1"));
    let ep2 = endpoint(&ca_cert, &load("n2"));
    assert_eq!(ep1.node_id(), "n1");
    let (a1, a2) = (addr_of(&ep1), addr_of(&ep2));
    assert!(a1.ip().is_loopback() && a1.port() != 0);
    assert_ne!(a1, a2);

    // n1 -> n2
    let server = accept_one(&ep2);
    let conn = ep1.connect(a2, "n2", T).await.expect("connect n1->n2");
    assert_eq!(conn.peer_id(), "n2");
    assert_eq!(quic::peer_node_id(conn.connection()).expect("id"), "n2");
    assert_eq!(server.await.expect("join").expect("server accept"), "n1");

    assert_eq!(
        conn.request(b"ping", T, 1024).await.expect("request"),
        b"n2 got ping from n1"
    );
    let (r1, r2) = tokio::join!(conn.request(b"x", T, 1024), conn.request(b"y", T, 1024));
    assert_eq!(r1.expect("x"), b"n2 got x from n1");
    assert_eq!(r2.expect("y"), b"n2 got y from n1");
    // A response larger than the caller's bound is refused.
    assert!(matches!(
        conn.request(b"ping", T, 4).await,
        Err(QuicError::Read(quinn::ReadToEndError::TooLong))
    ));

    // n2 -> n1 on the same sockets: each endpoint is server and client.
    let server = accept_one(&ep1);
    let back = ep2.connect(a1, "n1", T).await.expect("connect n2->n1");
    assert_eq!(back.peer_id(), "n1");
    assert_eq!(server.await.expect("join").expect("accept"), "n2");
    assert_eq!(
        back.request(b"pong", T, 1024).await.expect("request"),
        b"n1 got pong from n2"
    );

    ep1.close().await;
    ep2.close().await;
}

#[tokio::test]
async fn unusual_ids_authenticate() {
    let ca = ClusterCa::generate("alpha").expect("ca");
    let long = long_id();
    let ids = ["Node_1", "eu.west-1", long.as_str()];
    let eps: Vec<NodeEndpoint> = ids
        .iter()
        .map(|id| endpoint(ca.cert_der(), &ca.issue_node(id).expect("issue")))
        .collect();
    for (i, client) in eps.iter().enumerate() {
        let server = &eps[(i + 1) % eps.len()];
        let r = attempt(client, server, Some(server.node_id())).await;
        assert_eq!(
            r,
            (
                Ok(server.node_id().to_owned()),
                Ok(client.node_id().to_owned())
            ),
            "{} -> {}",
            client.node_id(),
            server.node_id()
        );
        // Case matters: `node_1` is another node.
        if server.node_id() == "Node_1" {
            let r = attempt(client, server, Some("node_1")).await;
            assert!(r.0.is_err() && r.1.is_err(), "{r:?}");
        }
    }
    for ep in eps {
        ep.close().await;
    }
}

#[tokio::test]
async fn foreign_ca_is_rejected_on_both_sides() {
    let ca = ClusterCa::generate("alpha").expect("ca");
    let other = ClusterCa::generate("rogue").expect("other ca");
    let n1 = ca.issue_node("n1").expect("n1");
    let n2 = ca.issue_node("n2").expect("n2");
    let evil = other.issue_node("n9").expect("n9");

    let server = endpoint(ca.cert_der(), &n2);
    let legit = endpoint(ca.cert_der(), &n1);

    // A foreign node trusting only its own CA dials a cluster node: it rejects the
    // server's certificate and aborts with an alert.
    let foreign = endpoint(other.cert_der(), &evil);
    let r = attempt(&foreign, &server, Some("n2")).await;
    report("foreign node (trusts own CA) -> n2", &r);
    assert_both_fail_with(&r, "UnknownIssuer");

    // A foreign certificate, but trusting the cluster CA (an attacker copied ca.pem):
    // the server rejects the client certificate.
    let spoof = endpoint(ca.cert_der(), &evil);
    let r = attempt(&spoof, &server, Some("n2")).await;
    report("foreign cert, trusts cluster CA -> n2", &r);
    assert_both_fail_with(&r, "UnknownIssuer");

    // A legitimate node dials a server with a foreign certificate.
    let rogue_server = endpoint(ca.cert_der(), &evil);
    let r = attempt(&legit, &rogue_server, Some("n9")).await;
    report("n1 -> foreign-cert server", &r);
    assert_both_fail_with(&r, "UnknownIssuer");

    // A foreign CA with the same subject DN (same cluster name, another key): webpki
    // finds the issuer by name and fails the signature instead.
    let twin = ClusterCa::generate("alpha").expect("twin ca");
    let twin_ep = endpoint(ca.cert_der(), &twin.issue_node("n9").expect("n9"));
    let r = attempt(&twin_ep, &server, Some("n2")).await;
    report("same-DN foreign CA -> n2", &r);
    assert_both_fail_with(&r, "BadSignature");

    // The legitimate node still gets in.
    let r = attempt(&legit, &server, Some("n2")).await;
    assert_eq!(r, (Ok("n2".into()), Ok("n1".into())));

    for ep in [server, legit, foreign, spoof, rogue_server, twin_ep] {
        ep.close().await;
    }
}

#[tokio::test]
async fn wrong_server_name_is_rejected() {
    let ca = ClusterCa::generate("alpha").expect("ca");
    let ep1 = endpoint(ca.cert_der(), &ca.issue_node("n1").expect("n1"));
    let ep2 = endpoint(ca.cert_der(), &ca.issue_node("n2").expect("n2"));

    let r = attempt(&ep1, &ep2, Some("n3")).await;
    report("n1 dials n2's address expecting n3", &r);
    assert_both_fail_with(&r, "not valid for name");

    // An invalid node id is refused locally, before any packet is sent.
    assert!(matches!(
        ep1.connect(addr_of(&ep2), "n2!", T).await,
        Err(QuicError::Tls(TlsError::InvalidNodeId(_)))
    ));

    // The right name still works.
    let r = attempt(&ep1, &ep2, Some("n2")).await;
    assert_eq!(r, (Ok("n2".into()), Ok("n1".into())));

    ep1.close().await;
    ep2.close().await;
}

#[tokio::test]
async fn identify_learns_the_id_of_a_cluster_node_only() {
    let ca = ClusterCa::generate("alpha").expect("ca");
    let other = ClusterCa::generate("rogue").expect("other ca");
    let seeker = endpoint(ca.cert_der(), &ca.issue_node("n1").expect("n1"));
    let seed = endpoint(ca.cert_der(), &ca.issue_node("eu.west-1").expect("seed"));

    let r = attempt(&seeker, &seed, None).await;
    assert_eq!(r, (Ok("eu.west-1".into()), Ok("n1".into())));

    // The connection `identify` returns is a working, authenticated one.
    let accept = accept_one(&seed);
    let conn = seeker.identify(addr_of(&seed), T).await.expect("identify");
    assert_eq!(conn.peer_id(), "eu.west-1");
    assert_eq!(accept.await.expect("join").expect("accept"), "n1");
    assert_eq!(
        conn.request(b"hi", T, 1024).await.expect("request"),
        b"eu.west-1 got hi from n1"
    );

    // A node of another cluster (foreign certificate) is not identified.
    let stranger = endpoint(other.cert_der(), &other.issue_node("n2").expect("n2"));
    let r = attempt(&seeker, &stranger, None).await;
    report("identify a foreign-CA node", &r);
    assert!(
        r.0.as_ref().is_err_and(|e| e.contains("UnknownIssuer")),
        "{r:?}"
    );
    assert!(r.1.is_err(), "{r:?}");

    // A foreign node trusting the cluster CA cannot identify itself into the cluster
    // either: the seed refuses its certificate.
    let spoof = endpoint(ca.cert_der(), &other.issue_node("n3").expect("n3"));
    let r = attempt(&spoof, &seed, None).await;
    report("foreign cert identifies a cluster node", &r);
    assert!(r.0.is_err(), "{r:?}");
    assert!(
        r.1.as_ref().is_err_and(|e| e.contains("UnknownIssuer")),
        "{r:?}"
    );

    for ep in [seeker, seed, stranger, spoof] {
        ep.close().await;
    }
}

// ---------------------------------------------------------------------------
// 7-8. QuicTransport
// ---------------------------------------------------------------------------

/// Records one-way messages; answers `Ping` with its own id.
struct TestHandler {
    node: String,
    one_way: mpsc::UnboundedSender<(String, OneWay)>,
}

impl Handler for TestHandler {
    fn one_way(&self, from: &str, msg: OneWay) {
        let _ = self.one_way.send((from.to_owned(), msg));
    }

    fn request(&self, _from: &str, req: Request) -> BoxFuture<Response> {
        let node = self.node.clone();
        Box::pin(async move {
            match req {
                Request::Ping => Response::Pong { node },
                // Answers name what they answer, to check batched answers go to their caller;
                // keys named slow… take three seconds.
                Request::Read(Read { key }) => {
                    if key.name.starts_with(b"slow") {
                        tokio::time::sleep(Duration::from_secs(3)).await;
                    }
                    Response::Pong {
                        node: format!("{node} read {}", key.display_name()),
                    }
                }
                req => Response::Error(ReplicaError::NotServed(req.name().into())),
            }
        })
    }
}

struct TestNode {
    transport: QuicTransport,
    peer: Peer,
    received: mpsc::UnboundedReceiver<(String, OneWay)>,
    serving: JoinHandle<()>,
}

impl TestNode {
    fn start(ca: &ClusterCa, id: &str) -> Self {
        Self::start_limited(ca, id, quic::DEFAULT_PEER_BUDGET_BYTES)
    }

    /// A node that holds each peer to `budget` bytes of requests in flight.
    fn start_limited(ca: &ClusterCa, id: &str, budget: usize) -> Self {
        let creds = ca.issue_node(id).expect("issue");
        let transport =
            QuicTransport::bind_limited(loopback(), ca.cert_der(), &creds, budget).expect("bind");
        let addr = transport.endpoint().local_addr().expect("local addr");
        let (tx, received) = mpsc::unbounded_channel();
        let serving = transport.serve(Arc::new(TestHandler {
            node: id.to_owned(),
            one_way: tx,
        }));
        TestNode {
            transport,
            peer: Peer {
                id: id.into(),
                addr,
            },
            received,
            serving,
        }
    }

    /// The next one-way message this node's handler got.
    async fn next(&mut self) -> (String, OneWay) {
        tokio::time::timeout(T, self.received.recv())
            .await
            .expect("one-way message within the deadline")
            .expect("handler alive")
    }

    /// Asserts that nothing arrives for a generous while.
    async fn assert_nothing_arrives(&mut self) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        match self.received.try_recv() {
            Err(mpsc::error::TryRecvError::Empty) => {}
            other => panic!("{}: unexpected delivery {other:?}", self.peer.id),
        }
    }

    async fn stop(self) {
        self.transport.endpoint().close().await;
        self.serving.abort();
    }
}

fn gossip(text: &'static str) -> OneWay {
    OneWay::Gossip(Bytes::from_static(text.as_bytes()))
}

async fn ping(from: &TestNode, to: &TestNode) -> Result<Response, TransportError> {
    from.transport.call(&to.peer, Request::Ping, T).await
}

fn pong(node: &str) -> Response {
    Response::Pong { node: node.into() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_sends_and_calls_both_ways() {
    let ca = ClusterCa::generate("alpha").expect("ca");
    let mut n1 = TestNode::start(&ca, "n1");
    let mut n2 = TestNode::start(&ca, "eu.west-1");
    assert_eq!(n1.transport.local_id(), "n1");
    assert_eq!(n2.transport.local_id(), "eu.west-1");

    n1.transport.send(&n2.peer, gossip("hello n2"));
    assert_eq!(n2.next().await, ("n1".into(), gossip("hello n2")));
    assert_eq!(
        ping(&n1, &n2).await.expect("call n1->n2"),
        pong("eu.west-1")
    );

    n2.transport.send(&n1.peer, gossip("hello n1"));
    assert_eq!(n1.next().await, ("eu.west-1".into(), gossip("hello n1")));
    assert_eq!(ping(&n2, &n1).await.expect("call n2->n1"), pong("n1"));

    // Many messages and concurrent calls over the same connection.
    for _ in 0..50 {
        n1.transport.send(&n2.peer, gossip("burst"));
    }
    let calls: Vec<_> = (0..20)
        .map(|_| n1.transport.call(&n2.peer, Request::Ping, T))
        .collect();
    for call in calls {
        assert_eq!(call.await.expect("concurrent call"), pong("eu.west-1"));
    }
    for _ in 0..50 {
        assert_eq!(n2.next().await, ("n1".into(), gossip("burst")));
    }

    n1.stop().await;
    n2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_replica_requests_are_batched_and_each_gets_its_own_answer() {
    let ca = ClusterCa::generate("alpha").expect("ca");
    let n1 = TestNode::start(&ca, "n1");
    let n2 = TestNode::start(&ca, "n2");
    let calls: Vec<_> = (0..500)
        .map(|i| {
            let key = quorumkv::storage::Key::new(quorumkv::storage::Kind::Typed, format!("k{i}"));
            n1.transport.call(&n2.peer, Request::Read(Read { key }), T)
        })
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(
            call.await.expect("batched call"),
            Response::Pong {
                node: format!("n2 read k{i}")
            }
        );
    }
    // A batch inside a batch is refused, item by item, not served.
    let inner = quorumkv::rpc::encode(&Request::Batch(vec![])).expect("encode");
    let outer = Request::Batch(vec![Bytes::from(inner)]);
    match n1.transport.call(&n2.peer, outer, T).await.expect("call") {
        Response::Batch(answers) => {
            let answer: Response = quorumkv::rpc::decode(&answers[0]).expect("decode");
            assert!(matches!(answer, Response::Error(ReplicaError::NestedBatch)));
        }
        other => panic!("{other:?}"),
    }
    n1.stop().await;
    n2.stop().await;
}

// One runtime thread: both calls below are queued before the batch loop runs, so they
// travel in one batch.
#[tokio::test]
async fn a_batched_call_times_out_at_its_own_deadline_not_the_batchs() {
    let ca = ClusterCa::generate("alpha").expect("ca");
    let n1 = TestNode::start(&ca, "n1");
    let n2 = TestNode::start(&ca, "n2");
    ping(&n1, &n2).await.expect("connected");
    let read = |name: &str| {
        let key = quorumkv::storage::Key::new(quorumkv::storage::Kind::Typed, name);
        rpc::EncodedRequest::new(&Request::Read(Read { key })).expect("encode")
    };
    // A slow request in flight, so that the next two travel together in one batch: two slow
    // ones, the first with a long timeout, the second with a short one.
    let first = tokio::spawn(n1.transport.call_encoded(&n2.peer, read("slow first"), T));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (tx, second) = tokio::sync::oneshot::channel();
    let reply = AnswerTo::new("n2".into(), move |r| {
        let _ = tx.send(r);
    });
    n1.transport.call_then(
        &n2.peer,
        read("slow second"),
        Duration::from_secs(20),
        reply,
    );
    let (tx, quick) = tokio::sync::oneshot::channel();
    let start = Instant::now();
    let reply = AnswerTo::new("n2".into(), move |r| {
        let _ = tx.send((r, start.elapsed()));
    });
    n1.transport.call_then(
        &n2.peer,
        read("slow third"),
        Duration::from_millis(300),
        reply,
    );
    let (result, took) = quick.await.expect("an answer");
    assert!(
        matches!(result, Err(TransportError::Timeout(..))),
        "{result:?}"
    );
    // Its batch is answered six seconds on, after both slow requests in it.
    assert!(
        took < Duration::from_secs(2),
        "the timeout came after {took:?}"
    );
    assert!(second.await.expect("an answer").is_ok());
    assert!(first.await.expect("task").is_ok());
    n1.stop().await;
    n2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_applies_injected_faults() {
    let ca = ClusterCa::generate("alpha").expect("ca");
    let n1 = TestNode::start(&ca, "n1");
    let mut n2 = TestNode::start(&ca, "n2");

    // Connected and working first.
    assert_eq!(ping(&n1, &n2).await.expect("call"), pong("n2"));

    // Sender side drop.
    let drop_n2 = Faults {
        drop: BTreeSet::from(["n2".to_owned()]),
        ..Faults::default()
    };
    n1.transport.faults().set(drop_n2.clone());
    assert_eq!(n1.transport.faults().get(), drop_n2);
    match ping(&n1, &n2).await {
        Err(TransportError::Dropped(id)) => assert_eq!(id, "n2"),
        other => panic!("expected Dropped, got {other:?}"),
    }
    n1.transport.send(&n2.peer, gossip("lost"));
    n2.assert_nothing_arrives().await;

    // Cleared: works again (and the dropped message never shows up).
    n1.transport.faults().set(Faults::default());
    assert_eq!(
        ping(&n1, &n2).await.expect("call after clearing"),
        pong("n2")
    );
    n1.transport.send(&n2.peer, gossip("found"));
    assert_eq!(n2.next().await, ("n1".into(), gossip("found")));

    // Receiver side drop: n2 discards what n1 sends; n1's call gets no answer.
    n2.transport.faults().set(Faults {
        drop: BTreeSet::from(["n1".to_owned()]),
        ..Faults::default()
    });
    n1.transport.send(&n2.peer, gossip("discarded"));
    n2.assert_nothing_arrives().await;
    let r = ping(&n1, &n2).await;
    assert!(r.is_err(), "{r:?}");
    n2.transport.faults().set(Faults::default());
    assert_eq!(
        ping(&n1, &n2).await.expect("call after clearing"),
        pong("n2")
    );

    // Delay: a call to a delayed peer takes at least the delay.
    let delay = Duration::from_millis(200);
    n1.transport.faults().set(Faults {
        delay: BTreeMap::from([("n2".to_owned(), delay)]),
        ..Faults::default()
    });
    let started = Instant::now();
    assert_eq!(ping(&n1, &n2).await.expect("delayed call"), pong("n2"));
    let took = started.elapsed();
    assert!(took >= delay, "call took {took:?}");
    let started = Instant::now();
    n1.transport.send(&n2.peer, gossip("late"));
    assert_eq!(n2.next().await, ("n1".into(), gossip("late")));
    let took = started.elapsed();
    assert!(took >= delay, "message took {took:?}");
    n1.transport.faults().set(Faults::default());
    assert_eq!(ping(&n1, &n2).await.expect("call"), pong("n2"));

    n1.stop().await;
    n2.stop().await;
}

/// `call` promises to wait at most `timeout`; an injected delay longer than the timeout
/// must end in `Timeout` after about `timeout`, as in the in-memory transport.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_delay_longer_than_timeout_times_out() {
    let ca = ClusterCa::generate("alpha").expect("ca");
    let n1 = TestNode::start(&ca, "n1");
    let n2 = TestNode::start(&ca, "n2");
    assert_eq!(ping(&n1, &n2).await.expect("call"), pong("n2"));

    n1.transport.faults().set(Faults {
        delay: BTreeMap::from([("n2".to_owned(), Duration::from_secs(2))]),
        ..Faults::default()
    });
    let timeout = Duration::from_millis(200);
    let started = Instant::now();
    let r = n1.transport.call(&n2.peer, Request::Ping, timeout).await;
    let took = started.elapsed();
    assert!(matches!(r, Err(TransportError::Timeout(..))), "{r:?}");
    assert!(took < Duration::from_secs(1), "call took {took:?}");

    n1.stop().await;
    n2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_reports_unreachable_peers() {
    let ca = ClusterCa::generate("alpha").expect("ca");
    let n1 = TestNode::start(&ca, "n1");
    let n2 = TestNode::start(&ca, "n2");
    // n2's address, but expecting another node there: refused, quickly.
    let wrong = Peer {
        id: "n3".into(),
        addr: n2.peer.addr,
    };
    let r = n1.transport.call(&wrong, Request::Ping, T).await;
    assert!(
        matches!(r, Err(TransportError::Unreachable(ref id, _)) if id == "n3"),
        "{r:?}"
    );
    assert_eq!(ping(&n1, &n2).await.expect("call"), pong("n2"));
    n1.stop().await;
    n2.stop().await;
}

/// Sends `bytes` raw on a new bidirectional stream, finishes, and returns how the
/// answer side ended.
async fn raw_bidi(conn: &quinn::Connection, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let (mut send, mut recv) = tokio::time::timeout(T, conn.open_bi())
        .await
        .expect("open_bi in time")
        .map_err(|e| e.to_string())?;
    // The server may stop the stream before it read everything: that is an answer too.
    let write = async {
        send.write_all(bytes).await.map_err(|e| e.to_string())?;
        send.finish().map_err(|e| e.to_string())
    };
    let written = tokio::time::timeout(T * 4, write)
        .await
        .expect("write in time");
    let read = tokio::time::timeout(T * 4, recv.read_to_end(1 << 20))
        .await
        .expect("answer in time")
        .map_err(|e| e.to_string());
    match (written, read) {
        (Ok(()), read) => read,
        (Err(w), Ok(r)) => Err(format!("write failed ({w}) but read {r:?}")),
        (Err(w), Err(r)) => Err(format!("{w}; {r}")),
    }
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = u32::try_from(payload.len())
        .expect("small payload")
        .to_be_bytes()
        .to_vec();
    f.extend_from_slice(payload);
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_survives_malicious_frames() {
    let ca = ClusterCa::generate("alpha").expect("ca");
    let mut n1 = TestNode::start(&ca, "n1");
    let n2 = TestNode::start(&ca, "n2");

    // Mallory has a valid certificate of the cluster and speaks QUIC directly.
    let mallory = endpoint(ca.cert_der(), &ca.issue_node("mallory").expect("mallory"));
    let pc = mallory
        .connect(n1.peer.addr, "n1", T)
        .await
        .expect("mallory connects");
    assert_eq!(pc.peer_id(), "n1");
    let conn = pc.connection();

    // A length prefix announcing 4 GiB, followed by a few bytes.
    let mut huge = u32::MAX.to_be_bytes().to_vec();
    huge.extend_from_slice(b"not 4 GiB");
    let r = raw_bidi(conn, &huge).await;
    eprintln!("4 GiB prefix: {r:?}");
    assert!(r.is_err(), "{r:?}");
    // The prefix alone.
    let r = raw_bidi(conn, &u32::MAX.to_be_bytes()).await;
    assert!(r.is_err(), "{r:?}");
    // Less than a prefix, and nothing at all.
    assert!(raw_bidi(conn, &[0, 0]).await.is_err());
    assert!(raw_bidi(conn, &[]).await.is_err());
    // A correct prefix around garbage instead of an rmp envelope.
    let r = raw_bidi(conn, &frame(b"\xc1\xc1 garbage \xff\x00")).await;
    eprintln!("garbage body: {r:?}");
    assert!(r.is_err(), "{r:?}");
    // A well-formed envelope of the wrong message type.
    let wrong = rpc::encode(&gossip("not a request")).expect("encode");
    assert!(raw_bidi(conn, &frame(&wrong)).await.is_err());
    // A prefix shorter than the body that follows.
    let ping_bytes = rpc::encode(&Request::Ping).expect("encode");
    let mut short = frame(&ping_bytes);
    short[3] -= 1;
    assert!(raw_bidi(conn, &short).await.is_err());
    // A frame larger than any the node accepts: refused without reading all of it.
    let mut oversized = u32::try_from(MAX_FRAME_PAYLOAD + 1)
        .expect("fits")
        .to_be_bytes()
        .to_vec();
    oversized.resize(4 + MAX_FRAME_PAYLOAD + 1, 0);
    let r = raw_bidi(conn, &oversized).await;
    eprintln!("oversized frame: {r:?}");
    assert!(r.is_err(), "{r:?}");

    // The same on one-way streams: nothing reaches the handler.
    for bytes in [
        huge.clone(),
        frame(b"\xc1 garbage"),
        frame(&ping_bytes),
        vec![1],
    ] {
        let mut send = conn.open_uni().await.expect("open_uni");
        send.write_all(&bytes).await.expect("write");
        send.finish().expect("finish");
    }
    // A proper one-way message after them arrives, from the authenticated id; none of the
    // malformed ones did.
    let mut send = conn.open_uni().await.expect("open_uni");
    send.write_all(&frame(&rpc::encode(&gossip("proper")).expect("encode")))
        .await
        .expect("write");
    send.finish().expect("finish");
    assert_eq!(n1.next().await, ("mallory".into(), gossip("proper")));
    n1.assert_nothing_arrives().await;

    // Mallory's connection is still up and served, and so is everybody else.
    assert!(conn.close_reason().is_none(), "{:?}", conn.close_reason());
    let answer = pc
        .request(&ping_bytes, T, 1024)
        .await
        .expect("proper request on the same connection");
    assert_eq!(
        rpc::decode::<Response>(&answer).expect("decode"),
        pong("n1")
    );
    assert_eq!(ping(&n2, &n1).await.expect("call n2->n1"), pong("n1"));
    assert_eq!(ping(&n1, &n2).await.expect("call n1->n2"), pong("n2"));

    mallory.close().await;
    n1.stop().await;
    n2.stop().await;
}

/// A peer that opens many streams of large, slow requests at once is held to its budget of
/// bytes in flight (the rest wait, and are then served), while another peer is answered at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_over_its_budget_waits_and_the_others_do_not() {
    const BUDGET: usize = 1024 * 1024;
    const FRAME: usize = 300 * 1024;
    let ca = ClusterCa::generate("alpha").expect("ca");
    let n1 = TestNode::start_limited(&ca, "n1", BUDGET);
    let n3 = TestNode::start(&ca, "n3");
    let greedy = endpoint(ca.cert_der(), &ca.issue_node("n2").expect("n2"));
    let conn = greedy
        .connect(n1.peer.addr, "n1", T)
        .await
        .expect("connect")
        .connection()
        .clone();
    // Six streams of 300 KiB requests that each take n1's handler 3 s: 1.8 MiB wanted, 1 MiB
    // allowed, so three at a time.
    let mut name = b"slow".to_vec();
    name.resize(FRAME, b'x');
    let key = quorumkv::storage::Key::new(quorumkv::storage::Kind::Typed, name);
    let payload = rpc::encode(&Request::Read(Read { key })).expect("encode");
    let streams: Vec<_> = (0..6)
        .map(|_| {
            let (conn, payload) = (conn.clone(), payload.clone());
            tokio::spawn(async move {
                let (mut send, mut recv) = conn.open_bi().await.expect("open");
                send.write_all(&(payload.len() as u32).to_be_bytes())
                    .await
                    .expect("prefix");
                send.write_all(&payload).await.expect("payload");
                send.finish().expect("finish");
                recv.read_to_end(1 << 20).await.expect("answer")
            })
        })
        .collect();
    let mut most = 0;
    let mut other_peer_took = None;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        most = most.max(n1.transport.peer_in_flight("n2"));
        if other_peer_took.is_none() && most > 0 {
            let asked = Instant::now();
            assert_eq!(ping(&n3, &n1).await.expect("n3 answered"), pong("n1"));
            other_peer_took = Some(asked.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        most <= BUDGET,
        "n2 had {most} bytes in flight, over its budget of {BUDGET}"
    );
    assert!(most >= 2 * FRAME, "the budget was not used: {most}");
    let took = other_peer_took.expect("n3 asked while n2 was over its budget");
    assert!(
        took < Duration::from_secs(2),
        "n3 waited {took:?} behind n2"
    );
    for stream in streams {
        let answer = tokio::time::timeout(Duration::from_secs(20), stream)
            .await
            .expect("served within its deadline")
            .expect("task");
        assert!(!answer.is_empty());
    }
    assert_eq!(n1.transport.peer_in_flight("n2"), 0);
    greedy.close().await;
    n1.stop().await;
    n3.stop().await;
}
