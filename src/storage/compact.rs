//! How an entry holds its state in memory: most entries of a cache are a string with nothing
//! but its last written value, and those are kept as the bytes and a packed timestamp instead
//! of a full typed state (a boxed struct of maps and options and a heap copy of its writer's
//! node id, several hundred bytes). Everything that changes an entry works on the full state
//! and the entry is packed again afterwards, so the data types never see this form.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use bytes::Bytes;

use super::Value;
use crate::causality::Timestamp;
use crate::crdt::TypedValue;

/// Most node ids numbered. A cluster has a handful; the bound keeps a peer that sends made-up
/// ids from growing the table: past it, values stay in the full form.
const MAX_NAMES: usize = 4096;

/// Node ids seen in timestamps, numbered in the order they were first seen.
#[derive(Default)]
struct Names {
    ids: HashMap<Arc<str>, u32>,
    names: Vec<Arc<str>>,
}

fn names() -> &'static RwLock<Names> {
    static NAMES: OnceLock<RwLock<Names>> = OnceLock::new();
    NAMES.get_or_init(RwLock::default)
}

/// The number of node id `name`, given it one if it has none yet (`None` when the table is
/// full).
fn intern(name: &str) -> Option<u32> {
    {
        let table = names()
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(&id) = table.ids.get(name) {
            return Some(id);
        }
    }
    let mut table = names()
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(&id) = table.ids.get(name) {
        return Some(id);
    }
    if table.names.len() >= MAX_NAMES {
        return None;
    }
    let id = table.names.len() as u32;
    let name: Arc<str> = Arc::from(name);
    table.names.push(Arc::clone(&name));
    table.ids.insert(name, id);
    Some(id)
}

/// The node id numbered `id`.
fn name(id: u32) -> String {
    let table = names()
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    table
        .names
        .get(id as usize)
        .map(|n| n.to_string())
        .unwrap_or_default()
}

/// A [`Timestamp`] with its node id numbered: 16 bytes and no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PackedTs {
    millis: u64,
    logical: u32,
    node: u32,
}

impl PackedTs {
    fn pack(ts: &Timestamp) -> Option<Self> {
        Some(PackedTs {
            millis: ts.millis,
            logical: ts.logical,
            node: intern(&ts.node)?,
        })
    }

    fn unpack(self) -> Timestamp {
        Timestamp {
            millis: self.millis,
            logical: self.logical,
            node: name(self.node),
        }
    }
}

/// An entry's state, packed when it is a plain string.
#[derive(Debug, Clone)]
pub(super) enum Held {
    /// A string with only a written value (see [`TypedValue::plain_string`]).
    Plain {
        /// The bytes written.
        value: Bytes,
        /// When.
        ts: PackedTs,
    },
    /// Anything else, as the data types hold it.
    Full(Value),
}

impl Held {
    /// Holds `value`, packed if it can be.
    #[cfg(test)]
    pub fn new(value: Value) -> Self {
        let mut held = Held::Full(value);
        held.pack();
        held
    }

    /// Packs a full state that is a plain string.
    pub fn pack(&mut self) {
        if let Held::Full(Value::Typed(t)) = self
            && let Some((value, ts)) = t.plain_string()
            && let Some(ts) = PackedTs::pack(ts)
        {
            *self = Held::Plain {
                value: value.clone(),
                ts,
            };
        }
    }

    /// The state (unpacked into a copy for a plain string).
    pub fn value(&self) -> Cow<'_, Value> {
        match self {
            Held::Full(v) => Cow::Borrowed(v),
            Held::Plain { value, ts } => Cow::Owned(unpack(value, *ts)),
        }
    }

    /// The state to change; a plain string is unpacked in place first (and stays so until
    /// [`Held::pack`]).
    pub fn value_mut(&mut self) -> &mut Value {
        if let Held::Plain { value, ts } = self {
            *self = Held::Full(unpack(value, *ts));
        }
        match self {
            Held::Full(v) => v,
            // Unpacked just above.
            Held::Plain { .. } => unreachable!("a plain string was unpacked above"),
        }
    }

    /// Whether it is a typed name that is gone (deleted or expired) at `now_ms`.
    pub fn is_tombstone(&self, now_ms: u64) -> bool {
        match self {
            Held::Plain { .. } => false,
            Held::Full(v) => v.is_tombstone(now_ms),
        }
    }

    /// When its time to live next runs out, if it has one.
    pub fn next_expiry(&self) -> Option<u64> {
        match self {
            Held::Plain { .. } => None,
            Held::Full(v) => v.next_expiry(),
        }
    }

    /// Whether it is a live name of the typed namespace at `now_ms`, and whether it has a time
    /// to live then.
    pub fn typed_live(&self, now_ms: u64) -> Option<bool> {
        match self {
            Held::Plain { .. } => Some(false),
            Held::Full(Value::Typed(t)) if !t.is_tombstone(now_ms) => {
                Some(t.expires_at(now_ms).is_some())
            }
            Held::Full(_) => None,
        }
    }
}

fn unpack(value: &Bytes, ts: PackedTs) -> Value {
    Value::Typed(Box::new(TypedValue::plain(value.clone(), ts.unpack())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::typed::TtlChange;

    fn ts(millis: u64, node: &str) -> Timestamp {
        Timestamp {
            millis,
            logical: 3,
            node: node.into(),
        }
    }

    #[test]
    fn a_plain_string_is_packed_and_comes_back_the_same() {
        let state = TypedValue::new().set_string(
            Bytes::from_static(b"v"),
            TtlChange::Clear,
            &ts(10, "n1"),
            10,
        );
        let mut full = TypedValue::new();
        crate::crdt::Crdt::merge(&mut full, &state);
        let value = Value::Typed(Box::new(full));
        let held = Held::new(value.clone());
        assert!(matches!(held, Held::Plain { .. }));
        assert_eq!(held.value().as_ref(), &value);
        assert_eq!(
            held.value().item_hash_and_size(&key()),
            value.item_hash_and_size(&key())
        );
    }

    #[test]
    fn anything_else_stays_full() {
        let with_ttl = TypedValue::new().set_string(
            Bytes::from_static(b"v"),
            TtlChange::At(99),
            &ts(10, "n1"),
            10,
        );
        let held = Held::new(Value::Typed(Box::new(with_ttl.into_state())));
        assert!(matches!(held, Held::Full(_)));
        assert_eq!(held.next_expiry(), Some(99));
    }

    #[test]
    fn changing_a_packed_string_unpacks_it() {
        let state = TypedValue::new()
            .set_string(
                Bytes::from_static(b"v"),
                TtlChange::Clear,
                &ts(10, "n2"),
                10,
            )
            .into_state();
        let mut held = Held::new(Value::Typed(Box::new(state)));
        let Value::Typed(t) = held.value_mut() else {
            panic!("a typed value");
        };
        let expiring = t.set_expiry(TtlChange::At(50), &ts(11, "n2"), 11);
        crate::crdt::Crdt::merge(t.as_mut(), &expiring);
        held.pack();
        assert!(
            matches!(held, Held::Full(_)),
            "a string with a TTL is not plain"
        );
        assert_eq!(held.next_expiry(), Some(50));
    }

    fn key() -> super::super::Key {
        super::super::Key::from_bytes(super::super::Kind::Typed, Bytes::from_static(b"k"))
    }
}
