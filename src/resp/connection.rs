//! One client connection: read what the client sent, run every complete command in order
//! (pipelined commands on different keys side by side), and answer in one write; queue the
//! commands of a `MULTI` block and run them at `EXEC`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::cmd::unknown_command;
use super::command::{Ctx, Run, Spec, Touch, lookup};
use super::parse::{FRAME_SLACK, Next, ParseError, Skipping, next_command};
use super::reply::{CmdError, Protocol, Reply, encode};
use super::server::{Server, Stats};
use crate::auth::{Role, Users};
use crate::ops::Consistency;

/// A `MULTI` block being queued.
#[derive(Debug, Default)]
pub struct Transaction {
    /// The commands queued, in order.
    pub queued: Vec<Vec<Bytes>>,
    /// A command could not be queued (unknown, wrong arity): `EXEC` refuses the block.
    pub failed: bool,
}

/// What a connection remembers between commands.
#[derive(Debug, Default)]
pub struct ConnState {
    /// The connection's id (`CLIENT ID`).
    pub id: u64,
    /// Where the client connects from.
    pub peer: Option<SocketAddr>,
    /// N, W and R for every later command (`QUORUM`); the cluster's defaults where unset.
    pub consistency: Consistency,
    /// The protocol the replies are written in (`HELLO`).
    pub protocol: Protocol,
    /// The name the client gave itself (`CLIENT SETNAME`, `HELLO ... SETNAME`).
    pub name: Option<Bytes>,
    /// The library the client says it is (`CLIENT SETINFO LIB-NAME`, `LIB-VER`).
    pub lib: (Option<Bytes>, Option<Bytes>),
    /// The `MULTI` block being queued, if any.
    pub multi: Option<Transaction>,
    /// The client asked to close the connection (`QUIT`).
    pub quit: bool,
    /// Who the connection is authenticated as; `None` until `AUTH` when the node has users.
    pub login: Option<Login>,
}

/// The user a connection is authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    /// The user's name.
    pub name: String,
    /// What the user may do.
    pub role: Role,
}

impl Login {
    /// A new connection's login: Redis's passwordless `default` user, allowed everything,
    /// when the node has no users; nobody otherwise.
    pub fn initial(users: &Users) -> Option<Login> {
        users.is_open().then(|| Login {
            name: "default".into(),
            role: Role::Admin,
        })
    }
}

/// Commands a client may send before it authenticates, as Redis's no-auth commands.
const BEFORE_AUTH: [&str; 4] = ["AUTH", "HELLO", "QUIT", "RESET"];

/// Whether the connection may run `spec`: Redis's `NOAUTH` before authentication, `NOPERM`
/// for a command beyond the user's role.
pub fn permit(login: &Option<Login>, spec: &Spec) -> Result<(), CmdError> {
    match login {
        None if BEFORE_AUTH.contains(&spec.meta.name) => Ok(()),
        None => Err(CmdError::Client("NOAUTH Authentication required.".into())),
        Some(login) if login.role.allows(spec.meta.access.role()) => Ok(()),
        Some(login) => Err(CmdError::Client(format!(
            "NOPERM User {} has no permissions to run the '{}' command",
            login.name,
            spec.meta.name.to_ascii_lowercase()
        ))),
    }
}

/// One connection.
pub struct Session {
    server: Arc<Server>,
    state: ConnState,
}

/// Why a connection ends.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Reading or writing the socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The client sent something that is not RESP, or too large to take.
    #[error("protocol: {0}")]
    Protocol(String),
}

/// Most commands of a pipeline parsed ahead of their replies being written.
const MAX_QUEUED: usize = 1024;

/// Most commands of a pipeline run side by side.
const MAX_GROUP: usize = 64;

/// Replies are written once they reach this many bytes, before the rest of the pipeline runs.
const FLUSH_AT: usize = 1 << 20;

/// A client whose replies have waited this long to be taken (it sends without reading) is
/// closed, as Redis closes a client past its output buffer limit.
const STALLED_WRITE: std::time::Duration = std::time::Duration::from_secs(60);

/// Writes `replies`; a client that takes none of them for [`STALLED_WRITE`] is closed (a
/// client that reads slowly but steadily is not: the wait starts again at every write that
/// goes through).
async fn write_replies<S>(
    stream: &mut S,
    replies: &[u8],
    peer: Option<SocketAddr>,
) -> Result<(), SessionError>
where
    S: AsyncWrite + Unpin,
{
    let mut sent = 0;
    while sent < replies.len() {
        match tokio::time::timeout(STALLED_WRITE, stream.write(&replies[sent..])).await {
            Ok(Ok(0)) => {
                return Err(SessionError::Io(std::io::Error::new(
                    std::io::ErrorKind::WriteZero,
                    "the client closed its side",
                )));
            }
            Ok(Ok(n)) => sent += n,
            Ok(Err(e)) => return Err(SessionError::Io(e)),
            Err(_) => {
                tracing::warn!(
                    client = ?peer,
                    waiting = replies.len() - sent,
                    "closing a client that has not read its replies for {} s",
                    STALLED_WRITE.as_secs()
                );
                return Err(SessionError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the client does not read its replies",
                )));
            }
        }
    }
    stream.flush().await?;
    Ok(())
}

/// Commands that run even inside `MULTI` rather than being queued.
const NOT_QUEUED: [&str; 6] = ["EXEC", "DISCARD", "MULTI", "WATCH", "QUIT", "RESET"];

impl Session {
    /// A new connection from `peer` served by `server`.
    pub fn new(server: Arc<Server>, peer: Option<SocketAddr>) -> Self {
        let id = server.client_id();
        let login = Login::initial(&server.users);
        Session {
            server,
            state: ConnState {
                id,
                peer,
                login,
                ..ConnState::default()
            },
        }
    }

    /// Serves the connection until the client closes it, quits, or sends what is not RESP.
    pub async fn run<S>(mut self, mut stream: S) -> Result<(), SessionError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let stats = &self.server.stats;
        Stats::bump(&stats.total_connections_received);
        stats.connected_clients.fetch_add(1, Ordering::Relaxed);
        let result = self.serve(&mut stream).await;
        self.server
            .stats
            .connected_clients
            .fetch_sub(1, Ordering::Relaxed);
        result
    }

    async fn serve<S>(&mut self, stream: &mut S) -> Result<(), SessionError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let max_value = self.server.coordinator.defaults().max_value_bytes;
        let max_frame = max_value + FRAME_SLACK;
        let mut input = BytesMut::with_capacity(16 * 1024);
        let mut output = BytesMut::with_capacity(16 * 1024);
        // Kept from one read to the next: no allocation per request for the list.
        let mut commands: VecDeque<Command> = VecDeque::new();
        // The rest of a command refused for an oversized argument, still to be dropped.
        let mut skipping: Option<Skipping> = None;
        let mut malformed = None;
        loop {
            // Take the complete commands already here (up to a bound), run them, answer in
            // one write; what is left waits for that write, so a client that does not read
            // its replies stops being read from (TCP pushes back) instead of being buffered.
            while malformed.is_none() && commands.len() < MAX_QUEUED {
                if let Some(skip) = &mut skipping {
                    match skip.advance(&mut input) {
                        Ok(true) => skipping = None,
                        Ok(false) => break,
                        Err(e) => {
                            malformed = Some(e);
                            break;
                        }
                    }
                }
                match next_command(&mut input, max_frame, max_value) {
                    Ok(Some(Next::Command(args))) => commands.push_back((find(&args), args)),
                    Ok(Some(Next::Oversized { len, max, skip })) => {
                        // Answered in its place in the pipeline; what follows goes on.
                        let refused = CmdError::err(format!(
                            "the value is {len} bytes; this cluster stores values of at most \
                             {max} bytes"
                        ));
                        commands.push_back((Err(refused), Vec::new()));
                        skipping = Some(skip);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        malformed = Some(e);
                        break;
                    }
                }
            }
            let full = commands.len() >= MAX_QUEUED;
            self.run_pipeline(&mut commands, &mut output).await;
            let pending = full || !commands.is_empty();
            if !pending && let Some(e) = malformed.take() {
                let ParseError(message) = &e;
                let reply = Reply::err(format!("ERR Protocol error: {message}"));
                encode(&mut output, reply, self.state.protocol);
                write_replies(stream, &output, self.state.peer).await?;
                return Err(SessionError::Protocol(e.0));
            }
            if self.state.quit {
                write_replies(stream, &output, self.state.peer).await?;
                return Ok(());
            }
            if !output.is_empty() {
                write_replies(stream, &output, self.state.peer).await?;
                output.clear();
            }
            if pending || malformed.is_some() {
                continue;
            }
            if stream.read_buf(&mut input).await? == 0 {
                return Ok(());
            }
        }
    }

    /// Runs pipelined commands with the replies in order. Consecutive commands on distinct
    /// keys run concurrently (each waits for its replicas, not for the one before); a
    /// command on a key already in the group, one on several keys, and one that changes the
    /// connection (`QUORUM`, `MULTI`) wait for everything before them, so a pipeline behaves
    /// as if run one command at a time. Inside `MULTI` every command runs alone (it is queued).
    ///
    /// A group holds at most [`MAX_GROUP`] commands, and once the replies reach
    /// [`FLUSH_AT`] bytes the rest stays in `commands` until they are written: what one
    /// connection holds is about `MAX_GROUP` replies, however deep its pipeline.
    async fn run_pipeline(&mut self, commands: &mut VecDeque<Command>, output: &mut BytesMut) {
        while let Some(first) = commands.pop_front() {
            if self.state.quit {
                commands.clear();
                return;
            }
            let touch = touches(&first);
            if touch == Touch::Session || self.state.multi.is_some() {
                let reply = self.execute(first).await;
                encode(output, reply, self.state.protocol);
            } else {
                let mut group = vec![first];
                let mut keys: Vec<Bytes> = Vec::new();
                if let Touch::Key(k) = touch {
                    keys.push(k);
                }
                while group.len() < MAX_GROUP
                    && let Some(next) = commands.front()
                {
                    match touches(next) {
                        Touch::Session => break,
                        Touch::Key(k) if keys.contains(&k) => break,
                        Touch::Key(k) => keys.push(k),
                        Touch::Nothing => {}
                    }
                    group.extend(commands.pop_front());
                }
                if group.len() == 1 {
                    let reply = self.execute(group.remove(0)).await;
                    encode(output, reply, self.state.protocol);
                } else {
                    let this = &*self;
                    let replies = futures_util::future::join_all(
                        group
                            .into_iter()
                            .map(|(spec, args)| this.run_data(spec, args)),
                    )
                    .await;
                    for reply in replies {
                        encode(output, reply, self.state.protocol);
                    }
                }
            }
            if output.len() >= FLUSH_AT {
                return;
            }
        }
    }

    /// Runs one command (its name first) and answers it; inside `MULTI`, queues it.
    async fn execute(&mut self, (spec, args): Command) -> Reply {
        let spec = match spec {
            Ok(spec) => spec,
            Err(e) => {
                if let Some(multi) = &mut self.state.multi {
                    multi.failed = true;
                }
                return e.into();
            }
        };
        if let Err(e) = permit(&self.state.login, spec) {
            if let Some(multi) = &mut self.state.multi {
                multi.failed = true;
            }
            return e.into();
        }
        if let Some(multi) = &mut self.state.multi
            && !NOT_QUEUED.contains(&spec.meta.name)
        {
            if let Err(e) = spec.check_arity(&args) {
                multi.failed = true;
                return e.into();
            }
            multi.queued.push(args);
            return Reply::Simple("QUEUED");
        }
        if spec.meta.name == "EXEC" {
            return self.exec().await;
        }
        self.run_now(spec, args).await
    }

    /// Runs a command whatever the connection's state.
    async fn run_now(&mut self, spec: &'static Spec, args: Vec<Bytes>) -> Reply {
        if let Err(e) = permit(&self.state.login, spec) {
            return e.into();
        }
        match spec.run {
            Run::Connection(run) => {
                Stats::bump(&self.server.stats.total_commands_processed);
                let result = spec
                    .check_arity(&args)
                    .and_then(|()| run(&mut self.state, &self.server, &args[1..]));
                result.unwrap_or_else(Reply::from)
            }
            Run::Data(_) => self.run_data(Ok(spec), args).await,
        }
    }

    /// `EXEC`: runs the queued commands in order and answers them in one array. Not isolated:
    /// other clients' commands may run between them.
    async fn exec(&mut self) -> Reply {
        let Some(multi) = self.state.multi.take() else {
            return Reply::err("ERR EXEC without MULTI");
        };
        if multi.failed {
            return Reply::err("EXECABORT Transaction discarded because of previous errors.");
        }
        let mut replies = Vec::with_capacity(multi.queued.len());
        for args in multi.queued {
            let reply = match find(&args) {
                Ok(spec) => Box::pin(self.run_now(spec, args)).await,
                Err(e) => e.into(),
            };
            replies.push(reply);
        }
        Reply::Array(replies)
    }

    /// Runs a command that leaves the connection as it is, counted in the request metrics.
    async fn run_data(&self, spec: Found, args: Vec<Bytes>) -> Reply {
        let spec = match spec {
            Ok(spec) => spec,
            Err(e) => return e.into(),
        };
        if let Err(e) = permit(&self.state.login, spec) {
            return e.into();
        }
        let Run::Data(run) = spec.run else {
            // The scheduler runs connection commands alone, through `execute`.
            return Reply::err("ERR this command changes the connection and cannot run here");
        };
        Stats::bump(&self.server.stats.total_commands_processed);
        let start = std::time::Instant::now();
        let ctx = Ctx {
            server: &self.server,
            coordinator: &self.server.coordinator,
            consistency: &self.state.consistency,
        };
        let result = match spec.check_arity(&args) {
            Ok(()) => run(&ctx, &args[1..]).await,
            Err(e) => Err(e),
        };
        if let Some(op) = spec.meta.metric {
            let outcome = result.as_ref().map_or_else(CmdError::outcome, |_| "ok");
            self.server
                .coordinator
                .metrics()
                .request(op, outcome, start.elapsed().as_secs_f64());
        }
        result.unwrap_or_else(Reply::from)
    }
}

/// A command's table entry, or why it has none.
type Found = Result<&'static Spec, CmdError>;

/// A command as read, with its table entry.
type Command = (Found, Vec<Bytes>);

/// The table entry of a command, or the unknown-command error.
fn find(args: &[Bytes]) -> Found {
    let Some(name) = args.first() else {
        return Err(CmdError::err("empty command"));
    };
    lookup(name).ok_or_else(|| unknown_command(args))
}

/// What a command touches; an unknown one touches nothing (its error is the same wherever it
/// runs).
fn touches((spec, args): &Command) -> Touch {
    match spec {
        Ok(spec) => spec.touches(args),
        Err(_) => Touch::Nothing,
    }
}
