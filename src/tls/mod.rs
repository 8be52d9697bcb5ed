//! Cluster PKI and mutual-TLS configuration for inter-node traffic.
//!
//! # Model
//!
//! * Every cluster has one **cluster CA** (a self-signed certificate plus its
//!   private key). Only the operator / bootstrap tooling needs the CA key;
//!   nodes only need the CA *certificate* to verify peers.
//! * Every node has a **node certificate** signed directly by the cluster CA
//!   (no intermediates). The node id is carried as a DNS subjectAltName: its
//!   UTF-8 bytes in lowercase hex, then `.quorumkv` (`n1` -> `6e31.quorumkv`,
//!   see [`node_dns_name`]), so any id the config allows (`Node_1`, `eu.a`)
//!   maps to a valid, case-exact DNS name.
//! * Both directions are authenticated: the server requires a client
//!   certificate chaining to the cluster CA, and the client verifies the
//!   server certificate against the cluster CA **and** against the expected
//!   server name `<node-id>.quorumkv`.
//!
//! # Why a DNS SAN and not the CN
//!
//! rustls / webpki verify server identities *only* against subjectAltName
//! entries; the subject CN is ignored. Putting the node id in a dNSName SAN
//! means rustls itself enforces "the server I dialled really is `n2`" with the
//! stock verifier. The one custom `ServerCertVerifier` here (`NodeServerVerifier`)
//! wraps the stock one for a single case: dialling `--join HOST:PORT` without
//! knowing who listens there, it accepts any node certificate of the cluster CA
//! for the special name [`ANY_NODE_SERVER_NAME`] and verifies every other name
//! exactly as the stock verifier does. For the reverse
//! direction (server learning who the client is), webpki exposes
//! [`webpki::Cert::valid_dns_names`] on an already-verified certificate, so no
//! general-purpose X.509 parser (x509-parser) is required. The CN is also set
//! to the node id for human readability (`openssl x509 -text`) but is never
//! used for authorization.
//!
//! # Crypto provider
//!
//! The *ring* provider is always passed explicitly
//! ([`rustls::crypto::ring::default_provider`]); nothing here relies on a
//! process-wide default provider, so aws-lc-rs is never needed.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

pub mod clients;
pub mod revocation;
pub mod secret;

use revocation::{Revocations, RevokingClientVerifier};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, date_time_ymd,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// DNS suffix under which node ids are published in certificates:
/// node `n1` gets the SAN `6e31.quorumkv` (see [`node_dns_name`]).
pub const NODE_DNS_SUFFIX: &str = "quorumkv";

/// ALPN protocol id negotiated on every inter-node connection. A peer that
/// does not offer it fails the handshake (`no_application_protocol`).
pub const ALPN_PROTOCOL: &[u8] = b"quorumkv/1";

/// Maximum length of a node id, in bytes.
pub const MAX_NODE_ID_LEN: usize = 64;

/// Validity of the cluster CA certificate, in years from issuance.
pub const CA_VALIDITY_YEARS: i32 = 20;

/// Validity of node certificates, in years from issuance.
pub const NODE_VALIDITY_YEARS: i32 = 10;

/// Subject CN of every cluster CA. The cluster name goes into the O attribute
/// so that CAs of different clusters have different subject names (which
/// makes a foreign certificate fail with `UnknownIssuer` rather than
/// `BadSignature`).
const CA_COMMON_NAME: &str = "quorumkv cluster CA";

/// Errors produced while creating, loading or using cluster credentials.
#[derive(Debug)]
pub enum TlsError {
    /// Reading or writing a credential file failed.
    Io {
        /// File involved.
        path: PathBuf,
        /// Underlying error.
        source: io::Error,
    },
    /// A PEM file could not be parsed (or contained no suitable section).
    Pem {
        /// File involved.
        path: PathBuf,
        /// Underlying error.
        source: rustls::pki_types::pem::Error,
    },
    /// A private key file is readable by group or others.
    InsecureKeyPermissions {
        /// File involved.
        path: PathBuf,
        /// Actual permission bits (e.g. `0o644`).
        mode: u32,
    },
    /// Certificate generation / key parsing in rcgen failed.
    Rcgen(rcgen::Error),
    /// rustls rejected the configuration (bad key, unsupported version, ...).
    Rustls(rustls::Error),
    /// Building the client-certificate verifier failed.
    Verifier(rustls::server::VerifierBuilderError),
    /// A certificate could not be parsed as X.509.
    CertParse(webpki::Error),
    /// A node id is not valid (see [`validate_node_id`]).
    InvalidNodeId(String),
    /// A cluster name is empty, too long or contains control characters.
    InvalidClusterName(String),
    /// The certificate carries no `<id>.quorumkv` DNS name.
    NoNodeIdInCert,
    /// The certificate carries more than one `<id>.quorumkv` DNS name.
    AmbiguousNodeId(Vec<String>),
    /// The loaded CA key / cluster name do not match the loaded CA certificate.
    CaMismatch,
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Self::Pem { path, source } => write!(f, "{}: invalid PEM: {source}", path.display()),
            Self::InsecureKeyPermissions { path, mode } => write!(
                f,
                "{}: private key has mode {mode:o}, must not be accessible by group/others (chmod 600)",
                path.display()
            ),
            Self::Rcgen(e) => write!(f, "certificate generation failed: {e}"),
            Self::Rustls(e) => write!(f, "TLS configuration error: {e}"),
            Self::Verifier(e) => write!(f, "cannot build client certificate verifier: {e}"),
            Self::CertParse(e) => write!(f, "cannot parse certificate: {e}"),
            Self::InvalidNodeId(id) => write!(
                f,
                "invalid node id {id:?}: expected 1-{MAX_NODE_ID_LEN} ASCII letters, digits, '-', '_' or '.'"
            ),
            Self::InvalidClusterName(n) => write!(f, "invalid cluster name {n:?}"),
            Self::NoNodeIdInCert => {
                write!(
                    f,
                    "certificate has no '<hex node id>.{NODE_DNS_SUFFIX}' DNS name"
                )
            }
            Self::AmbiguousNodeId(ids) => {
                write!(f, "certificate names several node ids: {ids:?}")
            }
            Self::CaMismatch => write!(
                f,
                "CA key or cluster name does not match the CA certificate"
            ),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            Self::Pem { source, .. } => Some(source),
            Self::Rcgen(e) => Some(e),
            Self::Rustls(e) => Some(e),
            Self::Verifier(e) => Some(e),
            _ => None,
        }
    }
}

impl From<rcgen::Error> for TlsError {
    fn from(e: rcgen::Error) -> Self {
        Self::Rcgen(e)
    }
}

impl From<rustls::Error> for TlsError {
    fn from(e: rustls::Error) -> Self {
        Self::Rustls(e)
    }
}

impl From<rustls::server::VerifierBuilderError> for TlsError {
    fn from(e: rustls::server::VerifierBuilderError) -> Self {
        Self::Verifier(e)
    }
}

// ---------------------------------------------------------------------------
// Node ids
// ---------------------------------------------------------------------------

/// Checks that `id` is usable as a node id (the same rule as the config file:
/// 1-64 ASCII letters, digits, `-`, `_` or `.`).
pub fn validate_node_id(id: &str) -> Result<(), TlsError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_NODE_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(TlsError::InvalidNodeId(id.to_owned()))
    }
}

/// DNS name under which `node_id` appears in its certificate: the id's bytes
/// in lowercase hex, in labels of at most 62 characters, then `.quorumkv`.
/// This is also the TLS server name a client expects when dialling that node.
pub fn node_dns_name(node_id: &str) -> Result<String, TlsError> {
    validate_node_id(node_id)?;
    let hex: String = node_id.bytes().map(|b| format!("{b:02x}")).collect();
    let labels: Vec<&str> = hex
        .as_bytes()
        .chunks(62)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    Ok(format!("{}.{NODE_DNS_SUFFIX}", labels.join(".")))
}

/// The node id a DNS name from [`node_dns_name`] stands for.
fn node_id_from_dns_name(name: &str) -> Option<String> {
    let hex: String = name
        .strip_suffix(&format!(".{NODE_DNS_SUFFIX}"))?
        .split('.')
        .collect();
    if hex.is_empty() || !hex.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    let id = String::from_utf8(bytes?).ok()?;
    validate_node_id(&id).ok()?;
    Some(id)
}

/// Extracts the node id from a DER certificate by looking for exactly one
/// dNSName SAN made by [`node_dns_name`].
///
/// This only *parses*; it does not verify the certificate. Call it on a
/// certificate that rustls has already verified against the cluster CA
/// (e.g. the peer certificate of an established connection).
pub fn node_id_from_cert(cert: &CertificateDer<'_>) -> Result<String, TlsError> {
    let parsed = webpki::EndEntityCert::try_from(cert).map_err(TlsError::CertParse)?;
    let mut ids: Vec<String> = parsed
        .valid_dns_names()
        .filter_map(node_id_from_dns_name)
        .collect();
    match ids.len() {
        0 => Err(TlsError::NoNodeIdInCert),
        1 => Ok(ids.remove(0)),
        _ => Err(TlsError::AmbiguousNodeId(ids)),
    }
}

// ---------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_owned(),
        source,
    }
}

fn pem_err(path: &Path) -> impl FnOnce(rustls::pki_types::pem::Error) -> TlsError + '_ {
    move |source| TlsError::Pem {
        path: path.to_owned(),
        source,
    }
}

/// Writes a public file (certificate) with the default umask.
fn write_public_file(path: &Path, contents: &str) -> Result<(), TlsError> {
    fs::write(path, contents).map_err(io_err(path))
}

/// Writes a secret file with mode 0600.
///
/// `mode(0o600)` only applies when the file is created, so permissions are
/// also forced on the open handle *before* any secret byte is written, which
/// covers a pre-existing file with looser permissions.
fn write_private_file(path: &Path, contents: &str) -> Result<(), TlsError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))?;
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(io_err(path))?;
    file.write_all(contents.as_bytes()).map_err(io_err(path))?;
    file.sync_all().map_err(io_err(path))
}

/// Reads a secret file, refusing it if group/others have any access
/// (same policy as OpenSSH for private keys).
fn read_private_file(path: &Path) -> Result<String, TlsError> {
    let mode = fs::metadata(path)
        .map_err(io_err(path))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(TlsError::InsecureKeyPermissions {
            path: path.to_owned(),
            mode,
        });
    }
    fs::read_to_string(path).map_err(io_err(path))
}

fn read_cert_pem(path: &Path) -> Result<(String, CertificateDer<'static>), TlsError> {
    let pem = fs::read_to_string(path).map_err(io_err(path))?;
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).map_err(pem_err(path))?;
    Ok((pem, der))
}

/// Loads only the cluster CA certificate (what an ordinary node needs to
/// verify peers; the CA key stays with the operator).
pub fn load_ca_cert(path: &Path) -> Result<CertificateDer<'static>, TlsError> {
    read_cert_pem(path).map(|(_, der)| der)
}

// ---------------------------------------------------------------------------
// Certificate generation
// ---------------------------------------------------------------------------

/// Rough current calendar year (UTC). Only used to pick validity bounds on
/// Jan 1, so an error of a day around New Year is irrelevant: `not_before`
/// is set to Jan 1 of the *previous* year, which is always in the past and
/// also tolerates clock skew between nodes.
fn approx_current_year() -> i32 {
    const SECS_PER_GREGORIAN_YEAR: u64 = 31_556_952;
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    1970 + i32::try_from(secs / SECS_PER_GREGORIAN_YEAR).unwrap_or(0)
}

fn set_validity(params: &mut CertificateParams, years: i32) {
    let year = approx_current_year();
    params.not_before = date_time_ymd(year - 1, 1, 1);
    params.not_after = date_time_ymd(year + years, 1, 1);
}

fn validate_cluster_name(name: &str) -> Result<(), TlsError> {
    if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
        return Err(TlsError::InvalidClusterName(name.to_owned()));
    }
    Ok(())
}

/// Parameters of the cluster CA that determine the [`Issuer`]: subject DN,
/// key usages and key-identifier method. They are a pure function of the
/// cluster name, which is what allows re-creating the issuer from the PEM
/// files without parsing the CA certificate (rcgen's
/// `Issuer::from_ca_cert_pem` needs rcgen's optional `x509-parser` feature).
fn ca_params(cluster_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    dn.push(DnType::OrganizationName, cluster_name);
    params.distinguished_name = dn;
    // Path length 0: the CA may sign node certificates only, no sub-CAs.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// The cluster certificate authority: CA certificate plus signing key.
pub struct ClusterCa {
    cluster_name: String,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key.
        f.debug_struct("ClusterCa")
            .field("cluster_name", &self.cluster_name)
            .finish_non_exhaustive()
    }
}

impl ClusterCa {
    /// Generates a fresh CA (ECDSA P-256) for `cluster_name`.
    pub fn generate(cluster_name: &str) -> Result<Self, TlsError> {
        validate_cluster_name(cluster_name)?;
        let key = KeyPair::generate()?;
        let mut params = ca_params(cluster_name);
        set_validity(&mut params, CA_VALIDITY_YEARS);
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cluster_name: cluster_name.to_owned(),
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA previously written by [`ClusterCa::save`].
    ///
    /// The issuer is rebuilt from `cluster_name`; to make sure the result
    /// really signs certificates that chain to the loaded CA certificate, a
    /// throw-away certificate is self-signed with the loaded key and its
    /// subject DN and public key are compared byte-for-byte with the CA
    /// certificate's. Fails with [`TlsError::CaMismatch`] otherwise.
    pub fn load(cluster_name: &str, cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        validate_cluster_name(cluster_name)?;
        let (cert_pem, cert_der) = read_cert_pem(cert_path)?;
        let key_pem = read_private_file(key_path)?;
        let key = KeyPair::from_pem(&key_pem)?;
        let params = ca_params(cluster_name);

        let probe = params.self_signed(&key)?;
        let loaded = webpki::EndEntityCert::try_from(&cert_der).map_err(TlsError::CertParse)?;
        let probe_der = probe.der();
        let rebuilt = webpki::EndEntityCert::try_from(probe_der).map_err(TlsError::CertParse)?;
        if loaded.subject() != rebuilt.subject()
            || loaded.subject_public_key_info() != rebuilt.subject_public_key_info()
        {
            return Err(TlsError::CaMismatch);
        }

        Ok(Self {
            cluster_name: cluster_name.to_owned(),
            cert_pem,
            cert_der,
            issuer: Issuer::new(params, key),
        })
    }

    /// Writes the CA certificate (default permissions) and CA key (0600) as PEM.
    pub fn save(&self, cert_path: &Path, key_path: &Path) -> Result<(), TlsError> {
        write_private_file(key_path, &self.issuer.key().serialize_pem())?;
        write_public_file(cert_path, &self.cert_pem)
    }

    /// Cluster name this CA was created for.
    pub fn cluster_name(&self) -> &str {
        &self.cluster_name
    }

    /// DER of the CA certificate (the single trust anchor of the cluster).
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// PEM of the CA certificate.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a certificate + fresh key for `node_id`.
    ///
    /// The certificate carries the SAN [`node_dns_name`]`(node_id)`, CN `<node_id>`,
    /// key usage digitalSignature and EKU serverAuth + clientAuth (every node
    /// is both a server and a client on the same endpoint).
    pub fn issue_node(&self, node_id: &str) -> Result<NodeCredentials, TlsError> {
        let dns_name = node_dns_name(node_id)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![dns_name])?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, node_id);
        dn.push(DnType::OrganizationName, self.cluster_name.as_str());
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, NODE_VALIDITY_YEARS);
        let cert = params.signed_by(&key, &self.issuer)?;

        Ok(NodeCredentials {
            node_id: node_id.to_owned(),
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key_pem: key.serialize_pem(),
            key_der: PrivatePkcs8KeyDer::from(key.serialize_der()),
        })
    }
}

/// A node's own certificate and private key.
pub struct NodeCredentials {
    node_id: String,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key_pem: String,
    key_der: PrivatePkcs8KeyDer<'static>,
}

impl fmt::Debug for NodeCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeCredentials")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl NodeCredentials {
    /// Loads a node certificate and key written by [`NodeCredentials::save`].
    ///
    /// The node id is taken from the certificate's SAN. The key file must
    /// not be accessible by group/others. The key must be PKCS#8 PEM
    /// (`-----BEGIN PRIVATE KEY-----`), which is what `save` writes.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let (cert_pem, cert_der) = read_cert_pem(cert_path)?;
        let node_id = node_id_from_cert(&cert_der)?;
        let key_pem = read_private_file(key_path)?;
        let key_der =
            PrivatePkcs8KeyDer::from_pem_slice(key_pem.as_bytes()).map_err(pem_err(key_path))?;
        Ok(Self {
            node_id,
            cert_pem,
            cert_der,
            key_pem,
            key_der,
        })
    }

    /// Writes the certificate (default permissions) and key (0600) as PEM.
    pub fn save(&self, cert_path: &Path, key_path: &Path) -> Result<(), TlsError> {
        write_private_file(key_path, &self.key_pem)?;
        write_public_file(cert_path, &self.cert_pem)
    }

    /// The node id carried by the certificate.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// DER of the node certificate.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key_der.clone_key())
    }
}

// ---------------------------------------------------------------------------
// rustls configuration
// ---------------------------------------------------------------------------

/// The crypto provider used everywhere: *ring*, passed explicitly.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A root store whose only trust anchor is the cluster CA.
pub fn cluster_root_store(ca_cert: &CertificateDer<'static>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.add(ca_cert.clone())?;
    Ok(roots)
}

/// rustls server config for a node: TLS 1.3 only, presents `node`'s
/// certificate, **requires** a client certificate chaining to `ca_cert`.
///
/// Session tickets are disabled so every connection performs full
/// certificate verification (peer identity is never inherited from a resumed
/// session); inter-node connections are long-lived, so the cost is nil.
pub fn server_tls_config(
    ca_cert: &CertificateDer<'static>,
    node: &NodeCredentials,
    revoked: &Revocations,
) -> Result<ServerConfig, TlsError> {
    let provider = crypto_provider();
    let roots = Arc::new(cluster_root_store(ca_cert)?);
    // `build()` without `allow_unauthenticated()` => client auth is mandatory.
    let inner = WebPkiClientVerifier::builder_with_provider(roots, provider.clone()).build()?;
    let verifier = Arc::new(RevokingClientVerifier {
        inner,
        revoked: revoked.clone(),
    });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![node.cert_der.clone()], node.key_der())?;
    config.alpn_protocols = vec![ALPN_PROTOCOL.to_vec()];
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// Server name to dial when the peer's node id is not known yet (`quorumkv node
/// --join HOST:PORT`). It is not hex, so it never names a node: the verifier
/// then accepts any certificate the cluster CA issued to a node, and the caller
/// reads the id from it.
pub const ANY_NODE_SERVER_NAME: &str = "any-node.quorumkv";

/// The stock webpki verifier, except for [`ANY_NODE_SERVER_NAME`], which it
/// verifies against the node name found in the certificate itself.
#[derive(Debug)]
struct NodeServerVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    revoked: Revocations,
}

impl rustls::client::danger::ServerCertVerifier for NodeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if self.revoked.is_revoked(end_entity) {
            return Err(Revocations::error());
        }
        let wants_any = matches!(server_name, rustls::pki_types::ServerName::DnsName(n) if n.as_ref() == ANY_NODE_SERVER_NAME);
        if !wants_any {
            return self.inner.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            );
        }
        let id = node_id_from_cert(end_entity).map_err(|e| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
                Arc::new(e),
            )))
        })?;
        let name = node_dns_name(&id)
            .ok()
            .and_then(|n| rustls::pki_types::ServerName::try_from(n).ok())
            .ok_or(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName,
            ))?;
        self.inner
            .verify_server_cert(end_entity, intermediates, &name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// rustls client config for a node: TLS 1.3 only, trusts only `ca_cert`,
/// presents `node`'s certificate as client certificate.
///
/// The server name to verify is chosen per connection (see [`node_dns_name`]
/// and [`ANY_NODE_SERVER_NAME`]); webpki checks it against the server
/// certificate's dNSName SANs.
pub fn client_tls_config(
    ca_cert: &CertificateDer<'static>,
    node: &NodeCredentials,
    revoked: &Revocations,
) -> Result<ClientConfig, TlsError> {
    let provider = crypto_provider();
    let roots = Arc::new(cluster_root_store(ca_cert)?);
    let inner =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NodeServerVerifier {
            inner,
            revoked: revoked.clone(),
        }))
        .with_client_auth_cert(vec![node.cert_der.clone()], node.key_der())?;
    config.alpn_protocols = vec![ALPN_PROTOCOL.to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

/// Where a cluster's TLS material lives: `<data_dir>/tls/`.
#[derive(Debug, Clone)]
pub struct TlsPaths {
    /// The `tls` directory itself.
    pub dir: PathBuf,
}

impl TlsPaths {
    /// The paths under `<data_dir>/tls/`.
    pub fn new(data_dir: &Path) -> Self {
        TlsPaths {
            dir: data_dir.join("tls"),
        }
    }
    /// `ca.pem`: the CA certificate every node needs to check its peers.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    /// `ca.key`: the CA's private key, needed only to issue node certificates.
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    /// `node-<id>.pem`: the prefix keeps a node named `ca` apart from the CA.
    pub fn node_cert(&self, id: &str) -> PathBuf {
        self.dir.join(format!("node-{id}.pem"))
    }
    /// `node-<id>.key`: the node's private key, written mode 0600.
    pub fn node_key(&self, id: &str) -> PathBuf {
        self.dir.join(format!("node-{id}.key"))
    }
    /// `client-<id>.pem`: the certificate of the node's HTTPS and `rediss://` ports.
    pub fn client_cert(&self, id: &str) -> PathBuf {
        self.dir.join(format!("client-{id}.pem"))
    }
    /// `client-<id>.key`: its private key, written mode 0600.
    pub fn client_key(&self, id: &str) -> PathBuf {
        self.dir.join(format!("client-{id}.key"))
    }
    /// `cluster.secret`: the key that signs context tokens, the same on every node.
    pub fn cluster_secret(&self) -> PathBuf {
        self.dir.join("cluster.secret")
    }
}

/// What `quorumkv certs` makes for one node: its peer certificate, and its client
/// endpoint certificate valid for `client_names`.
#[derive(Debug, Clone)]
pub struct NodeMaterial {
    /// The node id.
    pub id: String,
    /// The addresses and host names of its client ports ([`clients::client_cert_names`]).
    pub client_names: Vec<String>,
}

/// Creates whatever is missing under `paths`: the cluster CA and the cluster secret, then a
/// peer and a client endpoint certificate for each of `nodes`. Never replaces a file that
/// exists. Returns what it created, for the operator.
pub fn ensure_material(
    paths: &TlsPaths,
    cluster_name: &str,
    nodes: &[NodeMaterial],
) -> Result<Vec<PathBuf>, TlsError> {
    let mut created = Vec::new();
    fs::create_dir_all(&paths.dir).map_err(io_err(&paths.dir))?;
    let missing_peer: Vec<&NodeMaterial> = nodes
        .iter()
        .filter(|n| !(paths.node_cert(&n.id).exists() && paths.node_key(&n.id).exists()))
        .collect();
    let missing_client: Vec<&NodeMaterial> = nodes
        .iter()
        .filter(|n| !(paths.client_cert(&n.id).exists() && paths.client_key(&n.id).exists()))
        .collect();
    let complete = missing_peer.is_empty()
        && missing_client.is_empty()
        && paths.ca_cert().exists()
        && paths.cluster_secret().exists();
    if complete && !paths.ca_key().exists() {
        // A node host with everything it needs and no CA key: nothing to check or issue.
        return Ok(created);
    }
    let ca = if paths.ca_cert().exists() && paths.ca_key().exists() {
        ClusterCa::load(cluster_name, &paths.ca_cert(), &paths.ca_key())?
    } else if paths.ca_cert().exists() {
        // A CA certificate without its key (a node host): a new CA would orphan every
        // certificate already issued, and a new secret every context token, so refuse.
        return Err(TlsError::Io {
            path: paths.ca_key(),
            source: io::Error::new(
                io::ErrorKind::NotFound,
                "the CA key is missing, so nothing can be issued here; create the node \
                 certificates and cluster.secret where the CA key is and copy them over",
            ),
        });
    } else {
        let ca = ClusterCa::generate(cluster_name)?;
        ca.save(&paths.ca_cert(), &paths.ca_key())?;
        created.push(paths.ca_cert());
        ca
    };
    if !paths.cluster_secret().exists() {
        secret::ClusterSecret::generate().save(&paths.cluster_secret())?;
        created.push(paths.cluster_secret());
    }
    for node in missing_peer {
        let creds = ca.issue_node(&node.id)?;
        creds.save(&paths.node_cert(&node.id), &paths.node_key(&node.id))?;
        created.push(paths.node_cert(&node.id));
    }
    for node in missing_client {
        let endpoint = ca.issue_client_endpoint(&node.id, &node.client_names)?;
        clients::save_client_endpoint(
            &paths.client_cert(&node.id),
            &paths.client_key(&node.id),
            &endpoint,
        )?;
        created.push(paths.client_cert(&node.id));
    }
    Ok(created)
}
