//! quorumkv's own counter commands, over the `/counter` key space (PN-counters, apart from
//! the strings that `INCR` counts in): `COUNTER.INCRBY` and `COUNTER.GET`.

use bytes::Bytes;

use crate::datatype::{Write, counter};
use crate::resp::command::{Access, Ctx, DataCommand, Keys, Meta, int_reply, integer};
use crate::resp::reply::{CmdError, Reply};
use crate::storage::Kind;

/// `COUNTER.INCRBY key delta`: the counter's value after.
pub struct CounterIncrBy {
    key: Bytes,
    delta: i64,
}

impl DataCommand for CounterIncrBy {
    const META: Meta = Meta::new(
        "COUNTER.INCRBY",
        3,
        Access::Write,
        Keys::ONE,
        "quorumkv",
        "Adds to a counter of the /counter key space.",
    )
    .counted("counter_add");

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(CounterIncrBy {
            key: args[0].clone(),
            delta: integer(&args[1])?,
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let write = Write::CounterAdd(counter::Add { delta: self.delta });
        let written = ctx.write(&self.key, write).await?;
        int_reply(written.counter.unwrap_or_default())
    }
}

/// `COUNTER.GET key`: a `/counter` value, 0 for a key never written.
pub struct CounterGet {
    key: Bytes,
}

impl DataCommand for CounterGet {
    const META: Meta = Meta::new(
        "COUNTER.GET",
        2,
        Access::Read,
        Keys::ONE,
        "quorumkv",
        "Returns a counter of the /counter key space.",
    )
    .counted("counter_get");

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
