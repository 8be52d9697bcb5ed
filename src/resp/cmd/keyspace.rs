//! The whole cluster's keyspace from any node: `SCAN`, `KEYS`, `DBSIZE`, `FLUSHALL`,
//! `FLUSHDB`.

use bytes::Bytes;

use super::scan::Cursor;
use crate::resp::command::{Access, Ctx, DataCommand, Keys, Meta, is};
use crate::resp::reply::{CmdError, Reply};
use crate::storage::{Kind, ScannedKey};

/// Keys looked at per replica request when a command walks the whole keyspace.
const WALK_PAGE: usize = 1000;

/// Walks the whole keyspace, handing every page's keys to `each`.
async fn walk(ctx: &Ctx<'_>, mut each: impl FnMut(Vec<ScannedKey>)) -> Result<(), CmdError> {
    let mut cursor = 0;
    loop {
        let page = ctx
            .coordinator
            .scan(Kind::Typed, cursor, WALK_PAGE, ctx.consistency)
            .await?;
        each(page.keys);
        if page.next == 0 {
            return Ok(());
        }
        cursor = page.next;
    }
}

/// `SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]`: the cluster's keys in pages; a
/// full iteration returns every key that existed throughout it at least once (a key may come
/// twice).
pub struct Scan {
    cursor: Cursor,
}

impl DataCommand for Scan {
    const META: Meta = Meta::new(
        "SCAN",
        -2,
        Access::Read,
        Keys::NONE,
        "generic",
        "Iterates over the key names in the database.",
    )
    .counted("scan");

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(Scan {
            cursor: Cursor::parse(args, true)?,
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let c = &self.cursor;
        let page = ctx
            .coordinator
            .scan(Kind::Typed, c.start, c.count, ctx.consistency)
            .await?;
        let keys = page
            .keys
            .into_iter()
            .filter(|k| c.keeps(&k.name))
            .filter(|k| {
                c.kind
                    .as_ref()
                    .is_none_or(|t| k.typed.is_some_and(|kt| kt.name() == t))
            })
            .map(|k| Reply::Bulk(k.name))
            .collect();
        Ok(Reply::Array(vec![
            Reply::bulk(page.next.to_string()),
            Reply::Array(keys),
        ]))
    }
}

/// `KEYS pattern`: one full scan.
pub struct KeysMatching {
    pattern: Bytes,
}

impl DataCommand for KeysMatching {
    const META: Meta = Meta::new(
        "KEYS",
        2,
        Access::Read,
        Keys::NONE,
        "generic",
        "Returns all key names that match a pattern.",
    )
    .counted("scan");

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(KeysMatching {
            pattern: args[0].clone(),
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let mut out = Vec::new();
        walk(ctx, |keys| {
            out.extend(
                keys.into_iter()
                    .filter(|k| crate::resp::glob::matches(&self.pattern, &k.name))
                    .map(|k| Reply::Bulk(k.name)),
            );
        })
        .await?;
        Ok(Reply::Array(out))
    }
}

/// `DBSIZE`: the cluster's keys, each counted once.
pub struct DbSize;

impl DataCommand for DbSize {
    const META: Meta = Meta::new(
        "DBSIZE",
        1,
        Access::Read,
        Keys::NONE,
        "server",
        "Returns the number of keys in the database.",
    )
    .counted("scan");

    fn parse(_: &[Bytes]) -> Result<Self, CmdError> {
        Ok(DbSize)
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let mut count = 0;
        walk(ctx, |keys| count += keys.len()).await?;
        Ok(Reply::Integer(count as i64))
    }
}

/// `FLUSHALL [ASYNC | SYNC]` and `FLUSHDB`: empties the typed namespace of the whole cluster.
/// `+OK` once every live member applied it; nothing written before it comes back, also
/// through members down or cut off at the time; writes after it are kept.
pub struct FlushAll;

impl FlushAll {
    fn parse_in(args: &[Bytes]) -> Result<Self, CmdError> {
        match args {
            [] => Ok(FlushAll),
            [mode] if is(mode, "ASYNC") || is(mode, "SYNC") => Ok(FlushAll),
            _ => Err(CmdError::syntax()),
        }
    }

    async fn flush(ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        ctx.coordinator.flush_all(ctx.consistency).await?;
        Ok(Reply::Ok)
    }
}

impl DataCommand for FlushAll {
    const META: Meta = Meta::new(
        "FLUSHALL",
        -1,
        Access::Admin,
        Keys::NONE,
        "server",
        "Removes all keys from all databases.",
    )
    .counted("flush");

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        FlushAll::parse_in(args)
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        FlushAll::flush(ctx).await
    }
}

/// `FLUSHDB [ASYNC | SYNC]`: quorumkv has one database, so as `FLUSHALL`.
pub struct FlushDb;

impl DataCommand for FlushDb {
    const META: Meta = Meta::new(
        "FLUSHDB",
        -1,
        Access::Admin,
        Keys::NONE,
        "server",
        "Removes all keys from the current database.",
    )
    .counted("flush");

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        FlushAll::parse_in(args).map(|_| FlushDb)
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        FlushAll::flush(ctx).await
    }
}
