//! QUIC transport between cluster nodes (quinn 0.11 over rustls 0.23 / *ring*).
//!
//! Each node runs **one** [`quinn::Endpoint`] on one UDP socket that both
//! accepts connections (server role) and dials peers (client role). Both
//! roles use mutual TLS with the cluster CA (see [`crate::tls`]).
//!
//! # Connection protocol
//!
//! After the QUIC/TLS handshake the client opens a first bidirectional stream
//! and sends a *hello* naming the node id it claims to be. The server compares
//! it with the node id in the client's (already CA-verified) certificate and
//! either answers with its own node id or closes the connection with
//! [`CLOSE_IDENTITY_MISMATCH`]. The hello round-trip also gives the client a
//! positive confirmation that the server accepted its certificate: in TLS 1.3
//! the client finishes its side of the handshake *before* the server has
//! checked the client certificate, so a client whose certificate is rejected
//! still sees `connect()` succeed at the QUIC level and only learns about the
//! rejection on first use. [`NodeEndpoint::connect`] therefore only returns
//! once the hello has been acknowledged.
//!
//! Every request is then one bidirectional stream: the client writes one
//! length-prefixed frame and finishes its send side, the server answers with
//! one length-prefixed frame and finishes. All steps run under deadlines and
//! all reads are size-bounded.
//!
//! One-way messages (gossip) travel the same way on a unidirectional stream, without an
//! answer.
//!
//! Frame format: `u32` big-endian payload length, then the payload (an [`rpc`] envelope).
//!
//! [`QuicTransport`] keeps one long-lived connection per peer on top of this, reopened on
//! failure with exponential backoff, and implements [`Transport`].

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use quinn::crypto::rustls::{NoInitialCipherSuite, QuicClientConfig, QuicServerConfig};
use quinn::{
    ClosedStream, ConnectError, Connection, ConnectionError, Endpoint, IdleTimeout, Incoming,
    ReadError, ReadToEndError, RecvStream, SendStream, TransportConfig, VarInt, WriteError,
};
use rustls::pki_types::CertificateDer;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout_at};

use crate::tls::revocation::Revocations;
use crate::tls::{self, MAX_NODE_ID_LEN, NodeCredentials, TlsError};

use super::{AnswerTo, BoxFuture, FaultTable, Handler, Peer, Transport, TransportError};
use crate::rpc::{self, EncodedRequest, OneWay, ReplicaError, Request, Response};

/// The UDP socket buffers a node asks for (each way).
const UDP_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// Maximum number of concurrently open bidirectional streams a peer may open.
pub const MAX_CONCURRENT_BIDI_STREAMS: u32 = 1024;
/// Idle timeout in milliseconds (QUIC transport parameter unit).
pub const MAX_IDLE_TIMEOUT_MS: u32 = 10_000;
/// Idle timeout negotiated with peers (the smaller of both sides wins).
pub const MAX_IDLE_TIMEOUT: Duration = Duration::from_millis(MAX_IDLE_TIMEOUT_MS as u64);
/// Keep-alive interval; must be well below [`MAX_IDLE_TIMEOUT`].
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(2);
/// Receive buffer for unreliable datagrams (`Some` enables datagram support).
pub const DATAGRAM_RECEIVE_BUFFER: usize = 1 << 20;
/// Default deadline for establishing a connection (handshake + hello).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default deadline for serving one request on the server side.
pub const DEFAULT_SERVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Maximum payload size of a request or response frame.
pub const MAX_FRAME_PAYLOAD: usize = rpc::MAX_FRAME_BYTES;
/// Maximum number of concurrently open unidirectional (one-way message) streams.
pub const MAX_CONCURRENT_UNI_STREAMS: u32 = 1024;
pub use crate::config::DEFAULT_PEER_BUDGET_BYTES;

/// Application close code: normal shutdown.
pub const CLOSE_NORMAL: VarInt = VarInt::from_u32(0);
/// Application close code: peer violated the framing / hello protocol.
pub const CLOSE_PROTOCOL_ERROR: VarInt = VarInt::from_u32(1);
/// Application close code: claimed node id differs from the certificate's.
pub const CLOSE_IDENTITY_MISMATCH: VarInt = VarInt::from_u32(2);
/// Stream error code used when a request cannot be served.
const STREAM_ERROR: VarInt = VarInt::from_u32(1);

const LEN_PREFIX: usize = 4;
const HELLO_VERSION: u8 = 1;
/// version byte + id length byte + id.
const MAX_HELLO_PAYLOAD: usize = 2 + MAX_NODE_ID_LEN;

/// Errors of the QUIC layer.
#[derive(Debug)]
pub enum QuicError {
    /// Building TLS configuration or parsing a certificate failed.
    Tls(TlsError),
    /// The rustls config is not usable for QUIC (no TLS 1.3 / initial suite).
    QuicCrypto(NoInitialCipherSuite),
    /// Binding the UDP socket failed.
    Bind(io::Error),
    /// The connection attempt could not even be started (endpoint stopping,
    /// invalid server name, ...).
    Connect(ConnectError),
    /// The QUIC/TLS handshake failed. For certificate problems the message
    /// contains the rustls reason, e.g.
    /// `the cryptographic handshake failed: error 48: invalid peer certificate: UnknownIssuer`
    /// (locally detected) or `... error 48` (alert received from the peer).
    Handshake(ConnectionError),
    /// The established connection failed (while opening, accepting, reading
    /// or writing streams). Connection loss observed through a stream is
    /// reported here, not as [`QuicError::Read`]/[`QuicError::Write`], so
    /// the peer's close reason is always visible.
    Connection(ConnectionError),
    /// Writing to a stream failed for a stream-level reason (peer stopped it).
    Write(WriteError),
    /// Reading from a stream failed for a stream-level reason (peer reset,
    /// response larger than the caller's bound, ...).
    Read(ReadToEndError),
    /// The stream was already closed when finishing it.
    StreamClosed(ClosedStream),
    /// A deadline expired; the payload names the step.
    Timeout(&'static str),
    /// The connection has no peer certificate (should not happen with mTLS).
    NoPeerIdentity,
    /// The peer sent a malformed frame or hello.
    Protocol(&'static str),
    /// A frame payload exceeds [`MAX_FRAME_PAYLOAD`].
    FrameTooLarge(usize),
    /// The node id claimed in the hello differs from the certificate's.
    IdentityMismatch {
        /// Id claimed in the hello message.
        claimed: String,
        /// Id carried by the verified certificate.
        certified: String,
    },
    /// The server's hello-ack names a different node than its certificate.
    UnexpectedPeer {
        /// Node id we dialled / the certificate names.
        expected: String,
        /// Node id in the hello-ack.
        actual: String,
    },
}

impl fmt::Display for QuicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tls(e) => write!(f, "{e}"),
            Self::QuicCrypto(e) => write!(f, "TLS config unusable for QUIC: {e}"),
            Self::Bind(e) => write!(f, "cannot bind UDP socket: {e}"),
            Self::Connect(e) => write!(f, "cannot start connection: {e}"),
            Self::Handshake(e) => write!(f, "handshake failed: {e}"),
            Self::Connection(e) => write!(f, "connection failed: {e}"),
            Self::Write(e) => write!(f, "stream write failed: {e}"),
            Self::Read(e) => write!(f, "stream read failed: {e}"),
            Self::StreamClosed(e) => write!(f, "stream already closed: {e}"),
            Self::Timeout(step) => write!(f, "timed out while {step}"),
            Self::NoPeerIdentity => write!(f, "peer presented no certificate"),
            Self::Protocol(what) => write!(f, "protocol violation: {what}"),
            Self::FrameTooLarge(n) => {
                write!(f, "frame of {n} bytes exceeds limit of {MAX_FRAME_PAYLOAD}")
            }
            Self::IdentityMismatch { claimed, certified } => write!(
                f,
                "peer claims node id {claimed:?} but its certificate is for {certified:?}"
            ),
            Self::UnexpectedPeer { expected, actual } => {
                write!(f, "expected node {expected:?}, peer says it is {actual:?}")
            }
        }
    }
}

impl std::error::Error for QuicError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Tls(e) => Some(e),
            Self::QuicCrypto(e) => Some(e),
            Self::Bind(e) => Some(e),
            Self::Connect(e) => Some(e),
            Self::Handshake(e) | Self::Connection(e) => Some(e),
            Self::Write(e) => Some(e),
            Self::Read(e) => Some(e),
            Self::StreamClosed(e) => Some(e),
            _ => None,
        }
    }
}

impl From<TlsError> for QuicError {
    fn from(e: TlsError) -> Self {
        Self::Tls(e)
    }
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

/// Transport parameters shared by the server and client side.
pub fn transport_config() -> TransportConfig {
    let mut transport = TransportConfig::default();
    // What quinn itself buffers of a connection's unread streams (the default is unbounded):
    // with the per-peer budget of what has been read, this bounds a peer's memory here.
    let window = u32::try_from(DEFAULT_PEER_BUDGET_BYTES).unwrap_or(u32::MAX);
    transport
        .receive_window(VarInt::from_u32(window))
        .max_concurrent_bidi_streams(VarInt::from_u32(MAX_CONCURRENT_BIDI_STREAMS))
        // One-way messages (gossip) each travel on a unidirectional stream.
        .max_concurrent_uni_streams(VarInt::from_u32(MAX_CONCURRENT_UNI_STREAMS))
        // IdleTimeout is in milliseconds; a u32 always fits a VarInt.
        .max_idle_timeout(Some(IdleTimeout::from(VarInt::from_u32(
            MAX_IDLE_TIMEOUT_MS,
        ))))
        .keep_alive_interval(Some(KEEP_ALIVE_INTERVAL))
        .datagram_receive_buffer_size(Some(DATAGRAM_RECEIVE_BUFFER));
    transport
}

/// Builds the quinn server and client configs for `node`, trusting only
/// `ca_cert`.
pub fn endpoint_configs(
    ca_cert: &CertificateDer<'static>,
    node: &NodeCredentials,
    revoked: &Revocations,
) -> Result<(quinn::ServerConfig, quinn::ClientConfig), QuicError> {
    let transport = Arc::new(transport_config());

    let server_tls = Arc::new(tls::server_tls_config(ca_cert, node, revoked)?);
    let server_crypto = QuicServerConfig::try_from(server_tls).map_err(QuicError::QuicCrypto)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
    server.transport_config(transport.clone());

    let client_tls = Arc::new(tls::client_tls_config(ca_cert, node, revoked)?);
    let client_crypto = QuicClientConfig::try_from(client_tls).map_err(QuicError::QuicCrypto)?;
    let mut client = quinn::ClientConfig::new(Arc::new(client_crypto));
    client.transport_config(transport);

    Ok((server, client))
}

// ---------------------------------------------------------------------------
// Peer identity
// ---------------------------------------------------------------------------

/// Node id of the remote side of an established connection, taken from the
/// leaf certificate rustls verified during the handshake.
///
/// `Connection::peer_identity()` returns `Box<dyn Any>`; with the rustls
/// crypto backend it holds a `Vec<CertificateDer<'static>>` (leaf first).
pub fn peer_node_id(conn: &Connection) -> Result<String, QuicError> {
    let identity = conn.peer_identity().ok_or(QuicError::NoPeerIdentity)?;
    let chain = identity
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| QuicError::NoPeerIdentity)?;
    let leaf = chain.first().ok_or(QuicError::NoPeerIdentity)?;
    Ok(tls::node_id_from_cert(leaf)?)
}

// ---------------------------------------------------------------------------
// Framing
// ---------------------------------------------------------------------------

/// Lifts connection loss out of a stream write error (its `Display` would
/// otherwise just say "connection lost" and hide the peer's close reason).
fn write_error(e: WriteError) -> QuicError {
    match e {
        WriteError::ConnectionLost(e) => QuicError::Connection(e),
        other => QuicError::Write(other),
    }
}

/// Same as [`write_error`] for reads.
fn read_error(e: ReadToEndError) -> QuicError {
    match e {
        ReadToEndError::Read(ReadError::ConnectionLost(e)) => QuicError::Connection(e),
        other => QuicError::Read(other),
    }
}

/// The length prefix of a frame carrying `len` payload bytes.
fn frame_prefix(len: usize) -> Result<[u8; LEN_PREFIX], QuicError> {
    if len > MAX_FRAME_PAYLOAD {
        return Err(QuicError::FrameTooLarge(len));
    }
    let len = u32::try_from(len).map_err(|_| QuicError::FrameTooLarge(len))?;
    Ok(len.to_be_bytes())
}

/// Splits a complete stream (`u32` length + payload, nothing after) into its
/// payload.
fn decode_frame(buf: &[u8]) -> Result<&[u8], QuicError> {
    let (prefix, payload) = buf
        .split_first_chunk::<LEN_PREFIX>()
        .ok_or(QuicError::Protocol("frame shorter than its length prefix"))?;
    let len = u32::from_be_bytes(*prefix) as usize;
    if len != payload.len() {
        return Err(QuicError::Protocol(
            "frame length prefix does not match stream length",
        ));
    }
    Ok(payload)
}

/// Writes one frame and finishes the send side, before `deadline`. The payload is handed to
/// quinn as it is, not copied.
async fn write_frame(
    send: &mut SendStream,
    payload: Bytes,
    deadline: Instant,
) -> Result<(), QuicError> {
    let prefix = frame_prefix(payload.len())?;
    let mut chunks = [Bytes::copy_from_slice(&prefix), payload];
    timeout_at(deadline, send.write_all_chunks(&mut chunks))
        .await
        .map_err(|_| QuicError::Timeout("writing frame"))?
        .map_err(write_error)?;
    send.finish().map_err(QuicError::StreamClosed)
}

/// How much one peer may have in flight at this node: a byte budget that frames take from
/// before they are read and give back once handled, so that a peer past it waits for its own
/// earlier requests while every other peer goes on. Cheap to clone (clones share it).
#[derive(Debug, Clone)]
pub struct PeerBudget {
    bytes: usize,
    left: Arc<tokio::sync::Semaphore>,
}

impl PeerBudget {
    /// A budget of `bytes` (at least 1).
    pub fn new(bytes: usize) -> PeerBudget {
        let bytes = bytes.clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
        PeerBudget {
            bytes,
            left: Arc::new(tokio::sync::Semaphore::new(bytes)),
        }
    }

    /// Waits until `len` bytes fit (a frame larger than the whole budget waits for all of
    /// it), and holds them until the permit is dropped.
    pub async fn admit(&self, len: usize) -> Result<tokio::sync::OwnedSemaphorePermit, QuicError> {
        let want = u32::try_from(len.clamp(1, self.bytes)).unwrap_or(u32::MAX);
        Arc::clone(&self.left)
            .acquire_many_owned(want)
            .await
            .map_err(|_| QuicError::Protocol("the peer's budget is closed"))
    }

    /// Bytes in flight now.
    pub fn in_flight(&self) -> usize {
        self.bytes.saturating_sub(self.left.available_permits())
    }
}

/// Reads one frame of a peer's request stream within its budget: the length first, then
/// (once the budget has room for it) the payload. The permit travels with the frame.
async fn read_frame_within(
    recv: &mut RecvStream,
    budget: &PeerBudget,
    deadline: Instant,
) -> Result<(Bytes, tokio::sync::OwnedSemaphorePermit), QuicError> {
    let mut prefix = [0u8; LEN_PREFIX];
    timeout_at(deadline, recv.read_exact(&mut prefix))
        .await
        .map_err(|_| QuicError::Timeout("reading frame"))?
        .map_err(|e| match e {
            quinn::ReadExactError::ReadError(ReadError::ConnectionLost(e)) => {
                QuicError::Connection(e)
            }
            _ => QuicError::Protocol("stream ended inside a frame's length prefix"),
        })?;
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME_PAYLOAD {
        return Err(QuicError::FrameTooLarge(len));
    }
    let permit = timeout_at(deadline, budget.admit(len))
        .await
        .map_err(|_| QuicError::Timeout("waiting for the peer's budget"))??;
    let payload = timeout_at(deadline, recv.read_to_end(len))
        .await
        .map_err(|_| QuicError::Timeout("reading frame"))?
        .map_err(read_error)?;
    if payload.len() != len {
        return Err(QuicError::Protocol(
            "frame length prefix does not match stream length",
        ));
    }
    Ok((Bytes::from(payload), permit))
}

/// Reads the whole receive side (one frame) before `deadline`, refusing
/// payloads larger than `max_payload`. The payload is a view into what was read.
async fn read_frame(
    recv: &mut RecvStream,
    max_payload: usize,
    deadline: Instant,
) -> Result<Bytes, QuicError> {
    let buf = timeout_at(deadline, recv.read_to_end(LEN_PREFIX + max_payload))
        .await
        .map_err(|_| QuicError::Timeout("reading frame"))?
        .map_err(read_error)?;
    decode_frame(&buf)?;
    Ok(Bytes::from(buf).slice(LEN_PREFIX..))
}

fn encode_hello(node_id: &str) -> Result<Vec<u8>, QuicError> {
    tls::validate_node_id(node_id)?;
    let len = u8::try_from(node_id.len()).map_err(|_| QuicError::Protocol("node id too long"))?;
    let mut payload = Vec::with_capacity(2 + node_id.len());
    payload.push(HELLO_VERSION);
    payload.push(len);
    payload.extend_from_slice(node_id.as_bytes());
    Ok(payload)
}

fn decode_hello(payload: &[u8]) -> Result<String, QuicError> {
    let [version, len, id @ ..] = payload else {
        return Err(QuicError::Protocol("hello too short"));
    };
    if *version != HELLO_VERSION {
        return Err(QuicError::Protocol("unsupported hello version"));
    }
    if usize::from(*len) != id.len() {
        return Err(QuicError::Protocol("hello length mismatch"));
    }
    let id = std::str::from_utf8(id).map_err(|_| QuicError::Protocol("hello id not UTF-8"))?;
    tls::validate_node_id(id)
        .map_err(|_| QuicError::Protocol("hello id is not a valid node id"))?;
    Ok(id.to_owned())
}

// ---------------------------------------------------------------------------
// Endpoint
// ---------------------------------------------------------------------------

/// A node's QUIC endpoint: one UDP socket, server and client at once.
/// Cheap to clone (clones share the socket).
#[derive(Debug, Clone)]
pub struct NodeEndpoint {
    endpoint: Endpoint,
    node_id: String,
}

impl NodeEndpoint {
    /// Binds `addr` (e.g. `127.0.0.2:7000`, port 0 for an ephemeral port)
    /// and configures both roles with `node`'s credentials.
    ///
    /// Must be called inside a tokio runtime.
    pub fn bind(
        addr: SocketAddr,
        ca_cert: &CertificateDer<'static>,
        node: &NodeCredentials,
    ) -> Result<Self, QuicError> {
        Self::bind_revoking(addr, ca_cert, node, &Revocations::default())
    }

    /// [`bind`](Self::bind), refusing the certificates of `revoked` in both directions.
    pub fn bind_revoking(
        addr: SocketAddr,
        ca_cert: &CertificateDer<'static>,
        node: &NodeCredentials,
        revoked: &Revocations,
    ) -> Result<Self, QuicError> {
        let (server, client) = endpoint_configs(ca_cert, node, revoked)?;
        let socket = std::net::UdpSocket::bind(addr).map_err(QuicError::Bind)?;
        // Bursts of replica traffic overflowed the default receive buffer (~208 KiB) and the
        // lost packets waited for QUIC's retransmission timeout: stalls of ~200 ms. Ask for
        // more; the kernel caps it at net.core.[rw]mem_max, and less is still fine.
        use nix::sys::socket::{setsockopt, sockopt};
        let receive = setsockopt(&socket, sockopt::RcvBuf, &UDP_BUFFER_BYTES);
        let send = setsockopt(&socket, sockopt::SndBuf, &UDP_BUFFER_BYTES);
        if let Err(e) = receive.and(send) {
            tracing::debug!("cannot enlarge the UDP socket's buffers: {e}");
        }
        let runtime = quinn::default_runtime()
            .ok_or_else(|| QuicError::Bind(io::Error::other("no async runtime")))?;
        let mut endpoint = Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server),
            socket,
            runtime,
        )
        .map_err(QuicError::Bind)?;
        endpoint.set_default_client_config(client);
        Ok(Self {
            endpoint,
            node_id: node.node_id().to_owned(),
        })
    }

    /// Our own node id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The bound socket address (with the actual port if 0 was requested).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Connects to node `peer_id` at `addr`: QUIC/TLS handshake (the server
    /// certificate must chain to the cluster CA and be issued for
    /// [`tls::node_dns_name`]`(peer_id)`), then the hello exchange. Everything must
    /// complete within `timeout`.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        peer_id: &str,
        timeout: Duration,
    ) -> Result<PeerConnection, QuicError> {
        self.connect_claiming(addr, peer_id, &self.node_id, timeout)
            .await
    }

    /// [`connect`](Self::connect) with an arbitrary claimed id in the hello;
    /// only for tests of the server-side identity check.
    pub(crate) async fn connect_claiming(
        &self,
        addr: SocketAddr,
        peer_id: &str,
        claimed_id: &str,
        timeout: Duration,
    ) -> Result<PeerConnection, QuicError> {
        let server_name = tls::node_dns_name(peer_id)?;
        self.connect_named(addr, &server_name, claimed_id, timeout)
            .await
    }

    /// Connects to whichever node listens at `addr` (any certificate of the
    /// cluster CA) and tells who it is: how `--join HOST:PORT` finds its seed.
    pub async fn identify(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<PeerConnection, QuicError> {
        self.connect_named(addr, tls::ANY_NODE_SERVER_NAME, &self.node_id, timeout)
            .await
    }

    async fn connect_named(
        &self,
        addr: SocketAddr,
        server_name: &str,
        claimed_id: &str,
        timeout: Duration,
    ) -> Result<PeerConnection, QuicError> {
        let deadline = Instant::now() + timeout;
        let connecting = self
            .endpoint
            .connect(addr, server_name)
            .map_err(QuicError::Connect)?;
        let conn = timeout_at(deadline, connecting)
            .await
            .map_err(|_| QuicError::Timeout("handshaking"))?
            .map_err(QuicError::Handshake)?;

        // rustls has already checked the SAN against `server_name`; reading
        // it back is a cheap consistency check and gives the canonical id.
        let certified = peer_node_id(&conn)?;
        if let Err(e) = client_hello(&conn, claimed_id, &certified, deadline).await {
            conn.close(CLOSE_PROTOCOL_ERROR, b"hello failed");
            // The server closing the connection during the hello means it
            // rejected us (TLS alert for our certificate, or identity
            // mismatch): report it as a failed handshake.
            return Err(match e {
                QuicError::Connection(e) => QuicError::Handshake(e),
                other => other,
            });
        }
        Ok(PeerConnection {
            conn,
            peer_id: certified,
        })
    }

    /// Waits for the next incoming connection attempt; `None` once the
    /// endpoint is closed. Pass the result to [`accept_peer`].
    pub async fn accept(&self) -> Option<Incoming> {
        self.endpoint.accept().await
    }

    /// Closes all connections and waits (bounded by the idle timeout) until
    /// the peers have been notified.
    pub async fn close(&self) {
        self.endpoint.close(CLOSE_NORMAL, b"shutdown");
        self.endpoint.wait_idle().await;
    }
}

async fn client_hello(
    conn: &Connection,
    claimed_id: &str,
    certified: &str,
    deadline: Instant,
) -> Result<(), QuicError> {
    let (mut send, mut recv) = timeout_at(deadline, conn.open_bi())
        .await
        .map_err(|_| QuicError::Timeout("opening hello stream"))?
        .map_err(QuicError::Connection)?;
    write_frame(&mut send, encode_hello(claimed_id)?.into(), deadline).await?;
    let ack = decode_hello(&read_frame(&mut recv, MAX_HELLO_PAYLOAD, deadline).await?)?;
    if ack != certified {
        return Err(QuicError::UnexpectedPeer {
            expected: certified.to_owned(),
            actual: ack,
        });
    }
    Ok(())
}

/// Completes an incoming connection: QUIC/TLS handshake (client certificate
/// must chain to the cluster CA), then reads the hello and checks that the
/// claimed node id equals the certificate's. On mismatch the connection is
/// closed with [`CLOSE_IDENTITY_MISMATCH`].
///
/// On a handshake failure the returned [`QuicError::Handshake`] says why,
/// e.g. `invalid peer certificate: UnknownIssuer` for a certificate from a
/// foreign CA; log it together with `incoming.remote_address()`.
pub async fn accept_peer(
    incoming: Incoming,
    our_id: &str,
    timeout: Duration,
) -> Result<PeerConnection, QuicError> {
    let deadline = Instant::now() + timeout;
    let connecting = incoming.accept().map_err(QuicError::Handshake)?;
    let conn = timeout_at(deadline, connecting)
        .await
        .map_err(|_| QuicError::Timeout("handshaking"))?
        .map_err(QuicError::Handshake)?;

    match server_hello(&conn, our_id, deadline).await {
        Ok(peer_id) => Ok(PeerConnection { conn, peer_id }),
        Err(e) => {
            let (code, reason): (VarInt, &[u8]) = match e {
                QuicError::IdentityMismatch { .. } => (
                    CLOSE_IDENTITY_MISMATCH,
                    b"claimed node id does not match certificate",
                ),
                _ => (CLOSE_PROTOCOL_ERROR, b"hello failed"),
            };
            conn.close(code, reason);
            Err(e)
        }
    }
}

async fn server_hello(
    conn: &Connection,
    our_id: &str,
    deadline: Instant,
) -> Result<String, QuicError> {
    let certified = peer_node_id(conn)?;
    let (mut send, mut recv) = timeout_at(deadline, conn.accept_bi())
        .await
        .map_err(|_| QuicError::Timeout("waiting for hello"))?
        .map_err(QuicError::Connection)?;
    let claimed = decode_hello(&read_frame(&mut recv, MAX_HELLO_PAYLOAD, deadline).await?)?;
    if claimed != certified {
        return Err(QuicError::IdentityMismatch { claimed, certified });
    }
    write_frame(&mut send, encode_hello(our_id)?.into(), deadline).await?;
    Ok(certified)
}

/// One request on a new bidirectional stream of `conn`: writes `body`, finishes, and reads
/// the answer (at most `max_response` bytes), all before `deadline`.
async fn exchange(
    conn: &Connection,
    body: Bytes,
    deadline: Instant,
    max_response: usize,
) -> Result<Bytes, QuicError> {
    let (mut send, mut recv) = timeout_at(deadline, conn.open_bi())
        .await
        .map_err(|_| QuicError::Timeout("opening request stream"))?
        .map_err(QuicError::Connection)?;
    write_frame(&mut send, body, deadline).await?;
    read_frame(&mut recv, max_response.min(MAX_FRAME_PAYLOAD), deadline).await
}

// ---------------------------------------------------------------------------
// Established connections
// ---------------------------------------------------------------------------

/// An authenticated connection to a peer node.
#[derive(Debug, Clone)]
pub struct PeerConnection {
    conn: Connection,
    peer_id: String,
}

impl PeerConnection {
    /// Node id of the peer, from its CA-verified certificate (and, on the
    /// server side, confirmed by its hello).
    pub fn peer_id(&self) -> &str {
        &self.peer_id
    }

    /// The underlying quinn connection (datagrams, stats, close, ...).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Sends one request on a new bidirectional stream and returns the
    /// response payload. The whole exchange must finish within `timeout`;
    /// responses larger than `max_response` bytes are rejected.
    pub async fn request(
        &self,
        body: &[u8],
        timeout: Duration,
        max_response: usize,
    ) -> Result<Vec<u8>, QuicError> {
        exchange(
            &self.conn,
            Bytes::copy_from_slice(body),
            Instant::now() + timeout,
            max_response,
        )
        .await
        .map(Vec::from)
    }

    /// Serves requests until the connection ends, calling `handler(peer_id,
    /// request)` for each stream (each in its own task). Returns the reason
    /// the connection ended.
    ///
    /// A request that is malformed, too large or too slow (more than
    /// `per_request_timeout`) gets its stream reset; the connection stays up.
    pub async fn serve<F>(self, handler: F, per_request_timeout: Duration) -> ConnectionError
    where
        F: Fn(&str, Vec<u8>) -> Vec<u8> + Send + Sync + 'static,
    {
        let handler = Arc::new(handler);
        loop {
            let (mut send, mut recv) = match self.conn.accept_bi().await {
                Ok(streams) => streams,
                Err(e) => return e,
            };
            let handler = Arc::clone(&handler);
            let peer_id = self.peer_id.clone();
            tokio::spawn(async move {
                let deadline = Instant::now() + per_request_timeout;
                let result = async {
                    let request = read_frame(&mut recv, MAX_FRAME_PAYLOAD, deadline).await?;
                    let response = handler(&peer_id, request.to_vec());
                    write_frame(&mut send, response.into(), deadline).await
                }
                .await;
                if result.is_err() {
                    // A real server logs `result` here (with peer_id).
                    let _ = recv.stop(STREAM_ERROR);
                    let _ = send.reset(STREAM_ERROR);
                }
            });
        }
    }
}

// ---------------------------------------------------------------------------
// Connection pool and the Transport implementation
// ---------------------------------------------------------------------------

/// Deadline for a connection attempt (handshake and hello).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Deadline for delivering one one-way message.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(2);
/// First wait after a failed connection attempt; doubles up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between connection attempts to an unreachable peer.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);

#[derive(Default)]
struct PeerSlot {
    conn: Option<Connection>,
    /// No new attempt before this instant (after failures).
    retry_at: Option<Instant>,
    backoff: Duration,
    /// The last failure was logged; stay quiet until it works again.
    failure_logged: bool,
}

struct Inner {
    endpoint: NodeEndpoint,
    /// Bytes each peer may have in flight here.
    budget_bytes: usize,
    /// Each peer's budget, by id (shared by a peer's connections).
    budgets: std::sync::Mutex<std::collections::HashMap<String, PeerBudget>>,
    /// The peer certificates refused (removed members').
    revoked: Revocations,
    faults: FaultTable,
    peers: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<PeerSlot>>>>,
    /// Per peer, the queue of replica requests waiting to be sent in batches.
    /// Looked up twice per quorum write: hashed with foldhash, not SipHash.
    batchers: std::sync::Mutex<
        std::collections::HashMap<
            String,
            mpsc::UnboundedSender<Queued>,
            foldhash::fast::RandomState,
        >,
    >,
    /// Where incoming traffic goes, on accepted and on dialled connections alike. `None`
    /// until [`QuicTransport::serve`]: connections dialled before that (a node announces
    /// itself before it serves) wait for it, so the peer's traffic on them is not lost.
    handler: tokio::sync::watch::Sender<Option<Arc<dyn Handler>>>,
}

/// QUIC between processes: one long-lived, mutually authenticated connection per peer.
#[derive(Clone)]
pub struct QuicTransport {
    inner: Arc<Inner>,
}

impl QuicTransport {
    /// Binds the node's peer address. Call [`serve`](Self::serve) to start accepting.
    pub fn bind(
        addr: SocketAddr,
        ca_cert: &CertificateDer<'static>,
        node: &NodeCredentials,
    ) -> Result<Self, QuicError> {
        Self::bind_limited(addr, ca_cert, node, DEFAULT_PEER_BUDGET_BYTES)
    }

    /// [`bind`](Self::bind) with each peer held to `peer_budget_bytes` of requests in flight.
    pub fn bind_limited(
        addr: SocketAddr,
        ca_cert: &CertificateDer<'static>,
        node: &NodeCredentials,
        peer_budget_bytes: usize,
    ) -> Result<Self, QuicError> {
        let revoked = Revocations::default();
        Ok(QuicTransport {
            inner: Arc::new(Inner {
                endpoint: NodeEndpoint::bind_revoking(addr, ca_cert, node, &revoked)?,
                budget_bytes: peer_budget_bytes,
                budgets: Default::default(),
                revoked,
                faults: FaultTable::default(),
                peers: Default::default(),
                batchers: Default::default(),
                handler: tokio::sync::watch::Sender::new(None),
            }),
        })
    }

    /// The endpoint underneath (for `identify` and shutdown).
    pub fn endpoint(&self) -> &NodeEndpoint {
        &self.inner.endpoint
    }

    /// The budget of peer `id`, made on first use.
    fn budget(&self, id: &str) -> PeerBudget {
        let mut budgets = self
            .inner
            .budgets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        budgets
            .entry(id.to_owned())
            .or_insert_with(|| PeerBudget::new(self.inner.budget_bytes))
            .clone()
    }

    /// Bytes of peer `id`'s requests in flight here now (read, not yet answered or handled).
    pub fn peer_in_flight(&self, id: &str) -> usize {
        self.budget(id).in_flight()
    }

    /// The peer certificates this node refuses; revoking one takes effect at the next
    /// handshake.
    pub fn revocations(&self) -> &Revocations {
        &self.inner.revoked
    }

    /// Accepts peers and hands what they send to `handler`, until the endpoint closes.
    pub fn serve(&self, handler: Arc<dyn Handler>) -> tokio::task::JoinHandle<()> {
        self.inner.handler.send_replace(Some(Arc::clone(&handler)));
        let this = self.clone();
        tokio::spawn(async move {
            while let Some(incoming) = this.inner.endpoint.accept().await {
                let this = this.clone();
                let handler = Arc::clone(&handler);
                tokio::spawn(async move {
                    let remote = incoming.remote_address();
                    let me = this.inner.endpoint.node_id().to_owned();
                    match accept_peer(incoming, &me, CONNECT_TIMEOUT).await {
                        Ok(peer) => this.serve_peer(peer, handler, true).await,
                        Err(e) => tracing::warn!(
                            %remote,
                            "refused a peer connection (peers need a certificate from this cluster's CA): {e}"
                        ),
                    }
                });
            }
        })
    }

    async fn serve_peer(&self, peer: PeerConnection, handler: Arc<dyn Handler>, accepted: bool) {
        let id = peer.peer_id().to_owned();
        tracing::debug!(peer = %id, "peer connected");
        // Use the newest connection for our own traffic too: a peer dials only when it has no
        // usable connection to us, so the one we hold may be a dead process's (a restart),
        // which would swallow messages until its idle timeout. After a simultaneous dial both
        // connections stay up and both are served.
        if accepted {
            let slot = self.slot(&id);
            let mut slot = slot.lock().await;
            *slot = PeerSlot {
                conn: Some(peer.connection().clone()),
                ..PeerSlot::default()
            };
        }
        let conn = peer.connection().clone();
        let uni = {
            let (this, handler, id, conn) =
                (self.clone(), Arc::clone(&handler), id.clone(), conn.clone());
            async move {
                loop {
                    let mut recv = match conn.accept_uni().await {
                        Ok(r) => r,
                        Err(e) => return e,
                    };
                    let (this, handler, id) = (this.clone(), Arc::clone(&handler), id.clone());
                    let budget = this.budget(&id);
                    tokio::spawn(async move {
                        let deadline = Instant::now() + SEND_TIMEOUT;
                        let (frame, _held) = match read_frame_within(&mut recv, &budget, deadline)
                            .await
                        {
                            Ok(f) => f,
                            Err(e) => {
                                tracing::warn!(peer = %id, "bad one-way frame, stream closed: {e}");
                                let _ = recv.stop(STREAM_ERROR);
                                return;
                            }
                        };
                        if this.inner.faults.drops(&id) {
                            return;
                        }
                        match rpc::decode::<OneWay>(&frame) {
                            Ok(msg) => handler.one_way(&id, msg),
                            Err(e) => tracing::warn!(peer = %id, "malformed message dropped: {e}"),
                        }
                    });
                }
            }
        };
        let bi = {
            let (this, handler, id, conn) = (self.clone(), handler, id.clone(), conn.clone());
            async move {
                loop {
                    let (mut send, mut recv) = match conn.accept_bi().await {
                        Ok(s) => s,
                        Err(e) => return e,
                    };
                    let (this, handler, id) = (this.clone(), Arc::clone(&handler), id.clone());
                    let budget = this.budget(&id);
                    tokio::spawn(async move {
                        let deadline = Instant::now() + DEFAULT_SERVE_TIMEOUT;
                        let result = async {
                            let (frame, _held) = read_frame_within(&mut recv, &budget, deadline).await?;
                            if this.inner.faults.drops(&id) {
                                return Err(QuicError::Protocol("dropped by fault injection"));
                            }
                            let resp = match rpc::batch_items(&frame) {
                                Some(items) => serve_batch(&*handler, &id, items).await,
                                None => {
                                    let req = rpc::decode::<Request>(&frame).map_err(|e| {
                                        tracing::warn!(peer = %id, "malformed request, stream closed: {e}");
                                        QuicError::Protocol("malformed request")
                                    })?;
                                    serve_one(&*handler, &id, req).await
                                }
                            };
                            let bytes = rpc::encode(&resp)
                                .map_err(|_| QuicError::Protocol("unencodable response"))?;
                            this.inner.faults.wait_delay(&id).await;
                            write_frame(&mut send, bytes.into(), deadline).await
                        }
                        .await;
                        if let Err(e) = result {
                            tracing::debug!(peer = %id, "request stream failed: {e}");
                            let _ = recv.stop(STREAM_ERROR);
                            let _ = send.reset(STREAM_ERROR);
                        }
                    });
                }
            }
        };
        let reason = tokio::select! {
            e = uni => e,
            e = bi => e,
        };
        tracing::debug!(peer = %id, "peer connection ended: {reason}");
    }

    fn slot(&self, id: &str) -> Arc<tokio::sync::Mutex<PeerSlot>> {
        let mut peers = self
            .inner
            .peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(peers.entry(id.to_owned()).or_default())
    }

    /// The live connection to `peer`, dialling it if needed (unless still backing off).
    async fn connection(&self, peer: &Peer) -> Result<Connection, TransportError> {
        let slot = self.slot(&peer.id);
        let mut slot = slot.lock().await;
        if let Some(conn) = &slot.conn {
            if conn.close_reason().is_none() {
                return Ok(conn.clone());
            }
            slot.conn = None;
        }
        if slot.retry_at.is_some_and(|at| Instant::now() < at) {
            return Err(TransportError::Unreachable(
                peer.id.to_string(),
                "waiting before the next connection attempt".into(),
            ));
        }
        match self
            .inner
            .endpoint
            .connect(peer.addr, &peer.id, CONNECT_TIMEOUT)
            .await
        {
            Ok(pc) => {
                if slot.failure_logged {
                    tracing::info!(peer = %peer.id, "reconnected");
                }
                *slot = PeerSlot {
                    conn: Some(pc.connection().clone()),
                    ..PeerSlot::default()
                };
                let conn = pc.connection().clone();
                // The peer may use this connection for its own traffic to us (it replaces its
                // own with the one it accepted): serve it too, as soon as there is a handler.
                let mut handler = self.inner.handler.subscribe();
                let this = self.clone();
                tokio::spawn(async move {
                    let ready = tokio::select! {
                        ready = handler.wait_for(Option::is_some) => ready.ok().and_then(|h| h.clone()),
                        _ = pc.connection().closed() => None,
                    };
                    if let Some(handler) = ready {
                        this.serve_peer(pc, handler, false).await;
                    }
                });
                Ok(conn)
            }
            Err(e) => {
                slot.backoff = (slot.backoff * 2).clamp(MIN_BACKOFF, MAX_BACKOFF);
                slot.retry_at = Some(Instant::now() + slot.backoff);
                if !slot.failure_logged {
                    tracing::warn!(peer = %peer.id, addr = %peer.addr, "cannot connect: {e}");
                    slot.failure_logged = true;
                }
                Err(TransportError::Unreachable(
                    peer.id.to_string(),
                    e.to_string(),
                ))
            }
        }
    }

    async fn send_now(&self, peer: &Peer, bytes: Bytes) -> Result<(), TransportError> {
        let conn = self.connection(peer).await?;
        let deadline = Instant::now() + SEND_TIMEOUT;
        let unreachable =
            |e: QuicError| TransportError::Unreachable(peer.id.to_string(), e.to_string());
        let mut send = timeout_at(deadline, conn.open_uni())
            .await
            .map_err(|_| TransportError::Timeout(peer.id.to_string(), SEND_TIMEOUT))?
            .map_err(|e| unreachable(QuicError::Connection(e)))?;
        write_frame(&mut send, bytes, deadline)
            .await
            .map_err(unreachable)
    }

    async fn call_now(
        &self,
        peer: &Peer,
        bytes: Bytes,
        timeout: Duration,
    ) -> Result<Response, TransportError> {
        let frame = self.call_raw(peer, bytes, timeout).await?;
        rpc::decode::<Response>(&frame)
            .map_err(|e| TransportError::Protocol(peer.id.to_string(), e.to_string()))
    }

    /// One request frame out, one answer frame back, undecoded.
    async fn call_raw(
        &self,
        peer: &Peer,
        bytes: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, TransportError> {
        let deadline = Instant::now() + timeout;
        let timed_out = || TransportError::Timeout(peer.id.to_string(), timeout);
        let conn = timeout_at(deadline, self.connection(peer))
            .await
            .map_err(|_| timed_out())??;
        let frame = exchange(&conn, bytes, deadline, MAX_FRAME_PAYLOAD)
            .await
            .map_err(|e| match e {
                QuicError::Timeout(_) => timed_out(),
                other => TransportError::Unreachable(peer.id.to_string(), other.to_string()),
            })?;
        if self.inner.faults.drops(&peer.id) {
            return Err(TransportError::Dropped(peer.id.to_string()));
        }
        Ok(frame)
    }

    /// Puts an encoded replica request in `peer`'s batch queue; its answer goes to `reply`.
    fn enqueue(&self, peer: &Peer, frame: Bytes, timeout: Duration, reply: AnswerTo) {
        let queued = Queued {
            frame,
            deadline: Instant::now() + timeout,
            timeout,
            reply,
        };
        if let Err(mpsc::error::SendError(q)) = self.batch_queue(peer).send(queued) {
            // The queue's task is gone (the transport is shutting down): go alone.
            let (this, peer) = (self.clone(), peer.clone());
            tokio::spawn(async move {
                let left = q.deadline.saturating_duration_since(Instant::now());
                let result = this.call_now(&peer, q.frame, left).await;
                q.reply.send(result);
            });
        }
    }

    /// The batch queue of `peer`, started on first use.
    fn batch_queue(&self, peer: &Peer) -> mpsc::UnboundedSender<Queued> {
        let mut queues = self
            .inner
            .batchers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(tx) = queues.get(&*peer.id).filter(|tx| !tx.is_closed()) {
            return tx.clone();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        queues.insert(peer.id.to_string(), tx.clone());
        tokio::spawn(batch_loop(Arc::downgrade(&self.inner), peer.clone(), rx));
        tx
    }

    /// Sends what the queue gathered: alone when it is one request, else as one batch.
    async fn send_batch(&self, peer: &Peer, mut batch: Vec<Queued>) {
        let Some(deadline) = batch.iter().map(|q| q.deadline).max() else {
            return;
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if batch.len() == 1 {
            let q = batch.remove(0);
            let result = self.call_now(peer, q.frame, left).await;
            q.reply.send(result);
            return;
        }
        // Each request, its length header and the envelope: the encoding is sized once.
        let size: usize = batch.iter().map(|q| q.frame.len() + 8).sum::<usize>() + 16;
        let (frames, mut replies): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|q| (q.frame, Some((q.deadline, q.timeout, q.reply))))
            .unzip();
        let count = frames.len();
        let protocol = |e: String| TransportError::Protocol(peer.id.to_string(), e);
        let call = async {
            let bytes = rpc::encode_sized(&Request::Batch(frames), size)
                .map_err(|e| TransportError::Unencodable(peer.id.to_string(), e.to_string()))?;
            self.call_raw(peer, bytes.into(), left).await
        };
        tokio::pin!(call);
        // The batch waits until its latest deadline; a caller whose own came well before (a
        // request with a shorter timeout) hears of its timeout then, not when the batch ends.
        let answered = loop {
            let earliest = replies.iter().flatten().map(|(d, _, _)| *d).min();
            let Some(earliest) =
                earliest.filter(|e| deadline.saturating_duration_since(*e) > BATCH_DEADLINE_SLACK)
            else {
                break call.await;
            };
            tokio::select! {
                biased;
                answered = &mut call => break answered,
                () = tokio::time::sleep_until(earliest) => {
                    for slot in &mut replies {
                        if let Some((_, timeout, reply)) = slot.take_if(|(d, _, _)| *d <= earliest) {
                            reply.send(Err(TransportError::Timeout(peer.id.to_string(), timeout)));
                        }
                    }
                }
            }
        };
        let outcome = answered.and_then(|frame| match rpc::batch_items(&frame) {
            Some(answers) if answers.len() == count => Ok(answers
                .into_iter()
                .map(|answer| rpc::decode::<Response>(answer).map_err(|e| protocol(e.to_string())))
                .collect::<Vec<_>>()),
            _ => Err(protocol(match rpc::decode::<Response>(&frame) {
                Ok(other) => format!("a batch of {count} answered with {other:?}"),
                Err(e) => e.to_string(),
            })),
        });
        let waiting = replies.into_iter();
        match outcome {
            Ok(answers) => {
                for (slot, answer) in waiting.zip(answers) {
                    if let Some((_, _, reply)) = slot {
                        reply.send(answer);
                    }
                }
            }
            Err(e) => {
                for (_, _, reply) in waiting.flatten() {
                    reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// A replica request waiting in a peer's batch queue.
struct Queued {
    /// The encoded request.
    frame: Bytes,
    deadline: Instant,
    /// What the caller gave it (for the error when it runs out).
    timeout: Duration,
    /// Where the answer (or the failure) goes.
    reply: AnswerTo,
}

/// Callers of one batch whose deadlines are within this of its latest are answered when the
/// batch is: no timer for the common case of equal timeouts.
const BATCH_DEADLINE_SLACK: Duration = Duration::from_millis(10);

/// Most requests, and bytes of requests, sent in one batch.
const BATCH_MAX_REQUESTS: usize = 64;
const BATCH_MAX_BYTES: usize = 1024 * 1024;

/// Requests bigger than this go alone: a batch stays small enough that its answers fit a
/// frame as well.
const BATCH_MAX_REQUEST_BYTES: usize = 16 * 1024;

/// How long a batch may be the only one on the wire to a peer before the next goes out
/// anyway. On a LAN a batch is answered well within it, so requests that arrive meanwhile
/// wait and go together (fewer packets and wake-ups per request); over a slow link (another
/// region) batches are pipelined instead of waiting a whole round trip each.
const BATCH_SOLO: Duration = Duration::from_millis(1);

/// Gathers the replica requests queued for one peer into batches, Nagle-style: a request goes
/// at once when nothing is in flight to the peer; what arrives while a batch is in flight goes
/// in the next one, sent when the batches in flight are answered or [`BATCH_SOLO`] after the
/// last one left.
async fn batch_loop(
    inner: std::sync::Weak<Inner>,
    peer: Peer,
    mut rx: mpsc::UnboundedReceiver<Queued>,
) {
    let mut in_flight = FuturesUnordered::new();
    let mut last_sent = Instant::now();
    loop {
        let first = if in_flight.is_empty() {
            match rx.recv().await {
                Some(q) => q,
                None => break,
            }
        } else {
            // Keep the batches out there moving; take the next request only once the solo
            // time has passed.
            let solo_until = last_sent + BATCH_SOLO;
            let waited = Instant::now() >= solo_until;
            tokio::select! {
                biased;
                Some(()) = in_flight.next() => continue,
                q = rx.recv(), if waited => match q {
                    Some(q) => q,
                    None => break,
                },
                () = tokio::time::sleep_until(solo_until), if !waited => continue,
            }
        };
        // Let requests that are being made right now join this batch.
        tokio::task::yield_now().await;
        let mut bytes = first.frame.len();
        let mut batch = vec![first];
        while batch.len() < BATCH_MAX_REQUESTS && bytes < BATCH_MAX_BYTES {
            match rx.try_recv() {
                Ok(q) => {
                    bytes += q.frame.len();
                    batch.push(q);
                }
                Err(_) => break,
            }
        }
        let Some(inner) = inner.upgrade() else { return };
        let this = QuicTransport { inner };
        let peer = peer.clone();
        last_sent = Instant::now();
        in_flight.push(async move { this.send_batch(&peer, batch).await });
    }
    while in_flight.next().await.is_some() {}
}

/// Whether a request may travel in a batch: the small, quick replica requests that
/// coordinators send by the thousand.
fn batchable(req: &EncodedRequest) -> bool {
    req.is_replica_op() && req.bytes().len() <= BATCH_MAX_REQUEST_BYTES
}

/// Serves one request: at once when the handler can, else through its future.
async fn serve_one(handler: &dyn Handler, from: &str, req: Request) -> Response {
    let changes = req.changes_state();
    let resp = match handler.request_now(from, req) {
        Ok(resp) => resp,
        Err(req) => handler.request(from, *req).await,
    };
    if changes && let Some(settled) = handler.settled() {
        settled.await;
    }
    resp
}

/// Serves every request of a batch, in order, and packs the answers (encoded into one
/// buffer, each a view of it).
async fn serve_batch(handler: &dyn Handler, from: &str, items: Vec<&[u8]>) -> Response {
    if items.len() > rpc::MAX_BATCH {
        return Response::Error(ReplicaError::BatchTooLarge(items.len()));
    }
    let mut encoded = Vec::with_capacity(items.len() * 32);
    let mut changes = false;
    let mut ends = Vec::with_capacity(items.len());
    for item in items {
        let resp = match rpc::decode::<Request>(item) {
            Ok(Request::Batch(_)) => Response::Error(ReplicaError::NestedBatch),
            Ok(req) => {
                changes |= req.changes_state();
                match handler.request_now(from, req) {
                    Ok(resp) => resp,
                    Err(req) => handler.request(from, *req).await,
                }
            }
            Err(e) => Response::Error(ReplicaError::Malformed(e.to_string())),
        };
        if let Err(e) = rpc::encode_append(&mut encoded, &resp) {
            // An error message always encodes.
            let error = ReplicaError::Unencodable(e.to_string());
            let _ = rpc::encode_append(&mut encoded, &Response::Error(error));
        }
        ends.push(encoded.len());
    }
    // One wait for the whole batch: its changes are durable before any answer leaves.
    if changes && let Some(settled) = handler.settled() {
        settled.await;
    }
    let encoded = Bytes::from(encoded);
    let mut start = 0;
    Response::Batch(
        ends.into_iter()
            .map(|end| {
                let answer = encoded.slice(start..end);
                start = end;
                answer
            })
            .collect(),
    )
}

impl Transport for QuicTransport {
    fn local_id(&self) -> &str {
        self.inner.endpoint.node_id()
    }

    fn send(&self, to: &Peer, msg: OneWay) {
        if self.inner.faults.drops(&to.id) {
            return;
        }
        let bytes = match rpc::encode(&msg) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(peer = %to.id, "cannot encode message: {e}");
                return;
            }
        };
        let (this, to) = (self.clone(), to.clone());
        tokio::spawn(async move {
            this.inner.faults.wait_delay(&to.id).await;
            if let Err(e) = this.send_now(&to, bytes.into()).await {
                tracing::trace!(peer = %to.id, "message not sent: {e}");
            }
        });
    }

    fn call_encoded(
        &self,
        to: &Peer,
        req: EncodedRequest,
        timeout: Duration,
    ) -> BoxFuture<Result<Response, TransportError>> {
        let (this, to) = (self.clone(), to.clone());
        Box::pin(async move {
            if this.inner.faults.drops(&to.id) {
                return Err(TransportError::Dropped(to.id.to_string()));
            }
            // The injected delay counts against the caller's deadline, as a slow link would.
            let deadline = Instant::now() + timeout;
            let delay = this.inner.faults.delay(&to.id);
            if !delay.is_zero() {
                if Instant::now() + delay >= deadline {
                    tokio::time::sleep_until(deadline).await;
                    return Err(TransportError::Timeout(to.id.to_string(), timeout));
                }
                tokio::time::sleep(delay).await;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if !batchable(&req) {
                return this.call_now(&to, req.bytes().clone(), left).await;
            }
            let (tx, answer) = oneshot::channel();
            let reply = AnswerTo::new(Arc::clone(&to.id), move |result| {
                let _ = tx.send(result);
            });
            this.enqueue(&to, req.bytes().clone(), left, reply);
            match timeout_at(deadline, answer).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(TransportError::Unreachable(
                    to.id.to_string(),
                    "the request was dropped unsent".into(),
                )),
                Err(_) => Err(TransportError::Timeout(to.id.to_string(), timeout)),
            }
        })
    }

    fn call_then(&self, to: &Peer, req: EncodedRequest, timeout: Duration, reply: AnswerTo) {
        if self.inner.faults.drops(&to.id) {
            reply.send(Err(TransportError::Dropped(to.id.to_string())));
            return;
        }
        // Small replica requests without an injected delay (the hot path) join the peer's
        // batch queue here; the rest go the way of `call_encoded`, in a task.
        if !batchable(&req) || !self.inner.faults.delay(&to.id).is_zero() {
            let call = self.call_encoded(to, req, timeout);
            tokio::spawn(async move { reply.send(call.await) });
            return;
        }
        self.enqueue(to, req.bytes().clone(), timeout, reply);
    }

    fn faults(&self) -> &FaultTable {
        &self.inner.faults
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_roundtrip_and_rejects() {
        let mut frame = frame_prefix(3).expect("prefix").to_vec();
        frame.extend_from_slice(b"abc");
        assert_eq!(decode_frame(&frame).expect("decode"), b"abc");
        assert!(frame_prefix(MAX_FRAME_PAYLOAD + 1).is_err());
        assert!(decode_frame(&frame[..2]).is_err());
        assert!(decode_frame(&frame[..5]).is_err());
        let mut longer = frame.clone();
        longer.push(0);
        assert!(decode_frame(&longer).is_err());
    }

    #[test]
    fn hello_roundtrip_and_rejects() {
        let hello = encode_hello("n1").expect("encode");
        assert_eq!(decode_hello(&hello).expect("decode"), "n1");
        assert!(decode_hello(&[HELLO_VERSION]).is_err());
        assert!(decode_hello(&[HELLO_VERSION, 3, b'n', b'1']).is_err());
        // Upper case is a valid node id now; '!' is not.
        assert_eq!(
            decode_hello(&[HELLO_VERSION, 2, b'N', b'1']).expect("decode"),
            "N1"
        );
        assert!(decode_hello(&[HELLO_VERSION, 2, b'n', b'!']).is_err());
        assert!(decode_hello(&[HELLO_VERSION, 0]).is_err());
        assert!(decode_hello(&[9, 2, b'n', b'1']).is_err());
        let long = "x".repeat(MAX_NODE_ID_LEN);
        let hello = encode_hello(&long).expect("encode longest id");
        assert!(hello.len() <= MAX_HELLO_PAYLOAD);
        assert_eq!(decode_hello(&hello).expect("decode"), long);
        assert!(encode_hello(&"x".repeat(MAX_NODE_ID_LEN + 1)).is_err());
    }

    /// A valid certificate for `n1` whose hello claims `n3`: the server refuses and
    /// closes the connection with [`CLOSE_IDENTITY_MISMATCH`]; the true claim then works.
    #[tokio::test]
    async fn claimed_id_mismatch_closes_connection() {
        const T: Duration = Duration::from_secs(5);
        let ca = tls::ClusterCa::generate("alpha").expect("ca");
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let ep1 = NodeEndpoint::bind(loopback, ca.cert_der(), &ca.issue_node("n1").expect("n1"))
            .expect("bind n1");
        let ep2 = NodeEndpoint::bind(loopback, ca.cert_der(), &ca.issue_node("n2").expect("n2"))
            .expect("bind n2");
        let addr2 = ep2.local_addr().expect("addr");
        let accept_one = |ep: NodeEndpoint| {
            tokio::spawn(async move {
                let incoming = tokio::time::timeout(T, ep.accept())
                    .await
                    .map_err(|_| QuicError::Timeout("accept"))?
                    .ok_or(QuicError::Protocol("endpoint closed"))?;
                accept_peer(incoming, ep.node_id(), T).await
            })
        };

        // Claiming another node of the cluster.
        let server = accept_one(ep2.clone());
        let client = ep1.connect_claiming(addr2, "n2", "n3", T).await;
        let server = server.await.expect("join");
        match server {
            Err(QuicError::IdentityMismatch { claimed, certified }) => {
                assert_eq!((claimed.as_str(), certified.as_str()), ("n3", "n1"));
            }
            other => panic!("unexpected server result {other:?}"),
        }
        match client {
            Err(QuicError::Handshake(ConnectionError::ApplicationClosed(close))) => {
                assert_eq!(close.error_code, CLOSE_IDENTITY_MISMATCH);
            }
            other => panic!("unexpected client result {other:?}"),
        }

        // Claiming the server's own id.
        let server = accept_one(ep2.clone());
        let client = ep1.connect_claiming(addr2, "n2", "n2", T).await;
        assert!(
            matches!(
                server.await.expect("join"),
                Err(QuicError::IdentityMismatch { .. })
            ),
            "server accepted a false claim"
        );
        assert!(client.is_err(), "{client:?}");

        // An invalid claimed id is refused by the client itself (after the handshake), which
        // then closes the connection.
        let server = accept_one(ep2.clone());
        assert!(matches!(
            ep1.connect_claiming(addr2, "n2", "n 3", T).await,
            Err(QuicError::Tls(TlsError::InvalidNodeId(_)))
        ));
        assert!(server.await.expect("join").is_err());

        // The honest claim is accepted.
        let server = accept_one(ep2.clone());
        let client = ep1
            .connect_claiming(addr2, "n2", "n1", T)
            .await
            .expect("honest claim");
        assert_eq!(client.peer_id(), "n2");
        assert_eq!(server.await.expect("join").expect("accept").peer_id(), "n1");

        ep1.close().await;
        ep2.close().await;
    }
}
