//! `/set` and Redis sets: add-wins observed-remove sets. A concurrent add and remove of one
//! member: the add wins; a remove removes only the adds it observed.

use serde::{Deserialize, Serialize};

use super::{Base, Delta, Limits, Operation};
use crate::crdt::OrSet;
use crate::ops::{OpError, ReadResult};
use crate::storage::{Kind, Value};

/// `POST /set`, Redis `SADD` and `SREM`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    /// Members to add.
    pub add: Vec<String>,
    /// Members to remove.
    pub remove: Vec<String>,
}

impl Operation for Update {
    fn kind(&self) -> Kind {
        Kind::Set
    }

    fn name(&self) -> &'static str {
        "set_update"
    }

    fn check(&self, limits: &Limits) -> Result<(), OpError> {
        let (add, remove) = (&self.add, &self.remove);
        if add.is_empty() && remove.is_empty() {
            return Err(OpError::bad(
                "nothing to do: give members to \"add\" or \"remove\"",
            ));
        }
        if let Some(both) = add.iter().find(|m| remove.contains(m)) {
            return Err(OpError::bad(format!(
                "{both:?} is both added and removed; send it in one of the two lists"
            )));
        }
        let bytes: usize = add.iter().chain(remove).map(String::len).sum();
        let max = limits.max_value_bytes;
        if bytes > max {
            return Err(OpError::TooLarge(format!(
                "the members add up to {bytes} bytes; a request may carry at most {max}"
            )));
        }
        Ok(())
    }

    fn issues_dots(&self) -> bool {
        true
    }

    /// A remove removes what it observed: it reads at R first, so that adds acknowledged
    /// elsewhere are seen, not only what this replica holds.
    fn observes(&self) -> bool {
        !self.remove.is_empty()
    }

    fn delta(&self, base: &mut Base<'_>) -> Result<Delta, OpError> {
        let (mut added, mut removed) = (0, 0);
        let applied = base.update(|current, actor| {
            let empty = OrSet::new();
            let set = match current {
                Some(Value::Set(s)) => s,
                _ => &empty,
            };
            added = self.add.iter().filter(|m| !set.contains(m)).count() as u32;
            removed = self.remove.iter().filter(|m| set.contains(m)).count() as u32;
            set.update(
                actor,
                self.add.iter().map(String::as_str),
                self.remove.iter().map(String::as_str),
            )
            .map(Value::Set)
            .map_err(|e| e.to_string())
        })?;
        base.written.added = added;
        base.written.removed = removed;
        Ok(Delta::Applied(applied.delta))
    }
}

/// A set read's members, sorted: none for a key never written.
pub fn members(read: &ReadResult) -> Vec<&str> {
    match &read.value {
        Some(Value::Set(set)) => set.members().collect(),
        _ => Vec::new(),
    }
}
