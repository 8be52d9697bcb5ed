//! Counter commands: `INCR`, `INCRBY`, `DECR`, `DECRBY` and `COUNTER.GET`, over the
//! PN-counters of `/counter`.

use bytes::Bytes;

use crate::datatype::{Write, counter};
use crate::resp::command::{Access, Ctx, DataCommand, Keys, Meta, int_reply, integer};
use crate::resp::reply::{CmdError, Reply};
use crate::storage::Kind;

/// Adds `delta` to the counter `key` and answers its value after.
async fn add(ctx: &Ctx<'_>, key: &Bytes, delta: i64) -> Result<Reply, CmdError> {
    let written = ctx
        .write(key, Write::CounterAdd(counter::Add { delta }))
        .await?;
    int_reply(written.counter.unwrap_or_default())
}

/// The metadata of the increments.
const fn add_meta(name: &'static str, arity: i32) -> Meta {
    Meta {
        name,
        arity,
        access: Access::Write,
        keys: Keys::ONE,
        metric: Some("counter_add"),
    }
}

/// The negated amount of a decrement.
fn negated(by: i64) -> Result<i64, CmdError> {
    by.checked_neg()
        .ok_or_else(|| CmdError::err("decrement would overflow"))
}

/// `INCR key`.
pub struct Incr {
    key: Bytes,
}

impl DataCommand for Incr {
    const META: Meta = add_meta("INCR", 2);

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(Incr {
            key: args[0].clone(),
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        add(ctx, &self.key, 1).await
    }
}

/// `DECR key`.
pub struct Decr {
    key: Bytes,
}

impl DataCommand for Decr {
    const META: Meta = add_meta("DECR", 2);

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(Decr {
            key: args[0].clone(),
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        add(ctx, &self.key, -1).await
    }
}

/// `INCRBY key increment`.
pub struct IncrBy {
    key: Bytes,
    by: i64,
}

impl DataCommand for IncrBy {
    const META: Meta = add_meta("INCRBY", 3);

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(IncrBy {
            key: args[0].clone(),
            by: integer(&args[1])?,
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        add(ctx, &self.key, self.by).await
    }
}

/// `DECRBY key decrement`.
pub struct DecrBy {
    key: Bytes,
    by: i64,
}

impl DataCommand for DecrBy {
    const META: Meta = add_meta("DECRBY", 3);

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(DecrBy {
            key: args[0].clone(),
            by: negated(integer(&args[1])?)?,
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        add(ctx, &self.key, self.by).await
    }
}

/// `COUNTER.GET key`: a `/counter` value, 0 for a key never written.
pub struct CounterGet {
    key: Bytes,
}

impl DataCommand for CounterGet {
    const META: Meta = Meta {
        name: "COUNTER.GET",
        arity: 2,
        access: Access::Read,
        keys: Keys::ONE,
        metric: Some("counter_get"),
    };

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(CounterGet {
            key: args[0].clone(),
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let read = ctx.read(Kind::Counter, &self.key).await?;
        int_reply(counter::value(&read))
    }
}
