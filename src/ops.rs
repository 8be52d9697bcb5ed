//! What clients ask of the cluster, independent of the front end (HTTP, RESP, the CLI) and of
//! the node that carries it out: the operations, their consistency settings and their errors.
//!
//! A forwarded write carries its [`Plan`] and comes back with its [`Written`] or [`OpError`],
//! so these types are also part of the node-to-node protocol. The writes themselves, type by
//! type, are in [`crate::datatype`].

use serde::{Deserialize, Serialize};

use bytes::Bytes;

use crate::causality::CausalContext;
use crate::config::Quorum;
use crate::storage::Value;

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// Longest request deadline a client may ask for, in milliseconds.
pub const MAX_TIMEOUT_MS: u64 = 60_000;

/// A client's consistency settings as sent (`None`: the cluster default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Consistency {
    /// Replicas to hold the key (N).
    pub n: Option<u32>,
    /// Replica acks a write waits for (W).
    pub w: Option<Quorum>,
    /// Replica answers a read waits for (R).
    pub r: Option<Quorum>,
    /// How long the coordinating node waits for replicas, 1 to [`MAX_TIMEOUT_MS`].
    pub timeout_ms: Option<u64>,
    /// Dynamo's sloppy quorum: hinted writes to fallback nodes count toward `w`.
    pub sloppy: Option<bool>,
}

impl Consistency {
    /// Sets one parameter from its text form (`n`, `w`, `r`, `timeout_ms`, `sloppy`) as HTTP
    /// queries and the CLI spell it; the error says what to send instead.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), OpError> {
        match name {
            "n" => {
                self.n = Some(match value.parse::<u32>() {
                    Ok(0) => return Err(OpError::bad("n=0 stores nothing; use n=1 or more")),
                    Ok(n) => n,
                    Err(_) => {
                        return Err(OpError::bad(format!(
                            "n={value:?} is not a number of replicas; use an integer from 1"
                        )));
                    }
                })
            }
            "w" | "r" => {
                let q = Quorum::parse(value).map_err(|e| OpError::bad(format!("{name}: {e}")))?;
                if name == "w" {
                    self.w = Some(q);
                } else {
                    self.r = Some(q);
                }
            }
            "timeout_ms" => {
                self.timeout_ms = Some(match value.parse::<u64>() {
                    Ok(t) if (1..=MAX_TIMEOUT_MS).contains(&t) => t,
                    _ => {
                        return Err(OpError::bad(format!(
                            "timeout_ms={value:?} is not allowed; use an integer from 1 to {MAX_TIMEOUT_MS}"
                        )));
                    }
                })
            }
            "sloppy" => {
                self.sloppy = Some(match value {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(OpError::bad(format!(
                            "sloppy={value:?} is not allowed; use true or false"
                        )));
                    }
                })
            }
            _ => {
                return Err(OpError::bad(format!(
                    "unknown parameter {name:?}; use n, w, r, timeout_ms or sloppy"
                )));
            }
        }
        Ok(())
    }
}

/// How many replica answers an operation needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Need {
    /// That many, from any replicas.
    Count(u32),
    /// A majority of the key's replicas in this zone (`local_quorum`, resolved to the zone
    /// of the node the client asked, so a forwarded write keeps it).
    ZoneQuorum(String),
    /// A majority of the key's replicas in every zone that has some (`each_quorum`).
    EachZone,
}

impl std::fmt::Display for Need {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Need::Count(k) => write!(f, "{k}"),
            Need::ZoneQuorum(zone) => write!(f, "local_quorum (zone {zone})"),
            Need::EachZone => f.write_str("each_quorum"),
        }
    }
}

/// Consistency settings checked against the cluster: what the coordinator acts on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Replicas of the key, at most the cluster's size.
    pub n: u32,
    /// Acks a write waits for.
    pub w: Need,
    /// Answers a read waits for.
    pub r: Need,
    /// How long the coordinator waits for replicas before it answers 503.
    pub timeout_ms: u64,
    /// Whether hinted writes to fallback nodes count toward `w`; on unless the client turned it
    /// off.
    pub sloppy: bool,
}

/// What a successful write reports back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Written {
    /// Replicas that acknowledged in time (at least W).
    pub acks: u32,
    /// `/kv`: the causal context of the new version (what the writer has now seen).
    pub context: Option<CausalContext>,
    /// Counters: the value after the write, as merged from the acknowledging replicas.
    pub counter: Option<i128>,
    /// Sets: members the write added (were absent) and removed (were present), as the
    /// coordinator saw them.
    pub added: u32,
    /// Sets: members the write removed (were present), as the coordinator saw them.
    pub removed: u32,
    /// Typed writes that ask for it: the string the key held before (`SET ... GET`,
    /// `GETSET`, `GETDEL`), as the coordinating replica saw it.
    pub previous: Option<Bytes>,
    /// Typed writes that answer with values: a string's value after an increment, each
    /// incremented hash field's value, an `APPEND`'s new length.
    pub values: Vec<Bytes>,
    /// A conditional write (`NX`, `XX`, `GT`, `LT`, `HSETNX`) whose condition held, or a
    /// write to a key that existed (`DEL`, `EXPIRE`, `PERSIST`).
    pub applied: bool,
}

/// What a read found: the merge of at least R replica answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadResult {
    /// `None`: no replica that answered has ever seen the key.
    pub value: Option<Value>,
    /// Replicas whose answers were merged (at least R).
    pub answers: u32,
    /// The time the read was merged at; what is live is judged at this time.
    pub now_ms: u64,
}

/// Why an operation failed. Each maps onto one API error code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum OpError {
    /// 400: the request itself is wrong; the message says how to fix it.
    #[error("{0}")]
    BadRequest(String),
    /// 413: a key or value over the limit.
    #[error("{0}")]
    TooLarge(String),
    /// 409: the key holds another type (the message names both).
    #[error("{0}")]
    WrongType(String),
    /// 503: fewer than the needed replicas answered in time. The write may still have reached
    /// some replicas.
    #[error("needed {needed} replica answers, got {acks}: {message}")]
    Unavailable {
        /// Replica answers or acks the operation needed.
        needed: u32,
        /// How many arrived in time.
        acks: u32,
        /// What went wrong (which replicas failed, or why none was asked), for the client.
        message: String,
    },
    /// 507: the node is past its memory limit under `noeviction`, and the write would grow
    /// the data. Nothing was written.
    #[error("{0}")]
    OutOfMemory(String),
}

impl OpError {
    /// A 400 with this message.
    pub fn bad(message: impl Into<String>) -> Self {
        OpError::BadRequest(message.into())
    }

    /// The API error code.
    pub fn code(&self) -> &'static str {
        match self {
            OpError::BadRequest(_) => "bad_request",
            OpError::TooLarge(_) => "too_large",
            OpError::WrongType(_) => "wrong_type",
            OpError::Unavailable { .. } => "quorum_unavailable",
            OpError::OutOfMemory(_) => "out_of_memory",
        }
    }
}

/// Checks a key name against the API's limits (1 to 1024 bytes).
pub fn check_key(name: &[u8]) -> Result<(), OpError> {
    if name.is_empty() {
        return Err(OpError::bad("the key is empty; use 1 to 1024 bytes"));
    }
    if name.len() > MAX_KEY_BYTES {
        return Err(OpError::TooLarge(format!(
            "the key is {} bytes; keys may have at most {MAX_KEY_BYTES}",
            name.len()
        )));
    }
    Ok(())
}
