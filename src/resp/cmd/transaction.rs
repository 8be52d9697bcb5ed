//! Transactions: `MULTI` queues the commands that follow, `EXEC` runs them in order and
//! answers them in one array, `DISCARD` drops them. Not isolated: another client's commands
//! may run between the queued ones, and there is no optimistic locking (`WATCH` is an error).

use bytes::Bytes;

use crate::resp::command::{Access, ConnectionCommand, Keys, Meta};
use crate::resp::connection::{ConnState, Transaction};
use crate::resp::reply::{CmdError, Reply};
use crate::resp::server::Server;

/// A transaction command.
const fn meta(name: &'static str, arity: i32, summary: &'static str) -> Meta {
    Meta::new(
        name,
        arity,
        Access::None,
        Keys::NONE,
        "transactions",
        summary,
    )
}

/// `MULTI`.
pub struct Multi;

impl ConnectionCommand for Multi {
    const META: Meta = meta("MULTI", 1, "Starts a transaction.");

    fn parse(_: &[Bytes]) -> Result<Self, CmdError> {
        Ok(Multi)
    }

    fn run(self, conn: &mut ConnState, _: &Server) -> Result<Reply, CmdError> {
        if conn.multi.is_some() {
            return Err(CmdError::err("MULTI calls can not be nested"));
        }
        conn.multi = Some(Transaction::default());
        Ok(Reply::Ok)
    }
}

/// `EXEC`: run by the connection itself (it needs to run other commands); reached here only
/// without `MULTI`.
pub struct Exec;

impl ConnectionCommand for Exec {
    const META: Meta = meta("EXEC", 1, "Executes all commands in a transaction.");

    fn parse(_: &[Bytes]) -> Result<Self, CmdError> {
        Ok(Exec)
    }

    fn run(self, _: &mut ConnState, _: &Server) -> Result<Reply, CmdError> {
        Err(CmdError::err("EXEC without MULTI"))
    }
}

/// `DISCARD`.
pub struct Discard;

impl ConnectionCommand for Discard {
    const META: Meta = meta("DISCARD", 1, "Discards a transaction.");

    fn parse(_: &[Bytes]) -> Result<Self, CmdError> {
        Ok(Discard)
    }

    fn run(self, conn: &mut ConnState, _: &Server) -> Result<Reply, CmdError> {
        match conn.multi.take() {
            Some(_) => Ok(Reply::Ok),
            None => Err(CmdError::err("DISCARD without MULTI")),
        }
    }
}

/// `WATCH`: refused, with the reason.
pub struct Watch;

impl ConnectionCommand for Watch {
    const META: Meta = meta("WATCH", -2, "Monitors changes to keys (not available).");

    fn parse(_: &[Bytes]) -> Result<Self, CmdError> {
        Ok(Watch)
    }

    fn run(self, conn: &mut ConnState, _: &Server) -> Result<Reply, CmdError> {
        if conn.multi.is_some() {
            return Err(CmdError::err("WATCH inside MULTI is not allowed"));
        }
        Err(CmdError::err(
            "WATCH is not available: quorumkv has no optimistic locking (transactions are \
             queued and run in order, not isolated from other clients)",
        ))
    }
}

/// `UNWATCH`: nothing is watched, so nothing to forget.
pub struct Unwatch;

impl ConnectionCommand for Unwatch {
    const META: Meta = meta("UNWATCH", 1, "Forgets about watched keys.");

    fn parse(_: &[Bytes]) -> Result<Self, CmdError> {
        Ok(Unwatch)
    }

    fn run(self, _: &mut ConnState, _: &Server) -> Result<Reply, CmdError> {
        Ok(Reply::Ok)
    }
}
