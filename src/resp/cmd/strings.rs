//! String commands: `GET`, `SET`, `MGET`, over the last-write-wins registers of `/lww`.

use bytes::Bytes;

use crate::datatype::{Write, lww};
use crate::resp::command::{Access, Ctx, DataCommand, Keys, Meta, integer, text};
use crate::resp::reply::{CmdError, Reply};
use crate::storage::Kind;

/// `GET key`.
pub struct Get {
    key: Bytes,
}

impl DataCommand for Get {
    const META: Meta = Meta {
        name: "GET",
        arity: 2,
        access: Access::Read,
        keys: Keys::ONE,
        metric: Some("lww_get"),
    };

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(Get {
            key: args[0].clone(),
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let read = ctx.read(Kind::Lww, &self.key).await?;
        Ok(lww::live(&read).map_or(Reply::Nil, |(v, _)| Reply::Bulk(v)))
    }
}

/// `MGET key [key ...]`.
pub struct MGet {
    keys: Vec<Bytes>,
}

impl DataCommand for MGet {
    const META: Meta = Meta {
        name: "MGET",
        arity: -2,
        access: Access::Read,
        keys: Keys::ALL,
        metric: Some("lww_get"),
    };

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(MGet {
            keys: args.to_vec(),
        })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let mut out = Vec::with_capacity(self.keys.len());
        for key in &self.keys {
            let read = ctx.read(Kind::Lww, key).await?;
            out.push(lww::live(&read).map_or(Reply::Nil, |(v, _)| Reply::Bulk(v)));
        }
        Ok(Reply::Array(out))
    }
}

/// `SET key value [EX s | PX ms] [NX | XX]`.
pub struct Set {
    key: Bytes,
    value: Bytes,
    ttl_ms: Option<u64>,
    /// `NX` (`Some(true)`) or `XX` (`Some(false)`).
    only_if_absent: Option<bool>,
}

impl DataCommand for Set {
    const META: Meta = Meta {
        name: "SET",
        arity: -3,
        access: Access::Write,
        keys: Keys::ONE,
        metric: Some("lww_put"),
    };

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        let mut set = Set {
            key: args[0].clone(),
            value: args[1].clone(),
            ttl_ms: None,
            only_if_absent: None,
        };
        let mut i = 2;
        while i < args.len() {
            let option = text(&args[i])?.to_ascii_uppercase();
            match option.as_str() {
                "EX" | "PX" if set.ttl_ms.is_none() => {
                    let amount = args.get(i + 1).ok_or_else(CmdError::syntax)?;
                    let amount = integer(amount)?;
                    if amount <= 0 {
                        return Err(CmdError::err("invalid expire time in 'set' command"));
                    }
                    let ms = if option == "EX" {
                        amount.saturating_mul(1000)
                    } else {
                        amount
                    };
                    set.ttl_ms = Some(ms as u64);
                    i += 2;
                }
                "NX" | "XX" if set.only_if_absent.is_none() => {
                    set.only_if_absent = Some(option == "NX");
                    i += 1;
                }
                _ => return Err(CmdError::syntax()),
            }
        }
        Ok(set)
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        if let Some(only_if_absent) = self.only_if_absent {
            // Read at R, then write: a check, not a lock (two racing NX can both succeed).
            let read = ctx.read(Kind::Lww, &self.key).await?;
            if lww::live(&read).is_some() == only_if_absent {
                return Ok(Reply::Nil);
            }
        }
        let put = lww::Put {
            value: self.value,
            ttl_ms: self.ttl_ms,
        };
        ctx.write(&self.key, Write::LwwPut(put)).await?;
        Ok(Reply::Ok)
    }
}
