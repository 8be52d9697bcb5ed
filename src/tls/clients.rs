//! TLS on the client ports (`client_tls = true`): each node's HTTPS and `rediss://`
//! certificate, signed by the cluster CA and valid for the addresses and names clients dial,
//! and the acceptors that serve it.
//!
//! The client certificate is apart from the node's peer certificate: the peer certificate
//! names the node id for mutual TLS between nodes, this one names hosts for clients that
//! check a server the usual way (`curl --cacert ca.pem https://127.0.0.1:8101`), and it can
//! be re-issued for a new address without touching the node's identity.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair};
use rcgen::{IsCa, KeyUsagePurpose};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::{
    ClusterCa, NODE_VALIDITY_YEARS, TlsError, crypto_provider, io_err, pem_err, read_cert_pem,
    read_private_file, set_validity, write_private_file, write_public_file,
};

/// How long a client has to finish its TLS handshake before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The names a node's client certificate is valid for: the IP addresses of its HTTP and
/// Redis ports, `localhost` when one is a loopback address, and the host names the file
/// gives it (`[[node]] host_names`, for a node that listens on `0.0.0.0` or is reached by
/// name).
pub fn client_cert_names(addrs: &[SocketAddr], host_names: &[String]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for addr in addrs {
        let ip = addr.ip().to_string();
        if !addr.ip().is_unspecified() && !names.contains(&ip) {
            names.push(ip);
        }
        if addr.ip().is_loopback() && !names.iter().any(|n| n == "localhost") {
            names.push("localhost".into());
        }
    }
    for name in host_names {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

impl ClusterCa {
    /// A certificate for node `node_id`'s client ports, valid for `names` (addresses or DNS
    /// names), for server authentication only. Returns the certificate and key as PEM.
    pub fn issue_client_endpoint(
        &self,
        node_id: &str,
        names: &[String],
    ) -> Result<(String, String), TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("{node_id} client endpoint"));
        dn.push(DnType::OrganizationName, self.cluster_name.as_str());
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, NODE_VALIDITY_YEARS);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// Writes a client endpoint certificate and its key (mode 0600).
pub fn save_client_endpoint(
    cert_path: &Path,
    key_path: &Path,
    (cert_pem, key_pem): &(String, String),
) -> Result<(), TlsError> {
    write_private_file(key_path, key_pem)?;
    write_public_file(cert_path, cert_pem)
}

/// The rustls configuration of a client port: the node's client certificate, no client
/// certificates asked (clients authenticate with a password), TLS 1.2 and 1.3 so that older
/// Redis clients connect, and `alpn` offered (HTTP/1.1 for the HTTP port).
pub fn client_port_config(
    cert_path: &Path,
    key_path: &Path,
    alpn: &[&[u8]],
) -> Result<ServerConfig, TlsError> {
    let (_, cert) = read_cert_pem(cert_path)?;
    let key_pem = read_private_file(key_path)?;
    let key = PrivatePkcs8KeyDer::from_pem_slice(key_pem.as_bytes()).map_err(pem_err(key_path))?;
    let mut config = ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::clone(&cert)],
            PrivateKeyDer::Pkcs8(key),
        )?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// What a client of a client port trusts: the cluster CA only, checked the usual way against
/// the host or address it dials.
pub fn client_port_client_config(
    ca_cert: &CertificateDer<'static>,
    alpn: &[&[u8]],
) -> Result<rustls::ClientConfig, TlsError> {
    let roots = super::cluster_root_store(ca_cert)?;
    let mut config = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// An acceptor for a client port, or a message that names the file and the command that
/// makes it.
pub fn client_port_acceptor(
    cert_path: &Path,
    key_path: &Path,
    alpn: &[&[u8]],
) -> Result<TlsAcceptor, TlsError> {
    if !cert_path.exists() {
        return Err(io_err(cert_path)(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "client_tls is on but the node has no client certificate; create it with \
             `quorumkv certs --config FILE`",
        )));
    }
    client_port_config(cert_path, key_path, alpn).map(|c| TlsAcceptor::from(Arc::new(c)))
}

/// A listener for axum that hands out connections whose TLS handshake has finished; each
/// handshake runs in its own task (bounded by [`HANDSHAKE_TIMEOUT`]), so a slow or silent
/// client does not hold up the others.
pub struct TlsListener {
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accepting: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Starts accepting on `listener` with `acceptor`.
    pub fn new(listener: TcpListener, acceptor: TlsAcceptor) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (tx, accepted) = mpsc::channel(64);
        let accepting = tokio::spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!("https accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, "https handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "https handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            accepted,
            local,
            accepting,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            // The accepting task never ends while the listener lives.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cover_the_client_addresses_and_localhost() {
        let a: SocketAddr = "127.0.0.3:8101".parse().unwrap();
        let b: SocketAddr = "127.0.0.3:6101".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:1".parse().unwrap();
        assert_eq!(
            client_cert_names(&[a, b], &[]),
            vec!["127.0.0.3".to_string(), "localhost".into()]
        );
        assert_eq!(
            client_cert_names(&[any], &["db1.example".into()]),
            vec!["db1.example".to_string()]
        );
    }
}
