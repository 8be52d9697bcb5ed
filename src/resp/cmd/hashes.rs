//! Hash commands over the add-wins maps of the typed namespace, whose fields are strings that
//! count: `HSET`, `HSETNX`, `HMSET`, `HGET`, `HMGET`, `HGETALL`, `HDEL`, `HEXISTS`, `HLEN`,
//! `HKEYS`, `HVALS`, `HSTRLEN`, `HINCRBY`, `HINCRBYFLOAT`, `HSCAN`.

use bytes::Bytes;

use super::scan::{Cursor, page};
use crate::datatype::typed::{self, Amount, TypedWrite};
use crate::resp::command::{Access, Ctx, DataCommand, Keys, Meta, float, integer};
use crate::resp::reply::{CmdError, Reply};

/// A hash command.
const fn meta(name: &'static str, arity: i32, access: Access, summary: &'static str) -> Meta {
    let metric = match access {
        Access::Read => "hash_get",
        _ => "hash_update",
    };
    Meta::new(name, arity, access, Keys::ONE, "hash", summary).counted(metric)
}

/// The fields of the hash `key` and their values, sorted by field (none if missing; the type
/// error if not a hash).
async fn fields(ctx: &Ctx<'_>, key: &Bytes) -> Result<Vec<(Bytes, Bytes)>, CmdError> {
    let read = ctx.typed(key).await?;
    Ok(typed::fields(&read)?
        .into_iter()
        .map(|(f, v)| (f.clone(), v))
        .collect())
}

/// The value of `field` among `fields`.
fn value_of<'a>(fields: &'a [(Bytes, Bytes)], field: &Bytes) -> Option<&'a Bytes> {
    fields
        .binary_search_by(|(f, _)| f.cmp(field))
        .ok()
        .map(|i| &fields[i].1)
}

/// Field-value pairs after the key; the last write of a field named twice wins.
fn pairs(args: &[Bytes], command: &str) -> Result<Vec<(Bytes, Bytes)>, CmdError> {
    if args.is_empty() || !args.len().is_multiple_of(2) {
        return Err(CmdError::Client(format!(
            "ERR wrong number of arguments for '{command}' command"
        )));
    }
    // In order of first appearance, with the last value given.
    let mut at: std::collections::HashMap<&Bytes, usize> = std::collections::HashMap::new();
    let mut pairs: Vec<(Bytes, Bytes)> = Vec::with_capacity(args.len() / 2);
    for p in args.chunks(2) {
        match at.get(&p[0]) {
            Some(&i) => pairs[i].1 = p[1].clone(),
            None => {
                at.insert(&p[0], pairs.len());
                pairs.push((p[0].clone(), p[1].clone()));
            }
        }
    }
    Ok(pairs)
}

/// `HSET key field value [field value ...]`: how many fields are new.
pub struct HSet {
    key: Bytes,
    pairs: Vec<(Bytes, Bytes)>,
}

impl HSet {
    async fn set(self, ctx: &Ctx<'_>) -> Result<u32, CmdError> {
        let write = TypedWrite::UpdateHash {
            set: self.pairs,
            incr: Vec::new(),
            remove: Vec::new(),
            only_new: false,
        };
        Ok(ctx.write_typed(&self.key, write).await?.added)
    }
}

impl DataCommand for HSet {
    const META: Meta = meta(
        "HSET",
        -4,
        Access::Write,
        "Creates or modifies the value of a field in a hash.",
    );

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(HSet {
            key: args[0].clone(),
            pairs: pairs(&args[1..], "hset")?,
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        Ok(Reply::Integer(i64::from(self.set(ctx).await?)))
    }
}

/// `HMSET key field value [field value ...]`: as `HSET`, answering `+OK`.
pub struct HMSet(HSet);

impl DataCommand for HMSet {
    const META: Meta = meta(
        "HMSET",
        -4,
        Access::Write,
        "Sets the values of multiple fields.",
    );

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(HMSet(HSet {
            key: args[0].clone(),
            pairs: pairs(&args[1..], "hmset")?,
        }))
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        self.0.set(ctx).await?;
        Ok(Reply::Ok)
    }
}

/// `HSETNX key field value`: 1 if the field was new and is set.
pub struct HSetNx {
    key: Bytes,
    field: Bytes,
    value: Bytes,
}

impl DataCommand for HSetNx {
    const META: Meta = meta(
        "HSETNX",
        4,
        Access::Write,
        "Sets the value of a field in a hash only when the field doesn't exist.",
    );

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(HSetNx {
            key: args[0].clone(),
            field: args[1].clone(),
            value: args[2].clone(),
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let write = TypedWrite::UpdateHash {
            set: vec![(self.field, self.value)],
            incr: Vec::new(),
            remove: Vec::new(),
            only_new: true,
        };
        let written = ctx.write_typed(&self.key, write).await?;
        Ok(Reply::Integer(i64::from(written.applied)))
    }
}

/// `HGET key field`.
pub struct HGet {
    key: Bytes,
    field: Bytes,
}

impl DataCommand for HGet {
    const META: Meta = meta(
        "HGET",
        3,
        Access::Read,
        "Returns the value of a field in a hash.",
    );

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(HGet {
            key: args[0].clone(),
            field: args[1].clone(),
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let fields = fields(ctx, &self.key).await?;
        Ok(value_of(&fields, &self.field)
            .cloned()
            .map_or(Reply::Nil, Reply::Bulk))
    }
}

/// `HMGET key field [field ...]`.
pub struct HMGet {
    key: Bytes,
    fields: Vec<Bytes>,
}

impl DataCommand for HMGet {
    const META: Meta = meta(
        "HMGET",
        -3,
        Access::Read,
        "Returns the values of all fields in a hash.",
    );

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(HMGet {
            key: args[0].clone(),
            fields: args[1..].to_vec(),
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let fields = fields(ctx, &self.key).await?;
        Ok(Reply::Array(
            self.fields
                .iter()
                .map(|f| {
                    value_of(&fields, f)
                        .cloned()
                        .map_or(Reply::Nil, Reply::Bulk)
                })
                .collect(),
        ))
    }
}

/// `HGETALL key`: a map in RESP3, field and value pairs in RESP2.
pub struct HGetAll {
    key: Bytes,
}

impl DataCommand for HGetAll {
    const META: Meta = meta(
        "HGETALL",
        2,
        Access::Read,
        "Returns all fields and values in a hash.",
    );

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(HGetAll {
            key: args[0].clone(),
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let fields = fields(ctx, &self.key).await?;
        Ok(Reply::Map(
            fields
                .into_iter()
                .map(|(f, v)| (Reply::Bulk(f), Reply::Bulk(v)))
                .collect(),
        ))
    }
}

/// `HDEL key field [field ...]`: how many existed.
pub struct HDel {
    key: Bytes,
    fields: Vec<Bytes>,
}

impl DataCommand for HDel {
    const META: Meta = meta(
        "HDEL",
        -3,
        Access::Write,
        "Deletes one or more fields and their values from a hash.",
    );

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        let mut fields = args[1..].to_vec();
        fields.sort();
        fields.dedup();
        Ok(HDel {
            key: args[0].clone(),
            fields,
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let write = TypedWrite::UpdateHash {
            set: Vec::new(),
            incr: Vec::new(),
            remove: self.fields,
            only_new: false,
        };
        let written = ctx.write_typed(&self.key, write).await?;
        Ok(Reply::Integer(i64::from(written.removed)))
    }
}

/// `HEXISTS key field`.
pub struct HExists {
    key: Bytes,
    field: Bytes,
}

impl DataCommand for HExists {
    const META: Meta = meta(
        "HEXISTS",
        3,
        Access::Read,
        "Determines whether a field exists in a hash.",
    );

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(HExists {
            key: args[0].clone(),
            field: args[1].clone(),
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let fields = fields(ctx, &self.key).await?;
        Ok(Reply::Integer(i64::from(
            value_of(&fields, &self.field).is_some(),
        )))
    }
}

/// `HLEN key`.
pub struct HLen {
    key: Bytes,
}

impl DataCommand for HLen {
    const META: Meta = meta(
        "HLEN",
        2,
        Access::Read,
        "Returns the number of fields in a hash.",
    );

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(HLen {
            key: args[0].clone(),
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        Ok(Reply::Integer(fields(ctx, &self.key).await?.len() as i64))
    }
}

/// `HKEYS key`.
pub struct HKeys {
    key: Bytes,
}

impl DataCommand for HKeys {
    const META: Meta = meta("HKEYS", 2, Access::Read, "Returns all fields in a hash.");

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(HKeys {
            key: args[0].clone(),
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let fields = fields(ctx, &self.key).await?;
        Ok(Reply::Array(
            fields.into_iter().map(|(f, _)| Reply::Bulk(f)).collect(),
        ))
    }
}

/// `HVALS key`.
pub struct HVals {
    key: Bytes,
}

impl DataCommand for HVals {
    const META: Meta = meta("HVALS", 2, Access::Read, "Returns all values in a hash.");

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(HVals {
            key: args[0].clone(),
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let fields = fields(ctx, &self.key).await?;
        Ok(Reply::Array(
            fields.into_iter().map(|(_, v)| Reply::Bulk(v)).collect(),
        ))
    }
}

/// `HSTRLEN key field`.
pub struct HStrLen {
    key: Bytes,
    field: Bytes,
}

impl DataCommand for HStrLen {
    const META: Meta = meta(
        "HSTRLEN",
        3,
        Access::Read,
        "Returns the length of the value of a field.",
    );

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(HStrLen {
            key: args[0].clone(),
            field: args[1].clone(),
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let fields = fields(ctx, &self.key).await?;
        Ok(Reply::Integer(
            value_of(&fields, &self.field).map_or(0, |v| v.len()) as i64,
        ))
    }
}

/// Adds `by` to `field` and answers its value after.
async fn add(ctx: &Ctx<'_>, key: &Bytes, field: Bytes, by: Amount) -> Result<Reply, CmdError> {
    let write = TypedWrite::UpdateHash {
        set: Vec::new(),
        incr: vec![(field, by)],
        remove: Vec::new(),
        only_new: false,
    };
    let written = ctx.write_typed(key, write).await?;
    let value = written.values.into_iter().next().unwrap_or_default();
    Ok(match by {
        Amount::Int(_) => Reply::Integer(
            std::str::from_utf8(&value)
                .ok()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| CmdError::err("hash value is not an integer"))?,
        ),
        Amount::Float(_) => Reply::Bulk(value),
    })
}

/// `HINCRBY key field increment`: a field that counts; increments from anywhere all count.
pub struct HIncrBy {
    key: Bytes,
    field: Bytes,
    by: i64,
}

impl DataCommand for HIncrBy {
    const META: Meta = meta(
        "HINCRBY",
        4,
        Access::Write,
        "Increments the integer value of a field in a hash by a number.",
    );

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(HIncrBy {
            key: args[0].clone(),
            field: args[1].clone(),
            by: integer(&args[2])?,
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        add(ctx, &self.key, self.field, Amount::Int(self.by)).await
    }
}

/// `HINCRBYFLOAT key field increment`.
pub struct HIncrByFloat {
    key: Bytes,
    field: Bytes,
    by: f64,
}

impl DataCommand for HIncrByFloat {
    const META: Meta = meta(
        "HINCRBYFLOAT",
        4,
        Access::Write,
        "Increments the floating point value of a field by a number.",
    );

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(HIncrByFloat {
            key: args[0].clone(),
            field: args[1].clone(),
            by: float(&args[2])?,
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        add(ctx, &self.key, self.field, Amount::Float(self.by)).await
    }
}

/// `HSCAN key cursor [MATCH pattern] [COUNT count]`: fields and values in pages.
pub struct HScan {
    key: Bytes,
    cursor: Cursor,
}

impl DataCommand for HScan {
    const META: Meta = meta(
        "HSCAN",
        -3,
        Access::Read,
        "Iterates over fields and values of a hash.",
    );

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(HScan {
            key: args[0].clone(),
            cursor: Cursor::parse(&args[1..], false)?,
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let fields = fields(ctx, &self.key).await?;
        let (next, items) = page(&self.cursor, fields.iter().map(|(f, v)| (f, v)));
        Ok(Reply::Array(vec![
            Reply::bulk(next.to_string()),
            Reply::Array(
                items
                    .into_iter()
                    .flat_map(|(f, v)| [Reply::Bulk(f.clone()), Reply::Bulk(v.clone())])
                    .collect(),
            ),
        ]))
    }
}
