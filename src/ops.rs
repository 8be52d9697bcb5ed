//! What clients ask of the cluster, independent of the front end (HTTP, RESP, the CLI) and of
//! the node that carries it out: the operations, their consistency settings and their errors.
//!
//! Writes that issue dots (a `/kv` put, a counter delta, a set update) are coordinated by a
//! replica of their key; a node outside the key's preference list forwards them as they are
//! written here, so these types are also part of the node-to-node protocol.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::causality::CausalContext;
use crate::config::Quorum;
use crate::storage::{Kind, Value};

/// Longest key, in bytes (API.md).
pub const MAX_KEY_BYTES: usize = 1024;

/// Longest request deadline a client may ask for, in milliseconds.
pub const MAX_TIMEOUT_MS: u64 = 60_000;

/// A client's consistency settings as sent (`None`: the cluster default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Consistency {
    pub n: Option<u32>,
    pub w: Option<Quorum>,
    pub r: Option<Quorum>,
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
    pub n: u32,
    pub w: Need,
    pub r: Need,
    pub timeout_ms: u64,
    pub sloppy: bool,
}

/// A change to one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Write {
    /// `PUT /kv`: supersedes what `context` covers, a sibling of everything else.
    KvPut {
        value: Bytes,
        context: Option<CausalContext>,
        /// Time to live in milliseconds (HTTP's `ttl` is in seconds, Redis's `PX` in ms).
        ttl_ms: Option<u64>,
    },
    /// `DELETE /kv`: removes what `context` covers, or what a read at R sees without one.
    KvDelete {
        context: Option<CausalContext>,
    },
    LwwPut {
        value: Bytes,
        /// Time to live in milliseconds (HTTP's `ttl` is in seconds, Redis's `PX` in ms).
        ttl_ms: Option<u64>,
    },
    LwwDelete,
    CounterAdd {
        delta: i64,
    },
    SetUpdate {
        add: Vec<String>,
        remove: Vec<String>,
    },
}

impl Write {
    /// The key space the write belongs to.
    pub fn kind(&self) -> Kind {
        match self {
            Write::KvPut { .. } | Write::KvDelete { .. } => Kind::Kv,
            Write::LwwPut { .. } | Write::LwwDelete => Kind::Lww,
            Write::CounterAdd { .. } => Kind::Counter,
            Write::SetUpdate { .. } => Kind::Set,
        }
    }

    /// Whether the write issues dots, so only a replica of the key may coordinate it: its
    /// store knows the highest dot it handed out for the key.
    pub fn issues_dots(&self) -> bool {
        matches!(
            self,
            Write::KvPut { .. } | Write::CounterAdd { .. } | Write::SetUpdate { .. }
        )
    }

    /// Short operation name for metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Write::KvPut { .. } => "kv_put",
            Write::KvDelete { .. } => "kv_delete",
            Write::LwwPut { .. } => "lww_put",
            Write::LwwDelete => "lww_delete",
            Write::CounterAdd { .. } => "counter_add",
            Write::SetUpdate { .. } => "set_update",
        }
    }
}

/// What a successful write reports back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    pub removed: u32,
}

/// What a read found: the merge of at least R replica answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadResult {
    /// `None`: no replica that answered has ever seen the key.
    pub value: Option<Value>,
    pub answers: u32,
    /// The time the read was merged at; what is live is judged at this time.
    pub now_ms: u64,
}

/// Why an operation failed. Each maps onto one API.md error code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum OpError {
    /// 400: the request itself is wrong; the message says how to fix it.
    #[error("{0}")]
    BadRequest(String),
    /// 413: a key or value over the limit.
    #[error("{0}")]
    TooLarge(String),
    /// 503: fewer than the needed replicas answered in time. The write may still have reached
    /// some replicas.
    #[error("needed {needed} replica answers, got {acks}: {message}")]
    Unavailable {
        needed: u32,
        acks: u32,
        message: String,
    },
}

impl OpError {
    pub fn bad(message: impl Into<String>) -> Self {
        OpError::BadRequest(message.into())
    }

    /// The API.md error code.
    pub fn code(&self) -> &'static str {
        match self {
            OpError::BadRequest(_) => "bad_request",
            OpError::TooLarge(_) => "too_large",
            OpError::Unavailable { .. } => "quorum_unavailable",
        }
    }
}

/// Checks a key name against API.md's limits.
pub fn check_key(name: &str) -> Result<(), OpError> {
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
