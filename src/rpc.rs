//! The node-to-node wire protocol: what nodes say to each other, independent of how it
//! travels (QUIC between processes, channels in the simulated network).
//!
//! Every frame is an rmp-serde envelope `{version, body}`. A node refuses a frame of another
//! protocol version instead of guessing at its meaning, so mixed-version clusters fail loudly.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::causality::Timestamp;
use crate::datatype::Write;
use crate::ops::{OpError, Plan, Written};
use crate::ring::RingArc;
use crate::storage::merkle::{Answer, Hash, Query};
use crate::storage::{Key, Kind, ScannedKey, StoreError, Value};

/// Most requests one [`Request::Batch`] may carry.
pub const MAX_BATCH: usize = 1024;

/// Most arcs one [`ArcHashes`] may name.
pub const MAX_ARCS: usize = 1 << 16;

/// Version of the messages below; bump on any incompatible change.
pub const PROTOCOL_VERSION: u16 = 2;

/// Largest frame a node accepts, checked before anything is allocated for it.
pub const MAX_FRAME_BYTES: usize = 32 * 1024 * 1024;

/// Fire-and-forget messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OneWay {
    /// A SWIM gossip packet (foca's encoding inside).
    Gossip(Bytes),
}

/// Liveness and identity check; answered with the answering node's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping;

/// A replica's state of one key; `None` if it has never seen it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Read {
    /// The key to read.
    pub key: Key,
}

/// Merge a delta or a whole state into a replica (a write, or a repair); answered with the
/// merged state when `reply_state` asks for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Merge {
    /// The key to merge into.
    pub key: Key,
    /// The delta or state to merge.
    pub value: Value,
    /// Answer with the merged state (a counter's coordinator reports the merged value).
    pub reply_state: bool,
}

/// Coordinate a client's write on behalf of a node that is not a replica of the key (writes
/// that issue dots need a replica's store). `id` is unique per forwarded write: a replica runs
/// each id once, so a duplicated or retried message cannot apply (or count) the write twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coordinate {
    /// Unique per forwarded write; the same for every attempt of it.
    pub id: String,
    /// The key written.
    pub key: Key,
    /// The client's write.
    pub write: Write,
    /// The consistency settings the forwarding node checked.
    pub plan: Plan,
}

/// Hold a write for `owner`, a replica that could not take it, and deliver it when the owner
/// is reachable again (hinted handoff).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hint {
    /// The replica the write was meant for.
    pub owner: String,
    /// The key written.
    pub key: Key,
    /// The write's delta.
    pub value: Value,
}

/// Merge many keys at once (hint delivery, anti-entropy, ownership transfers); answered with
/// the items that could not be merged (by index) and why, empty when all were.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeBatch {
    /// Keys and the states to merge into them.
    pub items: Vec<(Key, Value)>,
}

/// The states of many keys at once; answered with one state per key, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadBatch {
    /// The keys to read.
    pub keys: Vec<Key>,
}

/// The replica's Merkle hash of each arc (anti-entropy's first, cheap comparison); answered
/// with one hash per arc, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArcHashes {
    /// At most [`MAX_ARCS`] arcs.
    pub arcs: Vec<RingArc>,
}

/// One step of a Merkle diff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerkleStep {
    /// The part of the tree the asking node wants to see.
    pub query: Query,
}

/// A page of a replica's live keys with positions from `from` to `upto`, about `limit` of
/// them (`SCAN`, `KEYS`, `DBSIZE`); answered with the keys and whether more were left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanKeys {
    /// The key space.
    pub kind: Kind,
    /// The first position to look at.
    pub from: u64,
    /// The last.
    pub upto: u64,
    /// About how many keys to answer.
    pub limit: usize,
    /// The asking node's `FLUSHALL` cutoff: a replica that has not applied it yet (it did
    /// not answer the flush in time, gossip has not reached it) applies it before it looks,
    /// so no key flushed on the asking node comes back through its scan.
    #[serde(default)]
    pub flushed: Option<Timestamp>,
}

/// The replica's hybrid clock, advanced past everything it has issued: the start of a
/// `FLUSHALL`, whose cutoff must come after every write any reachable node acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockNow;

/// Everything of the typed namespace written before `before` is gone (`FLUSHALL`): the
/// replica applies it to its store and spreads it through gossip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flush {
    /// The cutoff.
    pub before: Timestamp,
}

/// Messages that expect an answer, as they travel. Each one but [`Request::Batch`] carries a
/// message type that implements [`Call`], which names its answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// [`Ping`].
    Ping,
    /// [`Read`].
    Read(Read),
    /// [`Merge`].
    Merge(Merge),
    /// [`Coordinate`].
    Coordinate(Coordinate),
    /// [`Hint`].
    Hint(Hint),
    /// [`MergeBatch`].
    MergeBatch(MergeBatch),
    /// [`ReadBatch`].
    ReadBatch(ReadBatch),
    /// [`ArcHashes`].
    ArcHashes(ArcHashes),
    /// [`MerkleStep`].
    MerkleStep(MerkleStep),
    /// [`ScanKeys`].
    ScanKeys(ScanKeys),
    /// [`ClockNow`].
    ClockNow(ClockNow),
    /// [`Flush`].
    Flush(Flush),
    /// Several requests, each encoded as its own frame, sent together by the transport when
    /// many are on their way to one peer at once; answered with [`Response::Batch`], one
    /// encoded answer per request, in order. Never nested.
    Batch(Vec<Bytes>),
}

/// Answers to [`Request`]s, as they travel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Answer to [`Ping`], with the answering node's id.
    Pong {
        /// The answering node.
        node: String,
    },
    /// Answer to [`Read`].
    State(Option<Value>),
    /// Answer to [`Merge`]: the merged state if it was asked for.
    Merged(Option<Value>),
    /// Answer to [`Coordinate`]: the outcome of the write.
    Written(Result<Written, OpError>),
    /// Answer to [`Hint`]: the hint is held.
    Held,
    /// Answer to [`MergeBatch`]: the items that could not be merged, by index.
    MergedBatch(Vec<(u32, StoreError)>),
    /// Answer to [`ReadBatch`].
    States(Vec<Option<Value>>),
    /// Answer to [`ArcHashes`].
    Hashes(Vec<Hash>),
    /// Answer to [`MerkleStep`].
    Merkle(Answer<Key>),
    /// Answer to [`ScanKeys`]: the live keys, and, when the answer stopped at its limit, the
    /// last position it looked at (the caller goes on after it).
    Keys(Vec<ScannedKey>, Option<u64>),
    /// Answer to [`ClockNow`].
    Clock(Timestamp),
    /// Answer to [`Flush`]: applied.
    Flushed,
    /// Answer to [`Request::Batch`].
    Batch(Vec<Bytes>),
    /// The request could not be served.
    Error(ReplicaError),
}

impl Response {
    /// The variant's name, for the error about an answer of the wrong kind.
    pub fn name(&self) -> &'static str {
        match self {
            Response::Pong { .. } => "Pong",
            Response::State(_) => "State",
            Response::Merged(_) => "Merged",
            Response::Written(_) => "Written",
            Response::Held => "Held",
            Response::MergedBatch(_) => "MergedBatch",
            Response::States(_) => "States",
            Response::Hashes(_) => "Hashes",
            Response::Merkle(_) => "Merkle",
            Response::Keys(..) => "Keys",
            Response::Clock(_) => "Clock",
            Response::Flushed => "Flushed",
            Response::Batch(_) => "Batch",
            Response::Error(_) => "Error",
        }
    }
}

/// Why a node could not serve a request. Typed, so that a coordinator can tell a replica that
/// is still bootstrapping from one that refused a write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ReplicaError {
    /// The replica is still receiving its keys after a start and answers no reads yet.
    #[error("bootstrapping: this replica is still receiving its keys and answers no reads yet")]
    NotServingReads,
    /// The store refused the change.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// More arcs in one [`ArcHashes`] than a replica answers.
    #[error("{asked} arcs asked for; at most {MAX_ARCS} per request")]
    TooManyArcs {
        /// How many were asked for.
        asked: usize,
    },
    /// A Merkle query that does not fit this replica's tree.
    #[error("merkle query: {0}")]
    Merkle(String),
    /// A batch of more than [`MAX_BATCH`] requests.
    #[error("a batch of {0} requests; at most {MAX_BATCH}")]
    BatchTooLarge(usize),
    /// A batch inside a batch.
    #[error("batches cannot be nested")]
    NestedBatch,
    /// A request inside a batch that did not decode.
    #[error("malformed request in a batch: {0}")]
    Malformed(String),
    /// The answer could not be encoded.
    #[error("the answer could not be encoded: {0}")]
    Unencodable(String),
    /// A request this part of the node does not serve.
    #[error("{0} is not served here")]
    NotServed(String),
}

impl Request {
    /// Whether serving it changes the replica's state (its answer then waits for the
    /// durable log); reads, pings and Merkle queries do not wait.
    pub fn changes_state(&self) -> bool {
        matches!(
            self,
            Request::Merge(_) | Request::MergeBatch(_) | Request::Hint(_) | Request::Flush(_)
        )
    }

    /// The message's name, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Ping => Ping::NAME,
            Request::Read(_) => Read::NAME,
            Request::Merge(_) => Merge::NAME,
            Request::Coordinate(_) => Coordinate::NAME,
            Request::Hint(_) => Hint::NAME,
            Request::MergeBatch(_) => MergeBatch::NAME,
            Request::ReadBatch(_) => ReadBatch::NAME,
            Request::ArcHashes(_) => ArcHashes::NAME,
            Request::MerkleStep(_) => MerkleStep::NAME,
            Request::ScanKeys(_) => ScanKeys::NAME,
            Request::ClockNow(_) => ClockNow::NAME,
            Request::Flush(_) => Flush::NAME,
            Request::Batch(_) => "Batch",
        }
    }
}

/// A request message paired with the answer it gets, as Garage pairs a message with its
/// response: callers get the answer typed, and the check that an answer is of the right kind
/// is written once, here, rather than at every call.
pub trait Call: Into<Request> + Send + 'static {
    /// What a successful call answers.
    type Answer: Send + 'static;
    /// The message's name, for logs and errors.
    const NAME: &'static str;
    /// The answer as it travels.
    fn respond(answer: Self::Answer) -> Response;
    /// The answer out of what travelled; gives the response back when it is of another kind
    /// (the rare path: boxing it would cost every call an allocation for nothing).
    #[allow(clippy::result_large_err)]
    fn answer(response: Response) -> Result<Self::Answer, Response>;
}

/// Implements [`Call`] for a message whose answer is one variant of [`Response`].
macro_rules! call {
    ($msg:ident => $answer:ty, |$a:ident| $respond:expr, $pattern:pat => $out:expr) => {
        impl From<$msg> for Request {
            fn from(msg: $msg) -> Request {
                Request::$msg(msg)
            }
        }

        impl Call for $msg {
            type Answer = $answer;
            const NAME: &'static str = stringify!($msg);
            fn respond($a: $answer) -> Response {
                $respond
            }
            fn answer(response: Response) -> Result<$answer, Response> {
                match response {
                    $pattern => Ok($out),
                    other => Err(other),
                }
            }
        }
    };
}

call!(Read => Option<Value>, |a| Response::State(a), Response::State(a) => a);
call!(Merge => Option<Value>, |a| Response::Merged(a), Response::Merged(a) => a);
call!(Coordinate => Result<Written, OpError>, |a| Response::Written(a), Response::Written(a) => a);
call!(Hint => (), |_a| Response::Held, Response::Held => ());
call!(MergeBatch => Vec<(u32, StoreError)>, |a| Response::MergedBatch(a), Response::MergedBatch(a) => a);
call!(ReadBatch => Vec<Option<Value>>, |a| Response::States(a), Response::States(a) => a);
call!(ArcHashes => Vec<Hash>, |a| Response::Hashes(a), Response::Hashes(a) => a);
call!(MerkleStep => Answer<Key>, |a| Response::Merkle(a), Response::Merkle(a) => a);
call!(ScanKeys => (Vec<ScannedKey>, Option<u64>), |a| Response::Keys(a.0, a.1), Response::Keys(k, upto) => (k, upto));
call!(ClockNow => Timestamp, |a| Response::Clock(a), Response::Clock(a) => a);
call!(Flush => (), |_a| Response::Flushed, Response::Flushed => ());

impl From<Ping> for Request {
    fn from(_: Ping) -> Request {
        Request::Ping
    }
}

impl Call for Ping {
    type Answer = String;
    const NAME: &'static str = "Ping";
    fn respond(node: String) -> Response {
        Response::Pong { node }
    }
    fn answer(response: Response) -> Result<String, Response> {
        match response {
            Response::Pong { node } => Ok(node),
            other => Err(other),
        }
    }
}

/// A served request's answer as it travels: the typed answer, or the error.
pub fn respond<C: Call>(result: Result<C::Answer, ReplicaError>) -> Response {
    match result {
        Ok(answer) => C::respond(answer),
        Err(e) => Response::Error(e),
    }
}

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    version: u16,
    body: T,
}

/// Why a frame was refused.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The bytes are not a message of this protocol.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A message of another protocol version.
    #[error("frame of protocol version {0}, this node speaks {PROTOCOL_VERSION}")]
    Version(u16),
    /// A frame over [`MAX_FRAME_BYTES`].
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME_BYTES}")]
    TooLarge(usize),
}

/// Room an encoding starts with: most messages (a replica's read or write of a small value,
/// its answer) fit, so the buffer is allocated once instead of grown five times from empty.
const ENCODE_START_BYTES: usize = 256;

/// Encodes a message as one frame body.
pub fn encode<T: Serialize>(body: &T) -> Result<Vec<u8>, WireError> {
    encode_sized(body, ENCODE_START_BYTES)
}

/// [`encode`] into a buffer that starts with room for `capacity` bytes (a batch knows about
/// how large it will be).
pub fn encode_sized<T: Serialize>(body: &T, capacity: usize) -> Result<Vec<u8>, WireError> {
    let mut bytes = Vec::with_capacity(capacity.min(MAX_FRAME_BYTES));
    encode_append(&mut bytes, body)?;
    Ok(bytes)
}

/// Encodes a message as one frame body at the end of `out` (many answers share one buffer);
/// on an error `out` is left as it was.
pub fn encode_append<T: Serialize>(out: &mut Vec<u8>, body: &T) -> Result<(), WireError> {
    let start = out.len();
    let written = rmp_serde::encode::write(
        out,
        &Envelope {
            version: PROTOCOL_VERSION,
            body,
        },
    )
    .map_err(|e| WireError::Malformed(e.to_string()));
    let len = out.len() - start;
    let result = match written {
        Ok(()) if len > MAX_FRAME_BYTES => Err(WireError::TooLarge(len)),
        other => other,
    };
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// A request already encoded, so that one write going to several replicas is encoded once
/// and its bytes shared.
#[derive(Debug, Clone)]
pub struct EncodedRequest {
    bytes: Bytes,
    /// A small, quick replica request (a read or a merge) that may travel in a batch.
    replica_op: bool,
}

impl EncodedRequest {
    /// Encodes `req` once, for as many sends as needed.
    pub fn new(req: &Request) -> Result<Self, WireError> {
        Ok(EncodedRequest {
            bytes: Bytes::from(encode(req)?),
            replica_op: matches!(req, Request::Read(_) | Request::Merge(_)),
        })
    }

    /// The frame body.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Whether it is a replica read or merge (the requests coordinators send by the
    /// thousand, which transports may batch).
    pub fn is_replica_op(&self) -> bool {
        self.replica_op
    }

    /// The request again, for transports that hand requests over in memory.
    pub fn decode(&self) -> Result<Request, WireError> {
        decode(&self.bytes)
    }
}

/// A message of type `C` already encoded, so that one write going to several replicas is
/// encoded once; its type still names the answer.
pub struct Encoded<C> {
    request: EncodedRequest,
    call: std::marker::PhantomData<fn() -> C>,
}

impl<C: Call> Encoded<C> {
    /// Encodes `msg`.
    pub fn new(msg: C) -> Result<Self, WireError> {
        Ok(Encoded {
            request: EncodedRequest::new(&msg.into())?,
            call: std::marker::PhantomData,
        })
    }

    /// The encoded request, as transports take it.
    pub fn request(&self) -> &EncodedRequest {
        &self.request
    }
}

impl<C> Clone for Encoded<C> {
    fn clone(&self) -> Self {
        Encoded {
            request: self.request.clone(),
            call: std::marker::PhantomData,
        }
    }
}

/// The items of a [`Request::Batch`] or [`Response::Batch`], as views of the frame.
#[derive(Deserialize)]
enum BatchItems<'a> {
    Batch(#[serde(borrow)] Vec<&'a [u8]>),
}

/// The items of a batch frame (of requests or of answers), each a view of `frame` rather than a
/// copy; `None` when the frame is something else (or malformed: [`decode`] says which).
pub fn batch_items(frame: &[u8]) -> Option<Vec<&[u8]>> {
    if frame.len() > MAX_FRAME_BYTES {
        return None;
    }
    match rmp_serde::from_slice::<Envelope<BatchItems<'_>>>(frame) {
        Ok(Envelope {
            version: PROTOCOL_VERSION,
            body: BatchItems::Batch(items),
        }) => Some(items),
        _ => None,
    }
}

/// Decodes one frame body, checking its size and protocol version.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    if bytes.len() > MAX_FRAME_BYTES {
        return Err(WireError::TooLarge(bytes.len()));
    }
    // The envelope is encoded as an array `[version, body]`. One pass reads both; only when
    // that fails is the version read alone, so that a frame from another protocol version is
    // reported as such rather than as malformed.
    match rmp_serde::from_slice::<Envelope<T>>(bytes) {
        Ok(envelope) if envelope.version == PROTOCOL_VERSION => Ok(envelope.body),
        Ok(envelope) => Err(WireError::Version(envelope.version)),
        Err(e) => match rmp_serde::from_slice::<(u16, serde::de::IgnoredAny)>(bytes) {
            Ok((version, _)) if version != PROTOCOL_VERSION => Err(WireError::Version(version)),
            _ => Err(WireError::Malformed(e.to_string())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let msg = OneWay::Gossip(Bytes::from_static(b"swim"));
        let bytes = encode(&msg).expect("encode");
        assert_eq!(decode::<OneWay>(&bytes).expect("decode"), msg);
        let req = Request::Ping;
        assert_eq!(
            decode::<Request>(&encode(&req).expect("encode")).expect("decode"),
            req
        );
    }

    #[test]
    fn batch_items_are_read_in_place() {
        let items = vec![
            Bytes::from(encode(&Request::Ping).expect("encode")),
            Bytes::from_static(b"\x01\x02"),
        ];
        let frame = encode(&Request::Batch(items.clone())).expect("encode");
        let read = batch_items(&frame).expect("a batch");
        assert_eq!(read, [&items[0][..], &items[1][..]]);
        let range = frame.as_ptr_range();
        assert!(read.iter().all(|i| range.contains(&i.as_ptr())), "copied");
        let answers = encode(&Response::Batch(items)).expect("encode");
        assert_eq!(batch_items(&answers).map(|a| a.len()), Some(2));
        assert!(batch_items(&encode(&Request::Ping).expect("encode")).is_none());
        assert!(batch_items(b"\xff\x00").is_none());
    }

    #[test]
    fn refuses_garbage_and_other_versions() {
        assert!(matches!(
            decode::<OneWay>(b"\xff\x00garbage"),
            Err(WireError::Malformed(_))
        ));
        let other = rmp_serde::to_vec(&Envelope {
            version: PROTOCOL_VERSION + 1,
            body: Request::Ping,
        })
        .expect("encode");
        assert!(matches!(
            decode::<Request>(&other),
            Err(WireError::Version(v)) if v == PROTOCOL_VERSION + 1
        ));
        // The right version with a body of the wrong shape is malformed, not a panic.
        let wrong = encode(&Request::Ping).expect("encode");
        assert!(decode::<Response>(&wrong).is_err());
    }
}
