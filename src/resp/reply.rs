//! What commands answer, and how answers are written: the replies of the hot path (`+OK`, bulk
//! strings, nil, integers) directly, the rest through the `redis-protocol` codec. A failed
//! command is a typed [`CmdError`], so that metrics tell outcomes apart without reading text.

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::encode::extend_encode;
use redis_protocol::resp2::types::BytesFrame as Frame;

use crate::ops::OpError;

/// What a command answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`.
    Ok,
    /// A simple string (`+PONG`).
    Simple(&'static str),
    /// An error line, its code first (`ERR`, `WRONGTYPE`, `QUORUM`).
    Error(String),
    /// An integer.
    Integer(i64),
    /// A bulk string.
    Bulk(Bytes),
    /// The null bulk string.
    Nil,
    /// An array of replies.
    Array(Vec<Reply>),
}

impl Reply {
    /// An error reply.
    pub fn err(message: impl Into<String>) -> Reply {
        Reply::Error(message.into())
    }

    /// The reply as the codec's frame.
    fn frame(self) -> Frame {
        match self {
            Reply::Ok => Frame::SimpleString(Bytes::from_static(b"OK")),
            Reply::Simple(s) => Frame::SimpleString(Bytes::from_static(s.as_bytes())),
            // Error lines cannot hold line breaks.
            Reply::Error(e) => Frame::Error(e.replace(['\r', '\n'], " ").into()),
            Reply::Integer(i) => Frame::Integer(i),
            Reply::Bulk(b) => Frame::BulkString(b),
            Reply::Nil => Frame::Null,
            Reply::Array(items) => Frame::Array(items.into_iter().map(Reply::frame).collect()),
        }
    }
}

/// Why a command failed: a mistake of the client's (the error line says which), or too few
/// replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CmdError {
    /// The command itself is wrong; the line starts with its code (`ERR ...`).
    Client(String),
    /// Fewer than W (or R) replicas answered in time.
    Unavailable {
        /// Replica answers needed.
        needed: u32,
        /// Replica answers received.
        acks: u32,
        /// What happened, and what to do.
        message: String,
    },
}

impl CmdError {
    /// An `ERR` error with this message.
    pub fn err(message: impl std::fmt::Display) -> CmdError {
        CmdError::Client(format!("ERR {message}"))
    }

    /// Redis's reply to a malformed command.
    pub fn syntax() -> CmdError {
        CmdError::Client("ERR syntax error".into())
    }

    /// Redis's reply to an argument that should be an integer.
    pub fn not_an_integer() -> CmdError {
        CmdError::Client("ERR value is not an integer or out of range".into())
    }

    /// The outcome label of the request metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            CmdError::Client(_) => "bad_request",
            CmdError::Unavailable { .. } => "unavailable",
        }
    }
}

impl From<OpError> for CmdError {
    fn from(e: OpError) -> Self {
        match e {
            OpError::Unavailable {
                needed,
                acks,
                message,
            } => CmdError::Unavailable {
                needed,
                acks,
                message,
            },
            OpError::BadRequest(m) | OpError::TooLarge(m) => CmdError::err(m),
        }
    }
}

impl From<CmdError> for Reply {
    fn from(e: CmdError) -> Self {
        match e {
            CmdError::Client(line) => Reply::Error(line),
            CmdError::Unavailable {
                needed,
                acks,
                message,
            } => Reply::Error(format!(
                "QUORUM needed {needed} acks, got {acks}: {message}"
            )),
        }
    }
}

impl From<OpError> for Reply {
    fn from(e: OpError) -> Self {
        Reply::from(CmdError::from(e))
    }
}

/// Appends a reply. The replies of the hot path (`+OK`, bulk strings, nil, integers) are
/// written directly (redis-protocol's encoder took about 500 instructions for a `GET`'s bulk
/// reply); the rest go through the codec.
pub fn encode(out: &mut BytesMut, reply: Reply) {
    let mut digits = [0; 20];
    match &reply {
        Reply::Ok => return out.extend_from_slice(b"+OK\r\n"),
        Reply::Nil => return out.extend_from_slice(b"$-1\r\n"),
        Reply::Integer(i) => {
            out.extend_from_slice(b":");
            out.extend_from_slice(decimal(*i, &mut digits));
            return out.extend_from_slice(b"\r\n");
        }
        Reply::Bulk(b) => {
            out.reserve(b.len() + 16);
            out.extend_from_slice(b"$");
            out.extend_from_slice(decimal(b.len() as i64, &mut digits));
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(b);
            return out.extend_from_slice(b"\r\n");
        }
        _ => {}
    }
    let frame = reply.frame();
    if let Err(e) = extend_encode(out, &frame, false) {
        tracing::warn!("cannot encode a reply: {e}");
    }
}

/// `n` in decimal, written at the end of `buf`.
fn decimal(n: i64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    let mut rest = n.unsigned_abs();
    loop {
        at -= 1;
        buf[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if n < 0 {
        at -= 1;
        buf[at] = b'-';
    }
    &buf[at..]
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The replies written directly are byte for byte what the codec writes.
        #[test]
        fn direct_replies_match_the_codec(
            i in proptest::prelude::any::<i64>(),
            bulk in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
        ) {
            let edge = [i, 0, -1, i64::MIN, i64::MAX, 9, 10, -10];
            let mut replies = vec![Reply::Ok, Reply::Nil, Reply::Bulk(Bytes::from(bulk))];
            replies.extend(edge.iter().map(|n| Reply::Integer(*n)));
            for reply in replies {
                let mut direct = BytesMut::new();
                encode(&mut direct, reply.clone());
                let mut codec = BytesMut::new();
                extend_encode(&mut codec, &reply.frame(), false).expect("encode");
                proptest::prop_assert_eq!(&direct[..], &codec[..]);
            }
        }
    }

    #[test]
    fn error_replies_never_break_the_line() {
        let mut out = BytesMut::new();
        encode(&mut out, Reply::err("ERR two\r\nlines"));
        assert_eq!(&out[..], b"-ERR two  lines\r\n");
    }

    #[test]
    fn quorum_errors_name_what_was_needed() {
        let reply = Reply::from(OpError::Unavailable {
            needed: 2,
            acks: 1,
            message: "n3 is dead".into(),
        });
        assert_eq!(
            reply,
            Reply::Error("QUORUM needed 2 acks, got 1: n3 is dead".into())
        );
    }
}
