//! Operator removal of dead members, disseminated as foca custom broadcasts.
//!
//! A removal names one *life* of a member: its identity (id and generation) as the node that
//! took the operator's call saw it, dead. Every member that learns it shows that member, and
//! every older life of it, as `left` (so out of the ring); a newer generation (the process
//! started again) is a new member and unaffected.
//!
//! Why a custom broadcast, and not the identity the members already gossip: foca's member
//! updates (a `Down` of the identity with `leaving` set, as a graceful leave is told) would
//! reach the members that are up at the time, but foca forgets them after their last
//! retransmission and its `Feed` (the member list a joining node gets) carries only *active*
//! members, so a node that was down during the removal, or joins later, would never hear of
//! it and would show the removed member `dead`, with its ring share, for good. A removal
//! must be remembered. So each member keeps every removal it has learned in a small book
//! (this handler's), foca disseminates a new one like any update (piggybacked on its next
//! messages, `max_transmissions` times), and the wrapper hands the whole book to foca again
//! whenever a member may not have it: when one announces itself to us (a start, a rejoin,
//! the periodic member-list sync) our reply and our next messages carry it, and when a new
//! identity comes up (a restart, or the other side of a healed partition). Members that
//! already know a removal drop it on arrival, so this costs a few dozen bytes per removal on
//! a handful of messages, and never floods.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use foca::{BroadcastHandler, Invalidates};
use serde::{Deserialize, Serialize};

use super::NodeInfo;
use crate::causality::Timestamp;

/// One custom broadcast item, as it travels. An enum, so later kinds can be added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Item {
    /// This life of a member (and every older one) was removed by an operator.
    Removed(NodeInfo),
    /// The typed namespace was flushed: everything written before this is gone. Remembered
    /// and handed out like removals, so a node that was down or cut off learns it too.
    Flushed(Timestamp),
}

impl Item {
    pub(crate) fn encode(&self) -> Vec<u8> {
        // Encoding a plain struct into a Vec cannot fail.
        rmp_serde::to_vec(self).unwrap_or_default()
    }
}

/// Which item a queued broadcast is: a newer removal of the same member, or a later flush,
/// replaces an older one still being disseminated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemKey {
    /// A removal of one member's life.
    Removal {
        /// The member.
        id: String,
        /// Its life.
        generation: u64,
    },
    /// A flush with this cutoff.
    Flush(Timestamp),
}

impl Invalidates for ItemKey {
    fn invalidates(&self, other: &Self) -> bool {
        match (self, other) {
            (
                ItemKey::Removal { id, generation },
                ItemKey::Removal {
                    id: other_id,
                    generation: other_generation,
                },
            ) => id == other_id && generation >= other_generation,
            (ItemKey::Flush(a), ItemKey::Flush(b)) => a >= b,
            _ => false,
        }
    }
}

/// Every removal a member has learned, shared between foca's handler and the wrapper.
#[derive(Debug, Default)]
pub(crate) struct Book {
    /// The latest removed life of each member, by id.
    pub(crate) removed: BTreeMap<String, NodeInfo>,
    /// Removals learned since the wrapper last looked.
    pub(crate) fresh: Vec<NodeInfo>,
    /// The latest flush of the typed namespace learned.
    pub(crate) flushed: Option<Timestamp>,
}

/// The book, shared. The wrapper and foca's handler run on the same thread, one at a time,
/// so the lock is never contended; it is only there because foca owns its handler and offers
/// no way back to it.
#[derive(Debug, Clone, Default)]
pub(crate) struct SharedBook(Arc<Mutex<Book>>);

impl SharedBook {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Book> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// foca's handler of custom broadcasts: decides what is news.
pub(crate) struct Handler {
    pub(crate) book: SharedBook,
}

/// A broadcast item that could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("custom broadcast: {0}")]
pub struct ItemError(#[from] rmp_serde::decode::Error);

impl BroadcastHandler<NodeInfo> for Handler {
    type Key = ItemKey;
    type Error = ItemError;

    /// A removal newer than what the book holds for that member is news: recorded, and
    /// disseminated further. One we know is dropped, so a removal stops spreading once
    /// everyone has it. One added locally (`sender` is `None`: the operator's call, or the
    /// wrapper handing the book out again) is always disseminated.
    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&NodeInfo>,
    ) -> Result<Option<ItemKey>, ItemError> {
        let member = match rmp_serde::from_slice(data)? {
            Item::Removed(member) => member,
            Item::Flushed(before) => {
                let mut book = self.book.lock();
                let news = book.flushed.as_ref().is_none_or(|known| before > *known);
                if news {
                    book.flushed = Some(before.clone());
                }
                return Ok((news || sender.is_none()).then_some(ItemKey::Flush(before)));
            }
        };
        let key = ItemKey::Removal {
            id: member.id.clone(),
            generation: member.generation,
        };
        let mut book = self.book.lock();
        let news = book
            .removed
            .get(&member.id)
            .is_none_or(|known| member.generation > known.generation);
        if news {
            book.removed.insert(member.id.clone(), member.clone());
            book.fresh.push(member);
        }
        Ok((news || sender.is_none()).then_some(key))
    }
}
