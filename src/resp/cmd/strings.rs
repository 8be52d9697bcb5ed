//! String commands: `GET`, `SET` and its variants, `MGET`, `MSET`, `APPEND`, `STRLEN`,
//! `GETRANGE`, `SETRANGE`, and the `INCR` family, over the strings of the typed namespace
//! (last write wins; increments made anywhere all count).

use bytes::Bytes;

use crate::datatype::typed::{self, Amount, Condition, ExpiryCondition, Ttl, TypedWrite};
use crate::resp::command::{Access, Ctx, DataCommand, Keys, Meta, float, integer, is};
use crate::resp::reply::{CmdError, Reply};

/// A string command.
const fn meta(name: &'static str, arity: i32, access: Access, summary: &'static str) -> Meta {
    let metric = match access {
        Access::Read => "lww_get",
        _ => "lww_put",
    };
    Meta::new(name, arity, access, Keys::ONE, "string", summary).counted(metric)
}

/// A string read's reply: the bulk string, or nil.
fn bulk_or_nil(value: Option<Bytes>) -> Reply {
    value.map_or(Reply::Nil, Reply::Bulk)
}

/// `GET key`.
pub struct Get {
    key: Bytes,
}

impl DataCommand for Get {
    const META: Meta = meta("GET", 2, Access::Read, "Returns the string value of a key.");

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(Get {
            key: args[0].clone(),
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let read = ctx.typed(&self.key).await?;
        Ok(bulk_or_nil(typed::string(&read)?))
    }
}

/// `MGET key [key ...]`: nil for a key that is missing or holds another type.
pub struct MGet {
    keys: Vec<Bytes>,
}

impl DataCommand for MGet {
    const META: Meta = Meta::new(
        "MGET",
        -2,
        Access::Read,
        Keys::ALL,
        "string",
        "Atomically returns the string values of one or more keys.",
    )
    .counted("lww_get");

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(MGet {
            keys: args.to_vec(),
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let reads = futures_util::future::join_all(self.keys.iter().map(|k| ctx.typed(k))).await;
        let mut out = Vec::with_capacity(reads.len());
        for read in reads {
            out.push(bulk_or_nil(typed::string(&read?).ok().flatten()));
        }
        Ok(Reply::Array(out))
    }
}

/// The expiry options of `SET` and `GETEX`.
fn expiry_option(
    option: &Bytes,
    amount: Option<&Bytes>,
    command: &str,
) -> Result<Option<Ttl>, CmdError> {
    let unit: u64 = if is(option, "EX") || is(option, "EXAT") {
        1000
    } else if is(option, "PX") || is(option, "PXAT") {
        1
    } else {
        return Ok(None);
    };
    let amount = integer(amount.ok_or_else(CmdError::syntax)?)?;
    if amount <= 0 {
        return Err(CmdError::err(format!(
            "invalid expire time in '{command}' command"
        )));
    }
    let ms = (amount as u64)
        .checked_mul(unit)
        .ok_or_else(|| CmdError::err(format!("invalid expire time in '{command}' command")))?;
    Ok(Some(if is(option, "EXAT") || is(option, "PXAT") {
        Ttl::AtMs(ms)
    } else {
        Ttl::AfterMs(ms)
    }))
}

/// `SET key value [NX | XX] [GET] [EX s | PX ms | EXAT t | PXAT t | KEEPTTL]`.
pub struct Set {
    key: Bytes,
    write: TypedWrite,
    get: bool,
}

impl DataCommand for Set {
    const META: Meta = meta("SET", -3, Access::Write, "Sets the string value of a key.");

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        let (mut ttl, mut condition, mut get) = (None, None, false);
        let mut i = 2;
        while i < args.len() {
            let option = &args[i];
            if let Some(t) = expiry_option(option, args.get(i + 1), "set")? {
                if ttl.is_some() {
                    return Err(CmdError::syntax());
                }
                ttl = Some(t);
                i += 2;
            } else if is(option, "KEEPTTL") && ttl.is_none() {
                ttl = Some(Ttl::Keep);
                i += 1;
            } else if (is(option, "NX") || is(option, "XX")) && condition.is_none() {
                condition = Some(if is(option, "NX") {
                    Condition::IfAbsent
                } else {
                    Condition::IfPresent
                });
                i += 1;
            } else if is(option, "GET") && !get {
                get = true;
                i += 1;
            } else {
                return Err(CmdError::syntax());
            }
        }
        Ok(Set {
            key: args[0].clone(),
            write: TypedWrite::SetString {
                value: args[1].clone(),
                ttl: ttl.unwrap_or(Ttl::Clear),
                condition: condition.unwrap_or_default(),
                any_type: true,
                get,
            },
            get,
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let written = ctx.write_typed(&self.key, self.write).await?;
        Ok(if self.get {
            bulk_or_nil(written.previous)
        } else if written.applied {
            Reply::Ok
        } else {
            Reply::Nil
        })
    }
}

/// `SETNX key value`: 1 if the key was set.
pub struct SetNx {
    key: Bytes,
    value: Bytes,
}

impl DataCommand for SetNx {
    const META: Meta = meta(
        "SETNX",
        3,
        Access::Write,
        "Sets a key only when it does not exist.",
    );

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(SetNx {
            key: args[0].clone(),
            value: args[1].clone(),
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let write = TypedWrite::SetString {
            value: self.value,
            ttl: Ttl::Clear,
            condition: Condition::IfAbsent,
            any_type: true,
            get: false,
        };
        let written = ctx.write_typed(&self.key, write).await?;
        Ok(Reply::Integer(i64::from(written.applied)))
    }
}

/// `SETEX key seconds value` and `PSETEX key milliseconds value`.
pub struct SetEx {
    key: Bytes,
    value: Bytes,
    ttl_ms: u64,
}

impl SetEx {
    fn parse_in(args: &[Bytes], unit: u64, command: &str) -> Result<Self, CmdError> {
        let amount = integer(&args[1])?;
        if amount <= 0 {
            return Err(CmdError::err(format!(
                "invalid expire time in '{command}' command"
            )));
        }
        Ok(SetEx {
            key: args[0].clone(),
            value: args[2].clone(),
            ttl_ms: (amount as u64).saturating_mul(unit),
        })
    }

    async fn set(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let write = TypedWrite::SetString {
            value: self.value,
            ttl: Ttl::AfterMs(self.ttl_ms),
            condition: Condition::Always,
            any_type: true,
            get: false,
        };
        ctx.write_typed(&self.key, write).await?;
        Ok(Reply::Ok)
    }
}

/// `SETEX key seconds value`.
pub struct SetExSeconds(SetEx);

impl DataCommand for SetExSeconds {
    const META: Meta = meta(
        "SETEX",
        4,
        Access::Write,
        "Sets a key with a time to live in seconds.",
    );

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        SetEx::parse_in(args, 1000, "setex").map(SetExSeconds)
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        self.0.set(ctx).await
    }
}

/// `PSETEX key milliseconds value`.
pub struct PSetEx(SetEx);

impl DataCommand for PSetEx {
    const META: Meta = meta(
        "PSETEX",
        4,
        Access::Write,
        "Sets a key with a time to live in milliseconds.",
    );

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        SetEx::parse_in(args, 1, "psetex").map(PSetEx)
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        self.0.set(ctx).await
    }
}

/// `GETSET key value`: the old value.
pub struct GetSet {
    key: Bytes,
    value: Bytes,
}

impl DataCommand for GetSet {
    const META: Meta = meta(
        "GETSET",
        3,
        Access::Write,
        "Sets a key and returns its old value.",
    );

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(GetSet {
            key: args[0].clone(),
            value: args[1].clone(),
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let write = TypedWrite::SetString {
            value: self.value,
            ttl: Ttl::Clear,
            condition: Condition::Always,
            any_type: false,
            get: true,
        };
        let written = ctx.write_typed(&self.key, write).await?;
        Ok(bulk_or_nil(written.previous))
    }
}

/// `GETDEL key`: the value, and the key deleted.
pub struct GetDel {
    key: Bytes,
}

impl DataCommand for GetDel {
    const META: Meta = meta(
        "GETDEL",
        2,
        Access::Write,
        "Returns a key's value and deletes it.",
    );

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(GetDel {
            key: args[0].clone(),
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let written = ctx
            .write_typed(&self.key, TypedWrite::Delete { get: true })
            .await?;
        Ok(bulk_or_nil(written.previous))
    }
}

/// `GETEX key [EX s | PX ms | EXAT t | PXAT t | PERSIST]`: the value, with a new time to
/// live.
pub struct GetEx {
    key: Bytes,
    ttl: Option<Ttl>,
}

impl DataCommand for GetEx {
    const META: Meta = meta(
        "GETEX",
        -2,
        Access::Write,
        "Returns a key's value and changes its time to live.",
    );

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        let ttl = match &args[1..] {
            [] => None,
            [option] if is(option, "PERSIST") => Some(Ttl::Clear),
            [option, amount] => {
                Some(expiry_option(option, Some(amount), "getex")?.ok_or_else(CmdError::syntax)?)
            }
            _ => return Err(CmdError::syntax()),
        };
        Ok(GetEx {
            key: args[0].clone(),
            ttl,
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let read = ctx.typed(&self.key).await?;
        let value = typed::string(&read)?;
        if let (Some(ttl), Some(_)) = (self.ttl, &value) {
            let write = TypedWrite::Expire {
                ttl,
                condition: ExpiryCondition::Always,
            };
            ctx.write_typed(&self.key, write).await?;
        }
        Ok(bulk_or_nil(value))
    }
}

/// `MSET key value [key value ...]`: each key set as by `SET`, side by side (not atomically:
/// another client may see some of them set before the others).
pub struct MSet {
    pairs: Vec<(Bytes, Bytes)>,
}

impl DataCommand for MSet {
    const META: Meta = Meta::new(
        "MSET",
        -3,
        Access::Write,
        Keys::PAIRS,
        "string",
        "Sets the string values of one or more keys.",
    )
    .counted("lww_put");

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        if !args.len().is_multiple_of(2) {
            return Err(CmdError::Client(
                "ERR wrong number of arguments for 'mset' command".into(),
            ));
        }
        Ok(MSet {
            pairs: args
                .chunks(2)
                .map(|p| (p[0].clone(), p[1].clone()))
                .collect(),
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let writes = self.pairs.into_iter().map(|(key, value)| async move {
            let write = TypedWrite::SetString {
                value,
                ttl: Ttl::Clear,
                condition: Condition::Always,
                any_type: true,
                get: false,
            };
            ctx.write_typed(&key, write).await
        });
        for result in futures_util::future::join_all(writes).await {
            result?;
        }
        Ok(Reply::Ok)
    }
}

/// `APPEND key value`: the string's new length.
pub struct Append {
    key: Bytes,
    value: Bytes,
}

/// The length a write reports, as an integer reply.
fn length(values: &[Bytes]) -> Reply {
    let n = values
        .first()
        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
        .unwrap_or(0);
    Reply::Integer(n)
}

impl DataCommand for Append {
    const META: Meta = meta(
        "APPEND",
        3,
        Access::Write,
        "Appends a string to the value of a key.",
    );

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(Append {
            key: args[0].clone(),
            value: args[1].clone(),
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let write = TypedWrite::Append { value: self.value };
        let written = ctx.write_typed(&self.key, write).await?;
        Ok(length(&written.values))
    }
}

/// `STRLEN key`: 0 for a missing key.
pub struct StrLen {
    key: Bytes,
}

impl DataCommand for StrLen {
    const META: Meta = meta(
        "STRLEN",
        2,
        Access::Read,
        "Returns the length of a string value.",
    );

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(StrLen {
            key: args[0].clone(),
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let read = ctx.typed(&self.key).await?;
        let len = typed::string(&read)?.map_or(0, |v| v.len());
        Ok(Reply::Integer(len as i64))
    }
}

/// `GETRANGE key start end`: the bytes from `start` to `end` inclusive, negative counting from
/// the end, as Redis's.
pub struct GetRange {
    key: Bytes,
    start: i64,
    end: i64,
}

impl DataCommand for GetRange {
    const META: Meta = meta(
        "GETRANGE",
        4,
        Access::Read,
        "Returns a substring of a string.",
    );

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(GetRange {
            key: args[0].clone(),
            start: integer(&args[1])?,
            end: integer(&args[2])?,
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let read = ctx.typed(&self.key).await?;
        let value = typed::string(&read)?.unwrap_or_default();
        Ok(Reply::Bulk(substring(&value, self.start, self.end)))
    }
}

/// Redis's `GETRANGE` arithmetic.
fn substring(value: &Bytes, start: i64, end: i64) -> Bytes {
    let len = value.len() as i64;
    if len == 0 || (start < 0 && end < 0 && start > end) {
        return Bytes::new();
    }
    let clamp = |i: i64| if i < 0 { (len + i).max(0) } else { i };
    let (start, end) = (clamp(start), clamp(end).min(len - 1));
    if start > end || start >= len {
        return Bytes::new();
    }
    value.slice(start as usize..=end as usize)
}

/// `SETRANGE key offset value`: the string's new length.
pub struct SetRange {
    key: Bytes,
    offset: u64,
    value: Bytes,
}

impl DataCommand for SetRange {
    const META: Meta = meta(
        "SETRANGE",
        4,
        Access::Write,
        "Overwrites a part of a string value with another by an offset.",
    );

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        let offset = integer(&args[1])?;
        if offset < 0 {
            return Err(CmdError::err("offset is out of range"));
        }
        Ok(SetRange {
            key: args[0].clone(),
            offset: offset as u64,
            value: args[2].clone(),
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let write = TypedWrite::SetRange {
            offset: self.offset,
            value: self.value,
        };
        let written = ctx.write_typed(&self.key, write).await?;
        Ok(length(&written.values))
    }
}

/// Adds `by` to the string `key` and answers its value after, as an integer or (for floats) a
/// bulk string.
async fn add(ctx: &Ctx<'_>, key: &Bytes, by: Amount) -> Result<Reply, CmdError> {
    let written = ctx.write_typed(key, TypedWrite::Incr { by }).await?;
    let value = written.values.into_iter().next().unwrap_or_default();
    Ok(match by {
        Amount::Int(_) => Reply::Integer(
            std::str::from_utf8(&value)
                .ok()
                .and_then(|v| v.parse().ok())
                .ok_or_else(CmdError::not_an_integer)?,
        ),
        Amount::Float(_) => Reply::Bulk(value),
    })
}

/// The metadata of the increments.
const fn add_meta(name: &'static str, arity: i32, summary: &'static str) -> Meta {
    Meta::new(name, arity, Access::Write, Keys::ONE, "string", summary).counted("string_incr")
}

/// `INCR key`, `DECR key`, `INCRBY key n`, `DECRBY key n`.
pub struct Incr {
    key: Bytes,
    by: i64,
}

impl Incr {
    fn by(args: &[Bytes], sign: i64) -> Result<Self, CmdError> {
        let by = match args.get(1) {
            None => sign,
            Some(n) if sign > 0 => integer(n)?,
            Some(n) => integer(n)?
                .checked_neg()
                .ok_or_else(|| CmdError::err("decrement would overflow"))?,
        };
        Ok(Incr {
            key: args[0].clone(),
            by,
        })
    }
}

/// `INCR key`.
pub struct IncrOne(Incr);

impl DataCommand for IncrOne {
    const META: Meta = add_meta("INCR", 2, "Increments the integer value of a key by one.");

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Incr::by(args, 1).map(IncrOne)
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        add(ctx, &self.0.key, Amount::Int(self.0.by)).await
    }
}

/// `DECR key`.
pub struct DecrOne(Incr);

impl DataCommand for DecrOne {
    const META: Meta = add_meta("DECR", 2, "Decrements the integer value of a key by one.");

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Incr::by(args, -1).map(DecrOne)
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        add(ctx, &self.0.key, Amount::Int(self.0.by)).await
    }
}

/// `INCRBY key increment`.
pub struct IncrBy(Incr);

impl DataCommand for IncrBy {
    const META: Meta = add_meta(
        "INCRBY",
        3,
        "Increments the integer value of a key by a number.",
    );

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Incr::by(args, 1).map(IncrBy)
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        add(ctx, &self.0.key, Amount::Int(self.0.by)).await
    }
}

/// `DECRBY key decrement`.
pub struct DecrBy(Incr);

impl DataCommand for DecrBy {
    const META: Meta = add_meta(
        "DECRBY",
        3,
        "Decrements a number from the integer value of a key.",
    );

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Incr::by(args, -1).map(DecrBy)
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        add(ctx, &self.0.key, Amount::Int(self.0.by)).await
    }
}

/// `INCRBYFLOAT key increment`.
pub struct IncrByFloat {
    key: Bytes,
    by: f64,
}

impl DataCommand for IncrByFloat {
    const META: Meta = add_meta(
        "INCRBYFLOAT",
        3,
        "Increments the floating point value of a key by a number.",
    );

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(IncrByFloat {
            key: args[0].clone(),
            by: float(&args[1])?,
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        add(ctx, &self.key, Amount::Float(self.by)).await
    }
}

#[cfg(test)]
mod tests {
    use super::substring;
    use bytes::Bytes;

    #[test]
    fn getrange_as_redis() {
        let v = Bytes::from_static(b"This is a string");
        assert_eq!(substring(&v, 0, 3), "This");
        assert_eq!(substring(&v, -3, -1), "ing");
        assert_eq!(substring(&v, 0, -1), "This is a string");
        assert_eq!(substring(&v, 10, 100), "string");
        assert_eq!(substring(&v, 5, 3), "");
        assert_eq!(substring(&v, -1, -5), "");
        assert_eq!(substring(&Bytes::new(), 0, -1), "");
    }
}
