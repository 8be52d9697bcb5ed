//! Cursors for the `SCAN` family: the arguments (`MATCH`, `COUNT`, `TYPE`) and the paging of a
//! collection (`SSCAN`, `HSCAN`).
//!
//! A cursor is a position, not an index: items are walked in the order of a 63-bit hash of
//! their name, and the cursor is one past the position of the next item to return (0 starts
//! and ends a full iteration). Items added or removed between calls do not shift the others,
//! so a full iteration returns every item that was there throughout it, as Redis guarantees.

use bytes::Bytes;

use crate::resp::command::{integer, is, text};
use crate::resp::glob::matches;
use crate::resp::reply::CmdError;

/// A scan's arguments: where to start, what to keep, how many to look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The cursor the client sent.
    pub start: u64,
    /// Keep only names that match (`MATCH`).
    pub pattern: Option<Bytes>,
    /// About how many items to look at (`COUNT`, default 10).
    pub count: usize,
    /// Keep only keys of this type (`SCAN ... TYPE`).
    pub kind: Option<String>,
}

impl Cursor {
    /// Reads `cursor [MATCH pattern] [COUNT count]` (and `[TYPE type]` when `with_type`).
    pub fn parse(args: &[Bytes], with_type: bool) -> Result<Self, CmdError> {
        let (first, mut rest) = args.split_first().ok_or_else(CmdError::syntax)?;
        let start = text(first)
            .ok()
            .and_then(|t| t.parse::<u64>().ok())
            .ok_or_else(|| CmdError::err("invalid cursor"))?;
        let mut cursor = Cursor {
            start,
            pattern: None,
            count: 10,
            kind: None,
        };
        while let [option, value, more @ ..] = rest {
            if is(option, "MATCH") {
                cursor.pattern = Some(value.clone());
            } else if is(option, "COUNT") {
                let n = integer(value)?;
                if n < 1 {
                    return Err(CmdError::syntax());
                }
                cursor.count = n as usize;
            } else if with_type && is(option, "TYPE") {
                cursor.kind = Some(String::from_utf8_lossy(value).to_lowercase());
            } else {
                return Err(CmdError::syntax());
            }
            rest = more;
        }
        if !rest.is_empty() {
            return Err(CmdError::syntax());
        }
        Ok(cursor)
    }

    /// Whether `name` passes the `MATCH` pattern.
    pub fn keeps(&self, name: &[u8]) -> bool {
        self.pattern.as_ref().is_none_or(|p| matches(p, name))
    }
}

/// The position of an item in a collection's scan order.
pub fn position(name: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(name) >> 1
}

/// One page of a collection's items: from the cursor's position on, about `count` of them (all
/// items of the last position taken, so none is skipped), those that match; and the cursor to
/// go on with (0 at the end).
pub fn page<'a, V>(
    cursor: &Cursor,
    items: impl Iterator<Item = (&'a Bytes, V)>,
) -> (u64, Vec<(&'a Bytes, V)>) {
    let from = cursor.start.saturating_sub(1);
    let mut ordered: Vec<(u64, &'a Bytes, V)> = items
        .map(|(name, v)| (position(name), name, v))
        .filter(|(pos, _, _)| cursor.start == 0 || *pos >= from)
        .collect();
    ordered.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let mut taken = Vec::new();
    let mut next = 0;
    let mut last = None;
    for (pos, name, v) in ordered {
        if taken.len() >= cursor.count && last != Some(pos) {
            next = pos + 1;
            break;
        }
        last = Some(pos);
        taken.push((name, v));
    }
    let kept = taken
        .into_iter()
        .filter(|(name, _)| cursor.keeps(name))
        .collect();
    (next, kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_iteration_returns_every_item_even_as_others_come_and_go() {
        let items: Vec<Bytes> = (0..100).map(|i| Bytes::from(format!("m{i}"))).collect();
        let mut seen = std::collections::BTreeSet::new();
        let mut cursor = Cursor::parse(
            &[Bytes::from("0"), Bytes::from("COUNT"), Bytes::from("7")],
            false,
        )
        .expect("cursor");
        let mut extra = 0;
        loop {
            // Between calls some items go and new ones come.
            let mut now: Vec<Bytes> = items
                .iter()
                .filter(|m| !m.ends_with(b"5"))
                .cloned()
                .collect();
            now.extend((0..extra).map(|i| Bytes::from(format!("new{i}"))));
            extra += 1;
            let (next, page) = page(&cursor, now.iter().map(|m| (m, ())));
            seen.extend(page.into_iter().map(|(m, _)| m.clone()));
            if next == 0 {
                break;
            }
            cursor.start = next;
        }
        for m in items.iter().filter(|m| !m.ends_with(b"5")) {
            assert!(seen.contains(m), "{m:?} was never returned");
        }
        assert!(Cursor::parse(&[Bytes::from("x")], false).is_err());
        assert!(
            Cursor::parse(
                &[Bytes::from("0"), Bytes::from("COUNT"), Bytes::from("0")],
                false
            )
            .is_err()
        );
    }
}
