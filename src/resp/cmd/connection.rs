//! The connection and server commands: `PING`, `ECHO`, `QUIT`, `SELECT`, `INFO`, `COMMAND`,
//! `CLIENT`, `CONFIG`, and quorumkv's own `QUORUM`.

use bytes::Bytes;

use crate::coordinator::Coordinator;
use crate::ops::Consistency;
use crate::resp::command::{Access, ConnectionCommand, Ctx, DataCommand, Keys, Meta, text};
use crate::resp::connection::ConnState;
use crate::resp::reply::{CmdError, Reply};

/// A command of this group with no keys that touches no data.
const fn meta(name: &'static str, arity: i32) -> Meta {
    Meta {
        name,
        arity,
        access: Access::None,
        keys: Keys::NONE,
        metric: None,
    }
}

/// `PING [message]`.
pub struct Ping(Option<Bytes>);

impl DataCommand for Ping {
    const META: Meta = meta("PING", -1);

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        match args {
            [] => Ok(Ping(None)),
            [message] => Ok(Ping(Some(message.clone()))),
            _ => Err(CmdError::Client(
                "ERR wrong number of arguments for 'ping' command".into(),
            )),
        }
    }

    async fn run(self, _: &Ctx<'_>) -> Result<Reply, CmdError> {
        Ok(match self.0 {
            Some(message) => Reply::Bulk(message),
            None => Reply::Simple("PONG"),
        })
    }
}

/// `ECHO message`.
pub struct Echo(Bytes);

impl DataCommand for Echo {
    const META: Meta = meta("ECHO", 2);

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        Ok(Echo(args[0].clone()))
    }

    async fn run(self, _: &Ctx<'_>) -> Result<Reply, CmdError> {
        Ok(Reply::Bulk(self.0))
    }
}

/// `QUIT`: answers `+OK` and closes the connection.
pub struct Quit;

impl ConnectionCommand for Quit {
    const META: Meta = meta("QUIT", -1);

    fn parse(_: &[Bytes]) -> Result<Self, CmdError> {
        Ok(Quit)
    }

    fn run(self, conn: &mut ConnState, _: &Coordinator) -> Result<Reply, CmdError> {
        conn.quit = true;
        Ok(Reply::Ok)
    }
}

/// `SELECT 0`: quorumkv has one database.
pub struct Select;

impl DataCommand for Select {
    const META: Meta = meta("SELECT", 2);

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        match text(&args[0])? {
            "0" => Ok(Select),
            _ => Err(CmdError::err(
                "DB index is out of range (quorumkv has one database, 0)",
            )),
        }
    }

    async fn run(self, _: &Ctx<'_>) -> Result<Reply, CmdError> {
        Ok(Reply::Ok)
    }
}

/// `INFO [section]`: the server's name and version, this node, its keys and hints.
pub struct Info;

impl DataCommand for Info {
    const META: Meta = meta("INFO", -1);

    fn parse(_: &[Bytes]) -> Result<Self, CmdError> {
        Ok(Info)
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let c = ctx.coordinator;
        let (keys, hints) = (c.store().len(), c.pending_hints().0);
        Ok(Reply::Bulk(Bytes::from(format!(
            "# Server\r\nredis_version:7.0.0\r\nquorumkv_version:{}\r\nredis_mode:standalone\r\n\
             node:{}\r\n\r\n# Keyspace\r\ndb0:keys={keys},expires=0\r\nhints_pending:{hints}\r\n",
            env!("CARGO_PKG_VERSION"),
            c.me()
        ))))
    }
}

/// `COMMAND [COUNT]`: the number of commands; the command list itself is empty.
pub struct Command {
    count: bool,
}

impl DataCommand for Command {
    const META: Meta = meta("COMMAND", -1);

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        let count = match args.first() {
            Some(sub) => text(sub)?.eq_ignore_ascii_case("COUNT"),
            None => false,
        };
        Ok(Command { count })
    }

    async fn run(self, _: &Ctx<'_>) -> Result<Reply, CmdError> {
        Ok(if self.count {
            Reply::Integer(super::TABLE.len() as i64)
        } else {
            Reply::Array(Vec::new())
        })
    }
}

/// `CLIENT ...`: client libraries send these on connect; nothing to configure here.
pub struct Client;

impl DataCommand for Client {
    const META: Meta = meta("CLIENT", -1);

    fn parse(_: &[Bytes]) -> Result<Self, CmdError> {
        Ok(Client)
    }

    async fn run(self, _: &Ctx<'_>) -> Result<Reply, CmdError> {
        Ok(Reply::Ok)
    }
}

/// `CONFIG ...`: no parameters to show.
pub struct Config;

impl DataCommand for Config {
    const META: Meta = meta("CONFIG", -1);

    fn parse(_: &[Bytes]) -> Result<Self, CmdError> {
        Ok(Config)
    }

    async fn run(self, _: &Ctx<'_>) -> Result<Reply, CmdError> {
        Ok(Reply::Array(Vec::new()))
    }
}

/// `QUORUM n w r`: N, W and R for every later command of this connection.
pub struct Quorum(Consistency);

impl ConnectionCommand for Quorum {
    const META: Meta = meta("QUORUM", 4);

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        let mut c = Consistency::default();
        for (name, value) in ["n", "w", "r"].iter().zip(args) {
            c.set(name, text(value)?)?;
        }
        Ok(Quorum(c))
    }

    fn run(self, conn: &mut ConnState, coordinator: &Coordinator) -> Result<Reply, CmdError> {
        // Checked against the cluster now, so a bad setting fails here, not on each command.
        coordinator.plan(&self.0)?;
        conn.consistency = Consistency {
            timeout_ms: conn.consistency.timeout_ms,
            sloppy: conn.consistency.sloppy,
            ..self.0
        };
        Ok(Reply::Ok)
    }
}
