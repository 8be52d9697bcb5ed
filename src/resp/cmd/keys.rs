//! Key commands: `DEL`, `EXISTS`, `EXPIRE`, `PEXPIRE`, `TTL`, `PTTL`, on strings.

use bytes::Bytes;

use crate::datatype::{Write, lww};
use crate::resp::command::{Access, Ctx, DataCommand, Keys, Meta, integer};
use crate::resp::reply::{CmdError, Reply};
use crate::storage::Kind;

/// `DEL key [key ...]`: the number of keys that existed.
pub struct Del {
    keys: Vec<Bytes>,
}

impl DataCommand for Del {
    const META: Meta = Meta {
        name: "DEL",
        arity: -2,
        access: Access::Write,
        keys: Keys::ALL,
        metric: Some("lww_delete"),
    };

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(Del {
            keys: args.to_vec(),
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let mut removed = 0;
        for key in &self.keys {
            let read = ctx.read(Kind::Lww, key).await?;
            if lww::live(&read).is_some() {
                ctx.write(key, Write::LwwDelete(lww::Delete)).await?;
                removed += 1;
            }
        }
        Ok(Reply::Integer(removed))
    }
}

/// `EXISTS key [key ...]`: how many of the keys exist (a key named twice counts twice).
pub struct Exists {
    keys: Vec<Bytes>,
}

impl DataCommand for Exists {
    const META: Meta = Meta {
        name: "EXISTS",
        arity: -2,
        access: Access::Read,
        keys: Keys::ALL,
        metric: Some("lww_get"),
    };

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(Exists {
            keys: args.to_vec(),
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let mut found = 0;
        for key in &self.keys {
            let read = ctx.read(Kind::Lww, key).await?;
            found += i64::from(lww::live(&read).is_some());
        }
        Ok(Reply::Integer(found))
    }
}

/// A new time to live for an existing key, in milliseconds; a non-positive one deletes the
/// key, as in Redis.
async fn expire(ctx: &Ctx<'_>, key: &Bytes, ttl_ms: i64) -> Result<Reply, CmdError> {
    let read = ctx.read(Kind::Lww, key).await?;
    let Some((value, _)) = lww::live(&read) else {
        return Ok(Reply::Integer(0));
    };
    let write = if ttl_ms <= 0 {
        Write::LwwDelete(lww::Delete)
    } else {
        Write::LwwPut(lww::Put {
            value,
            ttl_ms: Some(ttl_ms as u64),
        })
    };
    ctx.write(key, write).await?;
    Ok(Reply::Integer(1))
}

/// The metadata of `EXPIRE` and `PEXPIRE`.
const fn expire_meta(name: &'static str) -> Meta {
    Meta {
        name,
        arity: 3,
        access: Access::Write,
        keys: Keys::ONE,
        metric: Some("lww_put"),
    }
}

/// `EXPIRE key seconds`.
pub struct Expire {
    key: Bytes,
    seconds: i64,
}

impl DataCommand for Expire {
    const META: Meta = expire_meta("EXPIRE");

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(Expire {
            key: args[0].clone(),
            seconds: integer(&args[1])?,
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        expire(ctx, &self.key, self.seconds.saturating_mul(1000)).await
    }
}

/// `PEXPIRE key milliseconds`.
pub struct PExpire {
    key: Bytes,
    ms: i64,
}

impl DataCommand for PExpire {
    const META: Meta = expire_meta("PEXPIRE");

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(PExpire {
            key: args[0].clone(),
            ms: integer(&args[1])?,
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        expire(ctx, &self.key, self.ms).await
    }
}

/// The metadata of `TTL` and `PTTL`.
const fn ttl_meta(name: &'static str) -> Meta {
    Meta {
        name,
        arity: 2,
        access: Access::Read,
        keys: Keys::ONE,
        metric: Some("lww_get"),
    }
}

/// What a key's time to live is.
enum Left {
    /// No such key.
    Missing,
    /// The key has no expiry.
    Forever,
    /// Milliseconds left.
    Ms(i64),
}

/// How long `key` has left to live.
async fn left(ctx: &Ctx<'_>, key: &Bytes) -> Result<Left, CmdError> {
    let read = ctx.read(Kind::Lww, key).await?;
    Ok(match lww::live(&read) {
        None => Left::Missing,
        Some((_, None)) => Left::Forever,
        Some((_, Some(expiry))) => Left::Ms(expiry.saturating_sub(read.now_ms) as i64),
    })
}

/// `TTL key`: seconds left, rounded up.
pub struct Ttl {
    key: Bytes,
}

impl DataCommand for Ttl {
    const META: Meta = ttl_meta("TTL");

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(Ttl {
            key: args[0].clone(),
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        Ok(Reply::Integer(match left(ctx, &self.key).await? {
            Left::Missing => -2,
            Left::Forever => -1,
            Left::Ms(ms) => (ms + 999) / 1000,
        }))
    }
}

/// `PTTL key`: milliseconds left.
pub struct PTtl {
    key: Bytes,
}

impl DataCommand for PTtl {
    const META: Meta = ttl_meta("PTTL");

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(PTtl {
            key: args[0].clone(),
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        Ok(Reply::Integer(match left(ctx, &self.key).await? {
            Left::Missing => -2,
            Left::Forever => -1,
            Left::Ms(ms) => ms,
        }))
    }
}
