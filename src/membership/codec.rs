//! Gossip messages on the wire: foca's headers and member updates in MessagePack.

use bytes::{Buf, BufMut};
use foca::{Codec, Header, Member};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Encodes foca's messages with rmp-serde, like every other frame of quorumkv.
#[derive(Debug, Clone, Copy, Default)]
pub struct RmpCodec;

/// Why a gossip message could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// MessagePack refused to encode the value.
    #[error("gossip encode: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    /// The bytes are not the MessagePack of the expected value.
    #[error("gossip decode: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    /// The item does not fit what is left of the packet, so foca stops filling it there.
    #[error("gossip packet full")]
    NoSpace,
}

fn encode<V: Serialize>(value: &V, mut buf: impl BufMut) -> Result<(), CodecError> {
    let bytes = rmp_serde::to_vec(value)?;
    // Leave the buffer untouched when the item does not fit, as foca requires.
    if buf.remaining_mut() < bytes.len() {
        return Err(CodecError::NoSpace);
    }
    buf.put_slice(&bytes);
    Ok(())
}

fn decode<V: DeserializeOwned>(buf: impl Buf) -> Result<V, CodecError> {
    // Reads exactly one value and advances past it.
    Ok(rmp_serde::from_read(buf.reader())?)
}

impl<T: Serialize + DeserializeOwned> Codec<T> for RmpCodec {
    type Error = CodecError;

    fn encode_header(&mut self, header: &Header<T>, buf: impl BufMut) -> Result<(), CodecError> {
        encode(header, buf)
    }

    fn decode_header(&mut self, buf: impl Buf) -> Result<Header<T>, CodecError> {
        decode(buf)
    }

    fn encode_member(&mut self, member: &Member<T>, buf: impl BufMut) -> Result<(), CodecError> {
        encode(member, buf)
    }

    fn decode_member(&mut self, buf: impl Buf) -> Result<Member<T>, CodecError> {
        decode(buf)
    }
}
