//! Key commands on any type: `DEL`, `UNLINK`, `EXISTS`, `TYPE`, the `EXPIRE` family, `TTL`,
//! `PTTL`, `PERSIST`.

use bytes::Bytes;

use crate::datatype::typed::{self, ExpiryCondition, Ttl, TypedWrite};
use crate::resp::command::{Access, Ctx, DataCommand, Keys, Meta, integer, is};
use crate::resp::reply::{CmdError, Reply};

/// `DEL key [key ...]` and `UNLINK`: how many of the keys existed.
pub struct Del {
    keys: Vec<Bytes>,
}

/// Deletes every key, side by side; the number that existed.
async fn delete(ctx: &Ctx<'_>, keys: &[Bytes]) -> Result<Reply, CmdError> {
    let deletes = keys
        .iter()
        .map(|key| ctx.write_typed(key, TypedWrite::Delete { get: false }));
    let mut removed = 0;
    for written in futures_util::future::join_all(deletes).await {
        removed += i64::from(written?.applied);
    }
    Ok(Reply::Integer(removed))
}

impl DataCommand for Del {
    const META: Meta = Meta::new(
        "DEL",
        -2,
        Access::Write,
        Keys::ALL,
        "generic",
        "Deletes one or more keys.",
    )
    .counted("lww_delete");

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(Del {
            keys: args.to_vec(),
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        delete(ctx, &self.keys).await
    }
}

/// `UNLINK key [key ...]`: as `DEL` (a delete is a write of a tombstone either way).
pub struct Unlink(Del);

impl DataCommand for Unlink {
    const META: Meta = Meta::new(
        "UNLINK",
        -2,
        Access::Write,
        Keys::ALL,
        "generic",
        "Asynchronously deletes one or more keys.",
    )
    .counted("lww_delete");

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Del::parse(args).map(Unlink)
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        delete(ctx, &self.0.keys).await
    }
}

/// `EXISTS key [key ...]`: how many of the keys exist (a key named twice counts twice).
pub struct Exists {
    keys: Vec<Bytes>,
}

impl DataCommand for Exists {
    const META: Meta = Meta::new(
        "EXISTS",
        -2,
        Access::Read,
        Keys::ALL,
        "generic",
        "Determines whether one or more keys exist.",
    )
    .counted("lww_get");

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(Exists {
            keys: args.to_vec(),
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let reads = futures_util::future::join_all(self.keys.iter().map(|k| ctx.typed(k))).await;
        let mut found = 0;
        for read in reads {
            found += i64::from(typed::kind(&read?).is_some());
        }
        Ok(Reply::Integer(found))
    }
}

/// `TYPE key`: `string`, `set`, `hash`, or `none`.
pub struct TypeOf {
    key: Bytes,
}

impl DataCommand for TypeOf {
    const META: Meta = Meta::new(
        "TYPE",
        2,
        Access::Read,
        Keys::ONE,
        "generic",
        "Determines the type of value stored at a key.",
    )
    .counted("lww_get");

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(TypeOf {
            key: args[0].clone(),
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let read = ctx.typed(&self.key).await?;
        Ok(Reply::Simple(
            typed::kind(&read).map_or("none", |k| k.name()),
        ))
    }
}

/// How an `EXPIRE`-family command counts its argument.
#[derive(Clone, Copy)]
enum Unit {
    /// Seconds from now.
    Seconds,
    /// Milliseconds from now.
    Millis,
    /// A Unix time in seconds.
    AtSeconds,
    /// A Unix time in milliseconds.
    AtMillis,
}

/// `EXPIRE`, `PEXPIRE`, `EXPIREAT`, `PEXPIREAT key amount [NX | XX | GT | LT]`: 1 if the time
/// to live was set. An expiry in the past deletes the key.
pub struct Expire {
    key: Bytes,
    ttl: Ttl,
    condition: ExpiryCondition,
}

impl Expire {
    fn parse_in(args: &[Bytes], unit: Unit) -> Result<Self, CmdError> {
        let amount = integer(&args[1])?;
        let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
        for option in &args[2..] {
            if is(option, "NX") {
                nx = true;
            } else if is(option, "XX") {
                xx = true;
            } else if is(option, "GT") {
                gt = true;
            } else if is(option, "LT") {
                lt = true;
            } else {
                return Err(CmdError::err(format!(
                    "Unsupported option {}",
                    String::from_utf8_lossy(option)
                )));
            }
        }
        if nx && (xx || gt || lt) {
            return Err(CmdError::err(
                "NX and XX, GT or LT options at the same time are not compatible",
            ));
        }
        if gt && lt {
            return Err(CmdError::err(
                "GT and LT options at the same time are not compatible",
            ));
        }
        let condition = match (nx, xx, gt, lt) {
            (true, ..) => ExpiryCondition::NoTtl,
            // GT implies XX: no time to live counts as infinite.
            (_, _, true, _) => ExpiryCondition::Later,
            (_, true, _, true) => ExpiryCondition::EarlierThanTtl,
            (_, _, _, true) => ExpiryCondition::Earlier,
            (_, true, ..) => ExpiryCondition::HasTtl,
            _ => ExpiryCondition::Always,
        };
        let command = match unit {
            Unit::Seconds => "expire",
            Unit::Millis => "pexpire",
            Unit::AtSeconds => "expireat",
            Unit::AtMillis => "pexpireat",
        };
        let invalid = || CmdError::err(format!("invalid expire time in '{command}' command"));
        let ttl = match unit {
            Unit::Seconds | Unit::Millis if amount <= 0 => Ttl::AtMs(0),
            Unit::Seconds => Ttl::AfterMs((amount as u64).checked_mul(1000).ok_or_else(invalid)?),
            Unit::Millis => Ttl::AfterMs(amount as u64),
            Unit::AtSeconds => Ttl::AtMs(
                u64::try_from(amount)
                    .unwrap_or(0)
                    .checked_mul(1000)
                    .ok_or_else(invalid)?,
            ),
            Unit::AtMillis => Ttl::AtMs(u64::try_from(amount).unwrap_or(0)),
        };
        if let Ttl::AfterMs(ms) = ttl
            && ms > crate::datatype::MAX_TTL_MS
        {
            return Err(invalid());
        }
        Ok(Expire {
            key: args[0].clone(),
            ttl,
            condition,
        })
    }

    async fn apply(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let write = TypedWrite::Expire {
            ttl: self.ttl,
            condition: self.condition,
        };
        let written = ctx.write_typed(&self.key, write).await?;
        Ok(Reply::Integer(i64::from(written.applied)))
    }
}

/// The metadata of the expiry commands.
const fn expire_meta(name: &'static str, summary: &'static str) -> Meta {
    Meta::new(name, -3, Access::Write, Keys::ONE, "generic", summary).counted("expire")
}

/// `EXPIRE key seconds [NX | XX | GT | LT]`.
pub struct ExpireSeconds(Expire);

impl DataCommand for ExpireSeconds {
    const META: Meta = expire_meta("EXPIRE", "Sets the expiration time of a key in seconds.");

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Expire::parse_in(args, Unit::Seconds).map(ExpireSeconds)
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        self.0.apply(ctx).await
    }
}

/// `PEXPIRE key milliseconds [NX | XX | GT | LT]`.
pub struct PExpire(Expire);

impl DataCommand for PExpire {
    const META: Meta = expire_meta(
        "PEXPIRE",
        "Sets the expiration time of a key in milliseconds.",
    );

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Expire::parse_in(args, Unit::Millis).map(PExpire)
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        self.0.apply(ctx).await
    }
}

/// `EXPIREAT key unix-seconds [NX | XX | GT | LT]`.
pub struct ExpireAt(Expire);

impl DataCommand for ExpireAt {
    const META: Meta = expire_meta(
        "EXPIREAT",
        "Sets the expiration time of a key to a Unix timestamp.",
    );

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Expire::parse_in(args, Unit::AtSeconds).map(ExpireAt)
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        self.0.apply(ctx).await
    }
}

/// `PEXPIREAT key unix-milliseconds [NX | XX | GT | LT]`.
pub struct PExpireAt(Expire);

impl DataCommand for PExpireAt {
    const META: Meta = expire_meta(
        "PEXPIREAT",
        "Sets the expiration time of a key to a Unix milliseconds timestamp.",
    );

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Expire::parse_in(args, Unit::AtMillis).map(PExpireAt)
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        self.0.apply(ctx).await
    }
}

/// `PERSIST key`: 1 if the key had a time to live and now has none.
pub struct Persist {
    key: Bytes,
}

impl DataCommand for Persist {
    const META: Meta = Meta::new(
        "PERSIST",
        2,
        Access::Write,
        Keys::ONE,
        "generic",
        "Removes the expiration time of a key.",
    )
    .counted("expire");

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(Persist {
            key: args[0].clone(),
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let write = TypedWrite::Expire {
            ttl: Ttl::Clear,
            condition: ExpiryCondition::Always,
        };
        let written = ctx.write_typed(&self.key, write).await?;
        Ok(Reply::Integer(i64::from(written.applied)))
    }
}

/// How long a key has left: -2 missing, -1 without expiry, else milliseconds.
async fn left_ms(ctx: &Ctx<'_>, key: &Bytes) -> Result<i64, CmdError> {
    let read = ctx.typed(key).await?;
    Ok(match (typed::kind(&read), typed::expires_at(&read)) {
        (None, _) => -2,
        (Some(_), None) => -1,
        (Some(_), Some(at)) => at.saturating_sub(read.now_ms) as i64,
    })
}

/// `TTL key`: seconds left, rounded to the nearest (as Redis's).
pub struct TtlOf {
    key: Bytes,
}

impl DataCommand for TtlOf {
    const META: Meta = Meta::new(
        "TTL",
        2,
        Access::Read,
        Keys::ONE,
        "generic",
        "Returns the expiration time in seconds of a key.",
    )
    .counted("lww_get");

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(TtlOf {
            key: args[0].clone(),
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let ms = left_ms(ctx, &self.key).await?;
        Ok(Reply::Integer(if ms < 0 { ms } else { (ms + 500) / 1000 }))
    }
}

/// `PTTL key`: milliseconds left.
pub struct PTtlOf {
    key: Bytes,
}

impl DataCommand for PTtlOf {
    const META: Meta = Meta::new(
        "PTTL",
        2,
        Access::Read,
        Keys::ONE,
        "generic",
        "Returns the expiration time in milliseconds of a key.",
    )
    .counted("lww_get");

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(PTtlOf {
            key: args[0].clone(),
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        Ok(Reply::Integer(left_ms(ctx, &self.key).await?))
    }
}
