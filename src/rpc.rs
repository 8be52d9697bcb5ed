//! The node-to-node wire protocol: what nodes say to each other, independent of how it
//! travels (QUIC between processes, channels in the simulated network).
//!
//! Every frame is an rmp-serde envelope `{version, body}`. A node refuses a frame of another
//! protocol version instead of guessing at its meaning, so mixed-version clusters fail loudly.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ops::{OpError, Plan, Write, Written};
use crate::ring::Arc;
use crate::storage::merkle::{Answer, Hash, Query};
use crate::storage::{Key, Value};

/// Most requests one [`Request::Batch`] may carry.
pub const MAX_BATCH: usize = 1024;

/// Most arcs one [`Request::ArcHashes`] may name.
pub const MAX_ARCS: usize = 1 << 16;

/// Version of the messages below; bump on any incompatible change.
pub const PROTOCOL_VERSION: u16 = 1;

/// Largest frame a node accepts, checked before anything is allocated for it.
pub const MAX_FRAME_BYTES: usize = 32 * 1024 * 1024;

/// Fire-and-forget messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OneWay {
    /// A SWIM gossip packet (foca's encoding inside).
    Gossip(Bytes),
}

/// Messages that expect an answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Liveness and identity check; answered with [`Response::Pong`].
    Ping,
    /// A replica's state of one key; answered with [`Response::State`].
    Read { key: Key },
    /// Merge a delta or a whole state into a replica (a write, or a repair); answered with
    /// [`Response::Merged`], carrying the merged state when `reply_state` asks for it.
    Merge {
        key: Key,
        value: Value,
        reply_state: bool,
    },
    /// Coordinate a client's write on behalf of a node that is not a replica of the key
    /// (writes that issue dots need a replica's store); answered with [`Response::Written`].
    /// `id` is unique per forwarded write: a replica runs each id once, so a duplicated or
    /// retried message cannot apply (or count) the write twice.
    Coordinate {
        id: String,
        key: Key,
        write: Write,
        plan: Plan,
    },
    /// Hold a write for `owner`, a replica that could not take it, and deliver it when the
    /// owner is reachable again (hinted handoff); answered with [`Response::Merged`].
    Hint {
        owner: String,
        key: Key,
        value: Value,
    },
    /// Merge many keys at once (hint delivery, anti-entropy, ownership transfers); answered
    /// with [`Response::MergedBatch`].
    MergeBatch { items: Vec<(Key, Value)> },
    /// The states of many keys at once; answered with [`Response::States`], in order.
    ReadBatch { keys: Vec<Key> },
    /// The replica's Merkle hash of each arc (anti-entropy's first, cheap comparison);
    /// answered with [`Response::Hashes`], in order.
    ArcHashes { arcs: Vec<Arc> },
    /// One step of a Merkle diff; answered with [`Response::Merkle`].
    Merkle { query: Query },
    /// Several requests, each encoded as its own frame, sent together by the transport when
    /// many are on their way to one peer at once; answered with [`Response::Batch`], one
    /// encoded answer per request, in order. Never nested.
    Batch(Vec<Bytes>),
}

/// Answers to [`Request`]s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Answer to [`Request::Ping`], with the answering node's id.
    Pong { node: String },
    /// The replica's state of the key, `None` if it has never seen it.
    State(Option<Value>),
    /// The merge was applied; the merged state if it was asked for.
    Merged(Option<Value>),
    /// The outcome of a coordinated write.
    Written(Result<Written, OpError>),
    /// The outcome of a [`Request::MergeBatch`]: the items that could not be merged (by
    /// index) and why; empty when all were.
    MergedBatch { failed: Vec<(u32, String)> },
    /// Answer to [`Request::ReadBatch`]: one state per key asked, in order.
    States(Vec<Option<Value>>),
    /// Answer to [`Request::ArcHashes`].
    Hashes(Vec<Hash>),
    /// Answer to [`Request::Merkle`].
    Merkle(Answer<Key>),
    /// Answer to [`Request::Batch`].
    Batch(Vec<Bytes>),
    /// The request could not be served; says why.
    Error(String),
}

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    version: u16,
    body: T,
}

/// Why a frame was refused.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("frame of protocol version {0}, this node speaks {PROTOCOL_VERSION}")]
    Version(u16),
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
    pub fn new(req: &Request) -> Result<Self, WireError> {
        Ok(EncodedRequest {
            bytes: Bytes::from(encode(req)?),
            replica_op: matches!(req, Request::Read { .. } | Request::Merge { .. }),
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
