//! Set commands over the add-wins sets of the typed namespace: `SADD`, `SREM`, `SMEMBERS`,
//! `SISMEMBER`, `SMISMEMBER`, `SCARD`, `SRANDMEMBER`, `SPOP`, `SINTER`, `SUNION`, `SDIFF`,
//! `SSCAN`.

use std::collections::BTreeSet;

use bytes::Bytes;
use rand::seq::IndexedRandom;

use super::scan::{Cursor, page};
use crate::datatype::typed::{self, TypedWrite};
use crate::resp::command::{Access, Ctx, DataCommand, Keys, Meta, integer};
use crate::resp::reply::{CmdError, Reply};

/// A set command on one key.
const fn meta(name: &'static str, arity: i32, access: Access, summary: &'static str) -> Meta {
    let metric = match access {
        Access::Read => "set_get",
        _ => "set_update",
    };
    Meta::new(name, arity, access, Keys::ONE, "set", summary).counted(metric)
}

/// A set command on every key it names.
const fn multi_meta(name: &'static str, summary: &'static str) -> Meta {
    Meta::new(name, -2, Access::Read, Keys::ALL, "set", summary).counted("set_get")
}

/// The members named, each once.
fn distinct(args: &[Bytes]) -> Vec<Bytes> {
    let mut members = args.to_vec();
    members.sort();
    members.dedup();
    members
}

/// The members of the set `key` (none if missing; the type error if not a set).
async fn members(ctx: &Ctx<'_>, key: &Bytes) -> Result<Vec<Bytes>, CmdError> {
    let read = ctx.typed(key).await?;
    Ok(typed::members(&read)?.into_iter().cloned().collect())
}

/// `SADD key member [member ...]`: how many were not members.
pub struct SAdd {
    key: Bytes,
    members: Vec<Bytes>,
}

impl DataCommand for SAdd {
    const META: Meta = meta(
        "SADD",
        -3,
        Access::Write,
        "Adds one or more members to a set.",
    );

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(SAdd {
            key: args[0].clone(),
            members: distinct(&args[1..]),
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let write = TypedWrite::UpdateSet {
            add: self.members,
            remove: Vec::new(),
        };
        let written = ctx.write_typed(&self.key, write).await?;
        Ok(Reply::Integer(i64::from(written.added)))
    }
}

/// `SREM key member [member ...]`: how many were members.
pub struct SRem {
    key: Bytes,
    members: Vec<Bytes>,
}

impl DataCommand for SRem {
    const META: Meta = meta(
        "SREM",
        -3,
        Access::Write,
        "Removes one or more members from a set.",
    );

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(SRem {
            key: args[0].clone(),
            members: distinct(&args[1..]),
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let write = TypedWrite::UpdateSet {
            add: Vec::new(),
            remove: self.members,
        };
        let written = ctx.write_typed(&self.key, write).await?;
        Ok(Reply::Integer(i64::from(written.removed)))
    }
}

/// `SMEMBERS key`.
pub struct SMembers {
    key: Bytes,
}

impl DataCommand for SMembers {
    const META: Meta = meta("SMEMBERS", 2, Access::Read, "Returns all members of a set.");

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(SMembers {
            key: args[0].clone(),
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let members = members(ctx, &self.key).await?;
        Ok(Reply::Set(Reply::bulks(&members)))
    }
}

/// `SISMEMBER key member`.
pub struct SIsMember {
    key: Bytes,
    member: Bytes,
}

impl DataCommand for SIsMember {
    const META: Meta = meta(
        "SISMEMBER",
        3,
        Access::Read,
        "Determines whether a member belongs to a set.",
    );

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(SIsMember {
            key: args[0].clone(),
            member: args[1].clone(),
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let members = members(ctx, &self.key).await?;
        Ok(Reply::Integer(i64::from(members.contains(&self.member))))
    }
}

/// `SMISMEMBER key member [member ...]`.
pub struct SMIsMember {
    key: Bytes,
    members: Vec<Bytes>,
}

impl DataCommand for SMIsMember {
    const META: Meta = meta(
        "SMISMEMBER",
        -3,
        Access::Read,
        "Determines whether multiple members belong to a set.",
    );

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(SMIsMember {
            key: args[0].clone(),
            members: args[1..].to_vec(),
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let members = members(ctx, &self.key).await?;
        let members: std::collections::HashSet<&Bytes> = members.iter().collect();
        Ok(Reply::Array(
            self.members
                .iter()
                .map(|m| Reply::Integer(i64::from(members.contains(m))))
                .collect(),
        ))
    }
}

/// `SCARD key`.
pub struct SCard {
    key: Bytes,
}

impl DataCommand for SCard {
    const META: Meta = meta(
        "SCARD",
        2,
        Access::Read,
        "Returns the number of members in a set.",
    );

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(SCard {
            key: args[0].clone(),
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        Ok(Reply::Integer(members(ctx, &self.key).await?.len() as i64))
    }
}

/// `SRANDMEMBER key [count]`: random members; a negative count may repeat them.
pub struct SRandMember {
    key: Bytes,
    count: Option<i64>,
}

impl DataCommand for SRandMember {
    const META: Meta = meta(
        "SRANDMEMBER",
        -2,
        Access::Read,
        "Gets one or multiple random members from a set.",
    );

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        if args.len() > 2 {
            return Err(CmdError::syntax());
        }
        Ok(SRandMember {
            key: args[0].clone(),
            count: args.get(1).map(integer).transpose()?,
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let members = members(ctx, &self.key).await?;
        let mut rng = rand::rng();
        Ok(match self.count {
            None => members
                .choose(&mut rng)
                .cloned()
                .map_or(Reply::Nil, Reply::Bulk),
            Some(n) if n >= 0 => Reply::Array(Reply::bulks(
                members.sample(&mut rng, (n as usize).min(members.len())),
            )),
            Some(_) if members.is_empty() => Reply::Array(Vec::new()),
            Some(n) => {
                let count = n.unsigned_abs();
                if count > MAX_REPEATED as u64 {
                    return Err(CmdError::err(format!(
                        "value is out of range: a negative count may ask for at most \
                         {MAX_REPEATED} members"
                    )));
                }
                Reply::Array(
                    (0..count)
                        .filter_map(|_| members.choose(&mut rng))
                        .map(|m| Reply::Bulk(m.clone()))
                        .collect(),
                )
            }
        })
    }
}

/// The most members `SRANDMEMBER` with a negative count (members may repeat) answers: its
/// reply is built in memory, and Redis's own limit (the count's range) would let one command
/// take all of it.
const MAX_REPEATED: usize = 1 << 20;

/// `SPOP key [count]`: removes and answers random members. Two clients popping at once may
/// both get the same member (the pop is a read, then a remove).
pub struct SPop {
    key: Bytes,
    count: Option<usize>,
}

impl DataCommand for SPop {
    const META: Meta = meta(
        "SPOP",
        -2,
        Access::Write,
        "Returns one or more random members from a set after removing them.",
    );

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        if args.len() > 2 {
            return Err(CmdError::syntax());
        }
        let count = match args.get(1).map(integer).transpose()? {
            Some(n) if n < 0 => {
                return Err(CmdError::err("value is out of range, must be positive"));
            }
            n => n.map(|n| n as usize),
        };
        Ok(SPop {
            key: args[0].clone(),
            count,
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let members = members(ctx, &self.key).await?;
        let picked: Vec<Bytes> = members
            .sample(&mut rand::rng(), self.count.unwrap_or(1).min(members.len()))
            .cloned()
            .collect();
        if !picked.is_empty() {
            let write = TypedWrite::UpdateSet {
                add: Vec::new(),
                remove: picked.clone(),
            };
            ctx.write_typed(&self.key, write).await?;
        }
        Ok(match self.count {
            None => picked.into_iter().next().map_or(Reply::Nil, Reply::Bulk),
            Some(_) => Reply::Set(Reply::bulks(&picked)),
        })
    }
}

/// What a set operation does with the sets of its keys.
#[derive(Clone, Copy)]
enum SetOp {
    Inter,
    Union,
    Diff,
}

/// The set operation's result over the sets of `keys`, read side by side.
async fn combine(ctx: &Ctx<'_>, keys: &[Bytes], op: SetOp) -> Result<Reply, CmdError> {
    let reads = futures_util::future::join_all(keys.iter().map(|k| members(ctx, k))).await;
    let mut sets = Vec::with_capacity(reads.len());
    for read in reads {
        sets.push(read?.into_iter().collect::<BTreeSet<Bytes>>());
    }
    let mut iter = sets.into_iter();
    let first = iter.next().unwrap_or_default();
    let result = iter.fold(first, |acc, s| match op {
        SetOp::Inter => acc.intersection(&s).cloned().collect(),
        SetOp::Union => acc.union(&s).cloned().collect(),
        SetOp::Diff => acc.difference(&s).cloned().collect(),
    });
    Ok(Reply::Set(Reply::bulks(&result)))
}

/// `SINTER key [key ...]`.
pub struct SInter(Vec<Bytes>);

impl DataCommand for SInter {
    const META: Meta = multi_meta("SINTER", "Returns the intersect of multiple sets.");

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(SInter(args.to_vec()))
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        combine(ctx, &self.0, SetOp::Inter).await
    }
}

/// `SUNION key [key ...]`.
pub struct SUnion(Vec<Bytes>);

impl DataCommand for SUnion {
    const META: Meta = multi_meta("SUNION", "Returns the union of multiple sets.");

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(SUnion(args.to_vec()))
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        combine(ctx, &self.0, SetOp::Union).await
    }
}

/// `SDIFF key [key ...]`.
pub struct SDiff(Vec<Bytes>);

impl DataCommand for SDiff {
    const META: Meta = multi_meta("SDIFF", "Returns the difference of multiple sets.");

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(SDiff(args.to_vec()))
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        combine(ctx, &self.0, SetOp::Diff).await
    }
}

/// `SSCAN key cursor [MATCH pattern] [COUNT count]`: members in pages; a full iteration
/// returns every member that was there throughout it.
pub struct SScan {
    key: Bytes,
    cursor: Cursor,
}

impl DataCommand for SScan {
    const META: Meta = meta("SSCAN", -3, Access::Read, "Iterates over members of a set.");

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(SScan {
            key: args[0].clone(),
            cursor: Cursor::parse(&args[1..], false)?,
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let members = members(ctx, &self.key).await?;
        let (next, items) = page(&self.cursor, members.iter().map(|m| (m, ())));
        Ok(Reply::Array(vec![
            Reply::bulk(next.to_string()),
            Reply::Array(
                items
                    .into_iter()
                    .map(|(m, _)| Reply::Bulk(m.clone()))
                    .collect(),
            ),
        ]))
    }
}
