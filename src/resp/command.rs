//! The command table's mechanics: what every command declares about itself ([`Meta`]), the
//! two kinds of command (those that work on the cluster, [`DataCommand`], and those that
//! change the connection, [`ConnectionCommand`]), and the one place a command is looked up,
//! checked and run ([`Spec::run`]). The table itself is [`super::cmd::TABLE`].
//!
//! A command is parsed into a typed value before it runs: its arguments are checked once, up
//! front, and its `run` works with names, not positions.

use std::future::Future;
use std::pin::Pin;
use std::sync::LazyLock;

use bytes::Bytes;

use super::connection::ConnState;
use super::reply::{CmdError, Reply};
use super::server::Server;
use crate::coordinator::Coordinator;
use crate::datatype::Write;
use crate::datatype::typed::TypedWrite;
use crate::ops::{Consistency, ReadResult, Written};
use crate::storage::Kind;

/// A future a command's run returns.
pub type CmdFuture<'a> = Pin<Box<dyn Future<Output = Result<Reply, CmdError>> + Send + 'a>>;

/// What kind of access a command needs: for scheduling, and for the roles of client users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Touches no data (`PING`, `INFO`).
    None,
    /// Reads data.
    Read,
    /// Writes data.
    Write,
    /// Administers the node or the cluster (`FLUSHALL`, `CONFIG`).
    Admin,
}

impl Access {
    /// The least role of a client user that may run a command of this kind: any user may
    /// run the commands that touch no data.
    pub fn role(self) -> crate::auth::Role {
        use crate::auth::Role;
        match self {
            Access::None | Access::Read => Role::Read,
            Access::Write => Role::Write,
            Access::Admin => Role::Admin,
        }
    }

    /// The flag `COMMAND INFO` shows for it.
    pub fn flag(self) -> &'static str {
        match self {
            Access::None => "fast",
            Access::Read => "readonly",
            Access::Write => "write",
            Access::Admin => "admin",
        }
    }
}

/// Where a command's keys are among its arguments (Redis's key specification): the first at
/// `first` (the command's name is 0), the last at `last` (negative: counted from the end,
/// `-1` the last argument), every `step`-th in between. `first == 0`: no keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keys {
    /// Position of the first key; 0 for none.
    pub first: usize,
    /// Position of the last key; negative counts from the end.
    pub last: isize,
    /// Distance between keys.
    pub step: usize,
}

impl Keys {
    /// No keys.
    pub const NONE: Keys = Keys {
        first: 0,
        last: 0,
        step: 0,
    };
    /// One key, the first argument.
    pub const ONE: Keys = Keys {
        first: 1,
        last: 1,
        step: 1,
    };
    /// Every argument is a key.
    pub const ALL: Keys = Keys {
        first: 1,
        last: -1,
        step: 1,
    };
    /// Every other argument from the first is a key (`MSET k v k v`).
    pub const PAIRS: Keys = Keys {
        first: 1,
        last: -1,
        step: 2,
    };

    /// Whether the command may name more than one key.
    pub fn many(&self) -> bool {
        self.first != 0 && (self.last < 0 || self.last as usize > self.first)
    }
}

/// What a command declares about itself.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    /// Its name, in upper case.
    pub name: &'static str,
    /// Redis's arity: the number of arguments with the name, exactly when positive, at least
    /// its absolute value when negative.
    pub arity: i32,
    /// The data access it needs.
    pub access: Access,
    /// Where its keys are.
    pub keys: Keys,
    /// The operation it counts as in the request metrics (the HTTP endpoints' names); `None`
    /// for commands that are not counted.
    pub metric: Option<&'static str>,
    /// What it does, in one line (`COMMAND DOCS`).
    pub summary: &'static str,
    /// Its group (`COMMAND DOCS`): `string`, `set`, `hash`, `generic`, `connection`, ...
    pub group: &'static str,
}

impl Meta {
    /// A command's declaration, not counted in the request metrics.
    pub const fn new(
        name: &'static str,
        arity: i32,
        access: Access,
        keys: Keys,
        group: &'static str,
        summary: &'static str,
    ) -> Meta {
        Meta {
            name,
            arity,
            access,
            keys,
            metric: None,
            summary,
            group,
        }
    }

    /// The same, counted in the request metrics as operation `metric`.
    pub const fn counted(self, metric: &'static str) -> Meta {
        Meta {
            metric: Some(metric),
            ..self
        }
    }

    /// Whether `count` arguments (the name included) fit the arity.
    fn fits(&self, count: usize) -> bool {
        let arity = self.arity.unsigned_abs() as usize;
        if self.arity < 0 {
            count >= arity
        } else {
            count == arity
        }
    }
}

/// A command that works on the cluster (or only answers) and leaves the connection as it is:
/// commands of this kind on different keys may run side by side in a pipeline.
pub trait DataCommand: Sized + Send + 'static {
    /// What the command declares.
    const META: Meta;
    /// Parses the arguments after the name (their number already fits the arity).
    fn parse(args: &[Bytes]) -> Result<Self, CmdError>;
    /// Runs the command.
    fn run(self, ctx: &Ctx<'_>) -> impl Future<Output = Result<Reply, CmdError>> + Send;
}

/// A command that reads or changes the connection's state (`QUORUM`, `QUIT`): it runs alone,
/// after everything before it and before everything after it.
pub trait ConnectionCommand: Sized + Send + 'static {
    /// What the command declares.
    const META: Meta;
    /// Parses the arguments after the name (their number already fits the arity).
    fn parse(args: &[Bytes]) -> Result<Self, CmdError>;
    /// Runs the command on the connection.
    fn run(self, conn: &mut ConnState, server: &Server) -> Result<Reply, CmdError>;
}

/// How a command runs.
#[derive(Clone, Copy)]
pub enum Run {
    /// A [`DataCommand`].
    Data(for<'a> fn(&'a Ctx<'a>, &'a [Bytes]) -> CmdFuture<'a>),
    /// A [`ConnectionCommand`].
    Connection(fn(&mut ConnState, &Server, &[Bytes]) -> Result<Reply, CmdError>),
}

/// One entry of the command table.
#[derive(Clone, Copy)]
pub struct Spec {
    /// What the command declares.
    pub meta: Meta,
    /// How it runs.
    pub run: Run,
}

/// The table entry of a [`DataCommand`].
pub const fn data<C: DataCommand>() -> Spec {
    Spec {
        meta: C::META,
        run: Run::Data(run_data::<C>),
    }
}

/// The table entry of a [`ConnectionCommand`].
pub const fn connection<C: ConnectionCommand>() -> Spec {
    Spec {
        meta: C::META,
        run: Run::Connection(run_connection::<C>),
    }
}

fn run_data<'a, C: DataCommand>(ctx: &'a Ctx<'a>, args: &'a [Bytes]) -> CmdFuture<'a> {
    Box::pin(async move { C::parse(args)?.run(ctx).await })
}

fn run_connection<C: ConnectionCommand>(
    conn: &mut ConnState,
    server: &Server,
    args: &[Bytes],
) -> Result<Reply, CmdError> {
    C::parse(args)?.run(conn, server)
}

/// The table by name.
static BY_NAME: LazyLock<foldhash::HashMap<&'static str, &'static Spec>> = LazyLock::new(|| {
    super::cmd::TABLE
        .iter()
        .map(|spec| (spec.meta.name, spec))
        .collect()
});

/// Room for a command name in upper case: longer names are no command of ours.
type NameBuf = [u8; 24];

/// The table entry of a command's name, in any case.
pub fn lookup(name: &[u8]) -> Option<&'static Spec> {
    let mut buf = NameBuf::default();
    let upper = buf.get_mut(..name.len())?;
    upper.copy_from_slice(name);
    upper.make_ascii_uppercase();
    BY_NAME.get(std::str::from_utf8(upper).ok()?).copied()
}

/// What a command of a pipeline touches, for running pipelined commands side by side.
#[derive(Debug, PartialEq, Eq)]
pub enum Touch {
    /// The connection itself, or several keys: runs alone.
    Session,
    /// One key.
    Key(Bytes),
    /// Nothing that another command could change (an unknown command).
    Nothing,
}

impl Spec {
    /// What this command, called with `args` (its name first), touches.
    pub fn touches(&self, args: &[Bytes]) -> Touch {
        match self.run {
            Run::Connection(_) => Touch::Session,
            // Several keys, or the whole keyspace (`SCAN`, `DBSIZE`, `FLUSHALL`): what comes
            // before must be done, and what comes after must wait.
            Run::Data(_) if self.meta.keys.many() || self.meta.keys.first == 0 => Touch::Session,
            Run::Data(_) => match args.get(self.meta.keys.first) {
                Some(key) => Touch::Key(key.clone()),
                None => Touch::Nothing,
            },
        }
    }

    /// The error for a wrong number of arguments, if `args` (the name first) has one.
    pub fn check_arity(&self, args: &[Bytes]) -> Result<(), CmdError> {
        if self.meta.fits(args.len()) {
            return Ok(());
        }
        Err(CmdError::Client(format!(
            "ERR wrong number of arguments for '{}' command",
            self.meta.name.to_lowercase()
        )))
    }
}

/// What a data command runs with: the front end's shared state, and the connection's
/// consistency settings.
pub struct Ctx<'a> {
    /// The front end's shared state.
    pub server: &'a Server,
    /// This node's coordinator.
    pub coordinator: &'a Coordinator,
    /// The connection's N, W and R (`QUORUM`), or the cluster's defaults.
    pub consistency: &'a Consistency,
}

impl Ctx<'_> {
    /// Reads a key of the typed namespace at R, counting the hit or miss.
    pub async fn typed(&self, key: &Bytes) -> Result<ReadResult, CmdError> {
        let read = self.read(Kind::Typed, key).await?;
        let hit = crate::datatype::typed::kind(&read).is_some();
        self.server.stats.lookup(hit);
        Ok(read)
    }

    /// Reads a key at R.
    pub async fn read(&self, kind: Kind, key: &Bytes) -> Result<ReadResult, CmdError> {
        Ok(self.coordinator.read(kind, key, self.consistency).await?)
    }

    /// Writes a key at W.
    pub async fn write(&self, key: &Bytes, write: Write) -> Result<Written, CmdError> {
        Ok(self.coordinator.write(key, write, self.consistency).await?)
    }

    /// Writes a key of the typed namespace at W.
    pub async fn write_typed(&self, key: &Bytes, write: TypedWrite) -> Result<Written, CmdError> {
        self.write(key, Write::Typed(write)).await
    }
}

/// An option or number argument as text (keys, values and members are bytes).
pub fn text(arg: &Bytes) -> Result<&str, CmdError> {
    std::str::from_utf8(arg).map_err(|_| CmdError::syntax())
}

/// An argument as a signed 64-bit integer, as Redis reads one (no sign or spaces around it).
pub fn integer(arg: &Bytes) -> Result<i64, CmdError> {
    std::str::from_utf8(arg)
        .ok()
        .and_then(crate::crdt::typed::parse_integer)
        .ok_or_else(CmdError::not_an_integer)
}

/// An argument as a finite floating-point number, as Redis reads one.
pub fn float(arg: &Bytes) -> Result<f64, CmdError> {
    std::str::from_utf8(arg)
        .ok()
        .filter(|t| !t.is_empty() && t.trim() == *t)
        .and_then(|t| t.parse::<f64>().ok())
        .filter(|f| !f.is_nan())
        .ok_or_else(|| CmdError::err("value is not a valid float"))
}

/// Whether `arg` is the option `name`, in any case.
pub fn is(arg: &Bytes, name: &str) -> bool {
    arg.eq_ignore_ascii_case(name.as_bytes())
}

/// A counter's value as an integer reply.
pub fn int_reply(v: i128) -> Result<Reply, CmdError> {
    i64::try_from(v)
        .map(Reply::Integer)
        .map_err(|_| CmdError::err(format!("the counter is {v}, beyond a 64-bit reply")))
}
