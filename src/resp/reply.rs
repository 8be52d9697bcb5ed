//! What commands answer, and how answers are written in RESP2 or RESP3. A failed command is a
//! typed [`CmdError`], so that metrics tell outcomes apart without reading text.

use bytes::{Bytes, BytesMut};

use crate::ops::OpError;

/// The protocol a connection speaks: RESP2 until a client asks for RESP3 with `HELLO 3`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Protocol {
    /// RESP2: maps and sets are written as arrays, nil as a null bulk string.
    #[default]
    Resp2,
    /// RESP3: maps, sets and nulls have types of their own.
    Resp3,
}

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
    /// Nothing: the null bulk string in RESP2, the null in RESP3.
    Nil,
    /// An array of replies.
    Array(Vec<Reply>),
    /// A map (`HGETALL`, `CONFIG GET`, `HELLO`): a flat array of keys and values in RESP2.
    Map(Vec<(Reply, Reply)>),
    /// A set (`SMEMBERS`, `SINTER`): an array in RESP2.
    Set(Vec<Reply>),
}

impl Reply {
    /// An error reply.
    pub fn err(message: impl Into<String>) -> Reply {
        Reply::Error(message.into())
    }

    /// A bulk string copied from `bytes`.
    pub fn bulk(bytes: impl AsRef<[u8]>) -> Reply {
        Reply::Bulk(Bytes::copy_from_slice(bytes.as_ref()))
    }

    /// An array of bulk strings.
    pub fn bulks<'a>(items: impl IntoIterator<Item = &'a Bytes>) -> Vec<Reply> {
        items.into_iter().map(|b| Reply::Bulk(b.clone())).collect()
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
            OpError::WrongType(m) => CmdError::Client(format!("WRONGTYPE {m}")),
            // Redis's words; the reason stays in the HTTP message and the log.
            OpError::OutOfMemory(_) => {
                CmdError::Client("OOM command not allowed when used memory > 'maxmemory'.".into())
            }
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

/// Appends a reply in `protocol`. Written by hand, without building the codec's frames (its
/// encoder took about 500 instructions for a `GET`'s bulk reply); property tests read every
/// kind of reply back with the `redis-protocol` decoders.
pub fn encode(out: &mut BytesMut, reply: Reply, protocol: Protocol) {
    let mut digits = [0; 20];
    let mut header = |out: &mut BytesMut, prefix: u8, n: i64| {
        out.extend_from_slice(&[prefix]);
        out.extend_from_slice(decimal(n, &mut digits));
        out.extend_from_slice(b"\r\n");
    };
    match reply {
        Reply::Ok => out.extend_from_slice(b"+OK\r\n"),
        Reply::Simple(s) => {
            out.extend_from_slice(b"+");
            out.extend_from_slice(s.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Reply::Error(e) => {
            out.extend_from_slice(b"-");
            // Error lines cannot hold line breaks.
            out.extend(
                e.bytes()
                    .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
            );
            out.extend_from_slice(b"\r\n");
        }
        Reply::Integer(i) => header(out, b':', i),
        Reply::Bulk(b) => {
            out.reserve(b.len() + 16);
            header(out, b'$', b.len() as i64);
            out.extend_from_slice(&b);
            out.extend_from_slice(b"\r\n");
        }
        Reply::Nil => match protocol {
            Protocol::Resp2 => out.extend_from_slice(b"$-1\r\n"),
            Protocol::Resp3 => out.extend_from_slice(b"_\r\n"),
        },
        Reply::Array(items) => {
            header(out, b'*', items.len() as i64);
            for item in items {
                encode(out, item, protocol);
            }
        }
        Reply::Set(items) => {
            let prefix = if protocol == Protocol::Resp3 {
                b'~'
            } else {
                b'*'
            };
            header(out, prefix, items.len() as i64);
            for item in items {
                encode(out, item, protocol);
            }
        }
        Reply::Map(pairs) => {
            match protocol {
                Protocol::Resp3 => header(out, b'%', pairs.len() as i64),
                Protocol::Resp2 => header(out, b'*', 2 * pairs.len() as i64),
            }
            for (k, v) in pairs {
                encode(out, k, protocol);
                encode(out, v, protocol);
            }
        }
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
    use proptest::prelude::*;
    use redis_protocol::resp2::types::BytesFrame as Frame2;
    use redis_protocol::resp3::types::BytesFrame as Frame3;

    fn written(reply: Reply, protocol: Protocol) -> BytesMut {
        let mut out = BytesMut::new();
        encode(&mut out, reply, protocol);
        out
    }

    /// What the RESP2 decoder should read back.
    fn as_resp2(reply: &Reply) -> Frame2 {
        match reply {
            Reply::Ok => Frame2::SimpleString(Bytes::from_static(b"OK")),
            Reply::Simple(s) => Frame2::SimpleString(Bytes::from_static(s.as_bytes())),
            Reply::Error(e) => Frame2::Error(e.replace(['\r', '\n'], " ").into()),
            Reply::Integer(i) => Frame2::Integer(*i),
            Reply::Bulk(b) => Frame2::BulkString(b.clone()),
            Reply::Nil => Frame2::Null,
            Reply::Array(items) | Reply::Set(items) => {
                Frame2::Array(items.iter().map(as_resp2).collect())
            }
            Reply::Map(pairs) => Frame2::Array(
                pairs
                    .iter()
                    .flat_map(|(k, v)| [as_resp2(k), as_resp2(v)])
                    .collect(),
            ),
        }
    }

    /// The shape a RESP3 frame has, ignoring the order of map and set items.
    fn shape3(frame: &Frame3) -> String {
        match frame {
            Frame3::SimpleString { data, .. } => format!("+{}", String::from_utf8_lossy(data)),
            Frame3::SimpleError { data, .. } => format!("-{data}"),
            Frame3::Number { data, .. } => format!(":{data}"),
            Frame3::BlobString { data, .. } => format!("${data:?}"),
            Frame3::Null => "_".into(),
            Frame3::Array { data, .. } => {
                format!(
                    "*[{}]",
                    data.iter().map(shape3).collect::<Vec<_>>().join(",")
                )
            }
            Frame3::Set { data, .. } => {
                let mut items: Vec<String> = data.iter().map(shape3).collect();
                items.sort();
                format!("~[{}]", items.join(","))
            }
            Frame3::Map { data, .. } => {
                let mut items: Vec<String> = data
                    .iter()
                    .map(|(k, v)| format!("{}={}", shape3(k), shape3(v)))
                    .collect();
                items.sort();
                format!("%[{}]", items.join(","))
            }
            other => format!("?{other:?}"),
        }
    }

    /// The shape the RESP3 decoder should read back.
    fn expected3(reply: &Reply) -> String {
        match reply {
            Reply::Ok => "+OK".into(),
            Reply::Simple(s) => format!("+{s}"),
            Reply::Error(e) => format!("-{}", e.replace(['\r', '\n'], " ")),
            Reply::Integer(i) => format!(":{i}"),
            Reply::Bulk(b) => format!("${b:?}"),
            Reply::Nil => "_".into(),
            Reply::Array(items) => format!(
                "*[{}]",
                items.iter().map(expected3).collect::<Vec<_>>().join(",")
            ),
            Reply::Set(items) => {
                let mut s: Vec<String> = items.iter().map(expected3).collect();
                s.sort();
                format!("~[{}]", s.join(","))
            }
            Reply::Map(pairs) => {
                let mut s: Vec<String> = pairs
                    .iter()
                    .map(|(k, v)| format!("{}={}", expected3(k), expected3(v)))
                    .collect();
                s.sort();
                format!("%[{}]", s.join(","))
            }
        }
    }

    fn leaf() -> impl Strategy<Value = Reply> {
        prop_oneof![
            Just(Reply::Ok),
            Just(Reply::Simple("PONG")),
            Just(Reply::Nil),
            any::<i64>().prop_map(Reply::Integer),
            prop::collection::vec(any::<u8>(), 0..40).prop_map(|b| Reply::Bulk(Bytes::from(b))),
            "[a-zA-Z \r\n]{0,20}".prop_map(|e| Reply::Error(format!("ERR {e}"))),
        ]
    }

    fn reply() -> impl Strategy<Value = Reply> {
        leaf().prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Reply::Array),
                // Set members and map keys are distinct, as in every reply a command makes.
                prop::collection::btree_set(any::<u16>(), 0..4).prop_map(|s| Reply::Set(
                    s.into_iter().map(|i| Reply::bulk(i.to_string())).collect()
                )),
                (prop::collection::btree_set(any::<u16>(), 0..4), inner).prop_map(|(keys, v)| {
                    Reply::Map(
                        keys.into_iter()
                            .map(|k| (Reply::bulk(k.to_string()), v.clone()))
                            .collect(),
                    )
                }),
            ]
        })
    }

    proptest! {
        /// Every reply reads back, as RESP2 and as RESP3, as what it says.
        #[test]
        fn replies_read_back_in_both_protocols(reply in reply()) {
            let mut two = written(reply.clone(), Protocol::Resp2);
            let (frame, _, _) = redis_protocol::resp2::decode::decode_bytes_mut(&mut two)
                .expect("resp2").expect("a whole frame");
            prop_assert_eq!(frame, as_resp2(&reply));
            prop_assert!(two.is_empty());
            let mut three = written(reply.clone(), Protocol::Resp3);
            let (frame, _, _) = redis_protocol::resp3::decode::complete::decode_bytes_mut(&mut three)
                .expect("resp3").expect("a whole frame");
            prop_assert_eq!(shape3(&frame), expected3(&reply));
        }
    }

    #[test]
    fn error_replies_never_break_the_line() {
        let out = written(Reply::err("ERR two\r\nlines"), Protocol::Resp2);
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
