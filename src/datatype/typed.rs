//! The typed namespace (`/lww`, `/set`, `/hash` and the Redis protocol): strings that count,
//! add-wins sets and hashes under one name space, the value being a
//! [`TypedValue`](crate::crdt::TypedValue).
//!
//! Every write is made by a replica of its key from the replica's own state (it issues dots,
//! checks the key's type, and replaces what it saw), and reports what Redis answers. Writes
//! whose answer depends on what the key holds (a condition, a delete's count, a previous value)
//! read the key at R first, so the replica's state includes what a quorum has seen.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{Base, Delta, Limits, Operation, check_ttl, check_value_size};
use crate::crdt::typed::{Number, TtlChange, Type, TypedError};
use crate::crdt::{Crdt, TypedValue};
use crate::ops::{OpError, ReadResult, Written};
use crate::storage::{Kind, Value};

/// The message of Redis's type error.
pub const WRONGTYPE: &str = "Operation against a key holding the wrong kind of value";

/// When a conditional write applies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Condition {
    /// Always.
    #[default]
    Always,
    /// Only if the key (or field) does not exist (`NX`).
    IfAbsent,
    /// Only if it exists (`XX`).
    IfPresent,
}

/// When an expiry write applies, by the key's current time to live (`EXPIRE`'s options).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpiryCondition {
    /// Always.
    #[default]
    Always,
    /// Only if the key has no time to live (`NX`).
    NoTtl,
    /// Only if it has one (`XX`).
    HasTtl,
    /// Only if the new expiry is later (`GT`; no time to live counts as infinite).
    Later,
    /// Only if the new expiry is earlier (`LT`; no time to live counts as infinite).
    Earlier,
    /// Only if the key has a time to live and the new one is earlier (`XX LT`).
    EarlierThanTtl,
}

/// A time-to-live change as it travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ttl {
    /// Keep the key's time to live.
    Keep,
    /// Remove it.
    Clear,
    /// Expire this many milliseconds after the write is made.
    AfterMs(u64),
    /// Expire at this Unix time in milliseconds.
    AtMs(u64),
}

impl Ttl {
    fn change(self, now_ms: u64) -> TtlChange {
        match self {
            Ttl::Keep => TtlChange::Keep,
            Ttl::Clear => TtlChange::Clear,
            Ttl::AfterMs(ms) => TtlChange::At(now_ms.saturating_add(ms)),
            Ttl::AtMs(at) => TtlChange::At(at),
        }
    }
}

/// A number as it travels (`f64` compared bit for bit).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Amount {
    /// An integer increment.
    Int(i64),
    /// A floating-point increment.
    Float(f64),
}

impl Eq for Amount {}

impl Amount {
    fn number(self) -> Number {
        match self {
            Amount::Int(i) => Number::Int(i),
            Amount::Float(f) => Number::Float(f),
        }
    }
}

/// One write to a name of the typed namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TypedWrite {
    /// `SET`, `PUT /lww`, and the other commands that write a whole string.
    SetString {
        /// The new value.
        value: Bytes,
        /// What happens to the time to live.
        ttl: Ttl,
        /// `NX` / `XX`.
        condition: Condition,
        /// Replace a key of another type (Redis's `SET`); else the type error (HTTP's 409).
        any_type: bool,
        /// Report the previous string (`SET ... GET`, `GETSET`).
        get: bool,
    },
    /// `APPEND`: the value appended to the string (or set, if absent).
    Append {
        /// What to append.
        value: Bytes,
    },
    /// `SETRANGE`: the value written at an offset, padded with zero bytes.
    SetRange {
        /// Where.
        offset: u64,
        /// What.
        value: Bytes,
    },
    /// `DEL`, `UNLINK`, `DELETE /lww|/set|/hash`: the key, whatever it holds.
    Delete {
        /// Report the previous string (`GETDEL`; a type error if it is not a string).
        get: bool,
    },
    /// `INCRBY`, `INCRBYFLOAT` and friends on a string.
    Incr {
        /// The increment.
        by: Amount,
    },
    /// `EXPIRE`, `PEXPIRE`, `EXPIREAT`, `PEXPIREAT`, `PERSIST`, `GETEX`'s options.
    Expire {
        /// The new time to live; `Clear` for `PERSIST`.
        ttl: Ttl,
        /// When it applies.
        condition: ExpiryCondition,
    },
    /// `SADD`, `SREM`, `POST /set`.
    UpdateSet {
        /// Members to add.
        add: Vec<Bytes>,
        /// Members to remove.
        remove: Vec<Bytes>,
    },
    /// `HSET`, `HSETNX`, `HINCRBY`, `HDEL`, `POST /hash`.
    UpdateHash {
        /// Fields to set.
        set: Vec<(Bytes, Bytes)>,
        /// Fields to add to.
        incr: Vec<(Bytes, Amount)>,
        /// Fields to remove.
        remove: Vec<Bytes>,
        /// Set only fields that do not exist (`HSETNX`).
        only_new: bool,
    },
}

impl TypedWrite {
    /// The write's delta against `current` at `now_ms`, with `ts` its timestamp and `actor`
    /// the replica's; fills in the report.
    fn make(
        &self,
        current: &TypedValue,
        actor: &str,
        ts: &crate::causality::Timestamp,
        now_ms: u64,
        limits: &Limits,
        written: &mut Written,
    ) -> Result<Option<TypedValue>, OpError> {
        let kind = current.kind_at(now_ms);
        let string = || current.string(now_ms);
        Ok(match self {
            TypedWrite::SetString {
                value,
                ttl,
                condition,
                any_type,
                get,
            } => {
                if kind.is_some_and(|k| k != Type::String) && (!any_type || *get) {
                    return Err(wrong_type());
                }
                if *get {
                    written.previous = string();
                }
                let holds = kind.is_some();
                let go = match condition {
                    Condition::Always => true,
                    Condition::IfAbsent => !holds,
                    Condition::IfPresent => holds,
                };
                written.applied = go;
                match ttl.change(now_ms) {
                    _ if !go => None,
                    // A time to live already passed (`EXAT`/`PXAT` in the past): as in Redis,
                    // the write answers as done and leaves the key deleted.
                    TtlChange::At(at) if at <= now_ms => {
                        holds.then(|| current.delete(false, ts, now_ms))
                    }
                    change => Some(current.set_string(value.clone(), change, ts, now_ms)),
                }
            }
            TypedWrite::Append { value } => {
                check_string(kind)?;
                let mut joined = string().map(|s| s.to_vec()).unwrap_or_default();
                check_value_size(joined.len() + value.len(), limits)?;
                joined.extend_from_slice(value);
                written.values = vec![Bytes::from(joined.len().to_string())];
                Some(current.set_string(Bytes::from(joined), TtlChange::Keep, ts, now_ms))
            }
            TypedWrite::SetRange { offset, value } => {
                check_string(kind)?;
                let mut bytes = string().map(|s| s.to_vec()).unwrap_or_default();
                if value.is_empty() {
                    written.values = vec![Bytes::from(bytes.len().to_string())];
                    return Ok(None);
                }
                // The offset is checked against the limit before the write is made (`check`).
                let end = offset.saturating_add(value.len() as u64);
                let (start, end) = (*offset as usize, end as usize);
                if bytes.len() < end {
                    bytes.resize(end, 0);
                }
                bytes[start..end].copy_from_slice(value);
                written.values = vec![Bytes::from(bytes.len().to_string())];
                Some(current.set_string(Bytes::from(bytes), TtlChange::Keep, ts, now_ms))
            }
            TypedWrite::Delete { get } => {
                if *get {
                    check_string(kind)?;
                    written.previous = string();
                }
                written.applied = kind.is_some();
                kind.map(|_| current.delete(false, ts, now_ms))
            }
            TypedWrite::Incr { by } => {
                let (delta, value) = current
                    .incr(actor, by.number(), ts, now_ms)
                    .map_err(|e| typed_error(e, false))?;
                written.values = vec![value];
                Some(delta)
            }
            TypedWrite::Expire { ttl, condition } => {
                let Some(_) = kind else {
                    return Ok(None);
                };
                let change = ttl.change(now_ms);
                let had = current.expires_at(now_ms);
                let new = match change {
                    TtlChange::At(at) => Some(at),
                    _ => None,
                };
                let go = match condition {
                    ExpiryCondition::Always => true,
                    ExpiryCondition::NoTtl => had.is_none(),
                    ExpiryCondition::HasTtl => had.is_some(),
                    // No time to live counts as infinite.
                    ExpiryCondition::Later => had.is_some() && new > had,
                    ExpiryCondition::Earlier => match (new, had) {
                        (Some(n), Some(h)) => n < h,
                        (Some(_), None) => true,
                        _ => false,
                    },
                    ExpiryCondition::EarlierThanTtl => match (new, had) {
                        (Some(n), Some(h)) => n < h,
                        _ => false,
                    },
                };
                // PERSIST of a key without a time to live changes nothing.
                let go = go && !(change == TtlChange::Clear && had.is_none());
                written.applied = go;
                if !go {
                    return Ok(None);
                }
                match new {
                    // An expiry in the past deletes the key, as in Redis.
                    Some(at) if at <= now_ms => Some(current.delete(false, ts, now_ms)),
                    _ => Some(current.set_expiry(change, ts, now_ms)),
                }
            }
            TypedWrite::UpdateSet { add, remove } => {
                let (delta, added, removed) = current
                    .update_set(actor, add, remove, ts, now_ms)
                    .map_err(|e| typed_error(e, false))?;
                written.added = added;
                written.removed = removed;
                Some(delta)
            }
            TypedWrite::UpdateHash {
                set,
                incr,
                remove,
                only_new,
            } => {
                let kept;
                let set = if *only_new {
                    if kind.is_some_and(|k| k != Type::Hash) {
                        return Err(wrong_type());
                    }
                    let present: Vec<Bytes> = current
                        .fields(now_ms)
                        .into_iter()
                        .map(|(f, _)| f.clone())
                        .collect();
                    kept = set
                        .iter()
                        .filter(|(f, _)| !present.contains(f))
                        .cloned()
                        .collect::<Vec<_>>();
                    written.applied = !kept.is_empty();
                    &kept
                } else {
                    set
                };
                if set.is_empty() && incr.is_empty() && remove.is_empty() {
                    return Ok(None);
                }
                let numbers: Vec<(Bytes, Number)> =
                    incr.iter().map(|(f, a)| (f.clone(), a.number())).collect();
                let (delta, created, removed, values) = current
                    .update_hash(actor, set, &numbers, remove, ts, now_ms)
                    .map_err(|e| typed_error(e, true))?;
                written.added = created;
                written.removed = removed;
                written.values = values;
                Some(delta)
            }
        })
    }
}

/// Redis's type error.
fn wrong_type() -> OpError {
    OpError::WrongType(WRONGTYPE.into())
}

/// The type check of a command on strings.
fn check_string(kind: Option<Type>) -> Result<(), OpError> {
    match kind {
        Some(k) if k != Type::String => Err(wrong_type()),
        _ => Ok(()),
    }
}

/// A refusal as the client's error, in Redis's words (`field`: about a hash field).
fn typed_error(e: TypedError, field: bool) -> OpError {
    match e {
        TypedError::WrongType { .. } => wrong_type(),
        TypedError::NotAnInteger if field => OpError::bad("hash value is not an integer"),
        TypedError::NotAFloat if field => OpError::bad("hash value is not a float"),
        other => OpError::bad(other.to_string()),
    }
}

impl Operation for TypedWrite {
    fn kind(&self) -> Kind {
        Kind::Typed
    }

    fn may_grow(&self) -> bool {
        match self {
            TypedWrite::Delete { .. } | TypedWrite::Expire { .. } => false,
            TypedWrite::UpdateSet { add, .. } => !add.is_empty(),
            TypedWrite::UpdateHash { set, incr, .. } => !(set.is_empty() && incr.is_empty()),
            _ => true,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            TypedWrite::SetString { .. }
            | TypedWrite::Append { .. }
            | TypedWrite::SetRange { .. } => "lww_put",
            TypedWrite::Delete { .. } => "lww_delete",
            TypedWrite::Incr { .. } => "string_incr",
            TypedWrite::Expire { .. } => "expire",
            TypedWrite::UpdateSet { .. } => "set_update",
            TypedWrite::UpdateHash { .. } => "hash_update",
        }
    }

    fn check(&self, limits: &Limits) -> Result<(), OpError> {
        let ttl = |ttl: &Ttl| match ttl {
            Ttl::AfterMs(ms) => check_ttl(Some(*ms)),
            _ => Ok(()),
        };
        match self {
            TypedWrite::SetString { value, ttl: t, .. } => {
                check_value_size(value.len(), limits)?;
                ttl(t)
            }
            TypedWrite::Append { value } => check_value_size(value.len(), limits),
            // An empty value writes nothing, at any offset (as in Redis).
            TypedWrite::SetRange { value, .. } if value.is_empty() => Ok(()),
            TypedWrite::SetRange { offset, value } => {
                let end = offset.saturating_add(value.len() as u64);
                check_value_size(usize::try_from(end).unwrap_or(usize::MAX), limits)
            }
            TypedWrite::Expire { ttl: t, .. } => ttl(t),
            TypedWrite::UpdateSet { add, remove } => {
                if add.is_empty() && remove.is_empty() {
                    return Err(OpError::bad(
                        "nothing to do: give members to \"add\" or \"remove\"",
                    ));
                }
                let removed: std::collections::HashSet<&Bytes> = remove.iter().collect();
                if let Some(both) = add.iter().find(|m| removed.contains(m)) {
                    return Err(OpError::bad(format!(
                        "{:?} is both added and removed; send it in one of the two lists",
                        String::from_utf8_lossy(both)
                    )));
                }
                let bytes: usize = add.iter().chain(remove).map(Bytes::len).sum();
                check_total(bytes, limits)
            }
            TypedWrite::UpdateHash {
                set, incr, remove, ..
            } => {
                if set.is_empty() && incr.is_empty() && remove.is_empty() {
                    return Err(OpError::bad(
                        "nothing to do: give fields to \"set\", \"incr\" or \"remove\"",
                    ));
                }
                let mut names: Vec<&Bytes> = set
                    .iter()
                    .map(|(f, _)| f)
                    .chain(incr.iter().map(|(f, _)| f))
                    .chain(remove)
                    .collect();
                let count = names.len();
                names.sort();
                names.dedup();
                if names.len() != count {
                    return Err(OpError::bad(
                        "a field is named twice; give each field in one of \"set\", \"incr\" \
                         or \"remove\", once",
                    ));
                }
                let bytes: usize = set.iter().map(|(f, v)| f.len() + v.len()).sum::<usize>()
                    + incr.iter().map(|(f, _)| f.len()).sum::<usize>()
                    + remove.iter().map(Bytes::len).sum::<usize>();
                check_total(bytes, limits)
            }
            TypedWrite::Delete { .. } | TypedWrite::Incr { .. } => Ok(()),
        }
    }

    /// Adds, field writes and increments issue dots (or count an actor's increments); a
    /// `SET`, a delete, an expiry or a removal only replace what the state they build on holds.
    fn issues_dots(&self) -> bool {
        match self {
            TypedWrite::UpdateSet { add, .. } => !add.is_empty(),
            TypedWrite::UpdateHash { set, incr, .. } => !set.is_empty() || !incr.is_empty(),
            TypedWrite::Incr { .. } => true,
            TypedWrite::SetString { .. }
            | TypedWrite::Append { .. }
            | TypedWrite::SetRange { .. }
            | TypedWrite::Delete { .. }
            | TypedWrite::Expire { .. } => false,
        }
    }

    fn observes(&self) -> bool {
        match self {
            TypedWrite::SetString { condition, get, .. } => *condition != Condition::Always || *get,
            TypedWrite::Append { .. }
            | TypedWrite::SetRange { .. }
            | TypedWrite::Delete { .. }
            | TypedWrite::Expire { .. } => true,
            TypedWrite::UpdateSet { remove, .. } => !remove.is_empty(),
            TypedWrite::UpdateHash {
                remove, only_new, ..
            } => !remove.is_empty() || *only_new,
            TypedWrite::Incr { .. } => false,
        }
    }

    fn delta(&self, base: &mut Base<'_>) -> Result<Delta, OpError> {
        let now = base.now_ms();
        let ts = base.timestamp();
        let limits = base.limits();
        let mut written = Written::default();
        let delta = base.from_state(|current, actor| {
            let empty = TypedValue::new();
            let current = match current {
                Some(Value::Typed(t)) => t,
                _ => &empty,
            };
            self.make(current, actor, &ts, now, &limits, &mut written)
                .map(|delta| delta.map(|d| Value::Typed(Box::new(d))))
        })?;
        base.written = written;
        Ok(delta)
    }

    fn builds_on_state(&self) -> bool {
        true
    }

    fn wants_states(&self) -> bool {
        matches!(self, TypedWrite::Incr { .. })
    }

    /// An increment's value as merged from the replicas that acknowledged it.
    fn report(&self, written: &mut Written, states: &[&Value], now_ms: u64) {
        let mut merged = TypedValue::new();
        for state in states {
            if let Value::Typed(t) = state {
                merged.merge(t);
            }
        }
        if let Some(value) = merged.string(now_ms) {
            written.values = vec![value];
        }
    }
}

/// Checks the total size of a request's members or fields.
fn check_total(bytes: usize, limits: &Limits) -> Result<(), OpError> {
    let max = limits.max_value_bytes;
    if bytes > max {
        return Err(OpError::TooLarge(format!(
            "the members add up to {bytes} bytes; a request may carry at most {max}"
        )));
    }
    Ok(())
}

/// The key's value, if any replica that answered has seen it.
pub fn value(read: &ReadResult) -> Option<&TypedValue> {
    match &read.value {
        Some(Value::Typed(t)) => Some(t),
        _ => None,
    }
}

/// The key's type, if it exists.
pub fn kind(read: &ReadResult) -> Option<Type> {
    value(read).and_then(|t| t.kind_at(read.now_ms))
}

/// The string the key holds; `None` if it does not exist, the type error if it holds another
/// type.
pub fn string(read: &ReadResult) -> Result<Option<Bytes>, OpError> {
    match kind(read) {
        None => Ok(None),
        Some(Type::String) => Ok(value(read).and_then(|t| t.string(read.now_ms))),
        Some(_) => Err(wrong_type()),
    }
}

/// The members of the set the key holds, sorted; none if it does not exist, the type error if
/// it holds another type.
pub fn members(read: &ReadResult) -> Result<Vec<&Bytes>, OpError> {
    match kind(read) {
        None => Ok(Vec::new()),
        Some(Type::Set) => Ok(value(read).map_or_else(Vec::new, |t| t.members(read.now_ms))),
        Some(_) => Err(wrong_type()),
    }
}

/// The fields of the hash the key holds and their values, sorted by field; none if it does
/// not exist, the type error if it holds another type.
pub fn fields(read: &ReadResult) -> Result<Vec<(&Bytes, Bytes)>, OpError> {
    match kind(read) {
        None => Ok(Vec::new()),
        Some(Type::Hash) => Ok(value(read).map_or_else(Vec::new, |t| t.fields(read.now_ms))),
        Some(_) => Err(wrong_type()),
    }
}

/// When the key expires, if it exists and has a time to live.
pub fn expires_at(read: &ReadResult) -> Option<u64> {
    value(read).and_then(|t| t.expires_at(read.now_ms))
}
