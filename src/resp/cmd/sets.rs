//! Set commands: `SADD`, `SREM`, `SMEMBERS`, `SISMEMBER`, `SCARD`, over the add-wins OR-sets
//! of `/set`.

use bytes::Bytes;

use crate::datatype::{Write, set};
use crate::ops::ReadResult;
use crate::resp::command::{Access, Ctx, DataCommand, Keys, Meta, text};
use crate::resp::reply::{CmdError, Reply};
use crate::storage::Kind;

/// The members named after the key, each once, sorted.
fn members(args: &[Bytes]) -> Result<Vec<String>, CmdError> {
    let mut members = args
        .iter()
        .map(|m| text(m).map(str::to_string))
        .collect::<Result<Vec<_>, _>>()?;
    members.sort();
    members.dedup();
    Ok(members)
}

/// The metadata of `SADD` and `SREM`.
const fn update_meta(name: &'static str) -> Meta {
    Meta {
        name,
        arity: -3,
        access: Access::Write,
        keys: Keys::ONE,
        metric: Some("set_update"),
    }
}

/// The metadata of the set reads.
const fn read_meta(name: &'static str, arity: i32) -> Meta {
    Meta {
        name,
        arity,
        access: Access::Read,
        keys: Keys::ONE,
        metric: Some("set_get"),
    }
}

/// `SADD key member [member ...]`: how many were not members before.
pub struct SAdd {
    key: Bytes,
    members: Vec<String>,
}

impl DataCommand for SAdd {
    const META: Meta = update_meta("SADD");

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(SAdd {
            key: args[0].clone(),
            members: members(&args[1..])?,
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let update = set::Update {
            add: self.members,
            remove: Vec::new(),
        };
        let written = ctx.write(&self.key, Write::SetUpdate(update)).await?;
        Ok(Reply::Integer(i64::from(written.added)))
    }
}

/// `SREM key member [member ...]`: how many were members.
pub struct SRem {
    key: Bytes,
    members: Vec<String>,
}

impl DataCommand for SRem {
    const META: Meta = update_meta("SREM");

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(SRem {
            key: args[0].clone(),
            members: members(&args[1..])?,
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let update = set::Update {
            add: Vec::new(),
            remove: self.members,
        };
        let written = ctx.write(&self.key, Write::SetUpdate(update)).await?;
        Ok(Reply::Integer(i64::from(written.removed)))
    }
}

/// Reads the set `key`.
async fn read(ctx: &Ctx<'_>, key: &Bytes) -> Result<ReadResult, CmdError> {
    ctx.read(Kind::Set, key).await
}

/// `SMEMBERS key`.
pub struct SMembers {
    key: Bytes,
}

impl DataCommand for SMembers {
    const META: Meta = read_meta("SMEMBERS", 2);

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(SMembers {
            key: args[0].clone(),
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let read = read(ctx, &self.key).await?;
        Ok(Reply::Array(
            set::members(&read)
                .into_iter()
                .map(|m| Reply::Bulk(Bytes::copy_from_slice(m.as_bytes())))
                .collect(),
        ))
    }
}

/// `SISMEMBER key member`.
pub struct SIsMember {
    key: Bytes,
    member: Bytes,
}

impl DataCommand for SIsMember {
    const META: Meta = read_meta("SISMEMBER", 3);

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(SIsMember {
            key: args[0].clone(),
            member: args[1].clone(),
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let read = read(ctx, &self.key).await?;
        let member = text(&self.member)?;
        Ok(Reply::Integer(i64::from(
            set::members(&read).contains(&member),
        )))
    }
}

/// `SCARD key`.
pub struct SCard {
    key: Bytes,
}

impl DataCommand for SCard {
    const META: Meta = read_meta("SCARD", 2);

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(SCard {
            key: args[0].clone(),
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let read = read(ctx, &self.key).await?;
        Ok(Reply::Integer(set::members(&read).len() as i64))
    }
}
