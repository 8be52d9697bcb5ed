//! One client connection: read what the client sent, run every complete command in order
//! (pipelined commands on different keys side by side), and answer in one write.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::cmd::unknown_command;
use super::command::{Ctx, Run, Spec, Touch, lookup};
use super::parse::{FRAME_SLACK, next_command};
use super::reply::{CmdError, Reply, encode};
use crate::coordinator::Coordinator;
use crate::ops::Consistency;

/// What a connection remembers between commands.
#[derive(Debug, Default)]
pub struct ConnState {
    /// N, W and R for every later command (`QUORUM`); the cluster's defaults where unset.
    pub consistency: Consistency,
    /// The client asked to close the connection (`QUIT`).
    pub quit: bool,
}

/// One connection.
pub struct Session {
    coordinator: Coordinator,
    state: ConnState,
}

/// Why a connection ends.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Reading or writing the socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The client sent something that is not RESP.
    #[error("protocol: {0}")]
    Protocol(String),
}

impl Session {
    /// A new connection served by `coordinator`.
    pub fn new(coordinator: Coordinator) -> Self {
        Session {
            coordinator,
            state: ConnState::default(),
        }
    }

    /// Serves the connection until the client closes it, quits, or sends what is not RESP.
    pub async fn run(mut self, mut stream: TcpStream) -> Result<(), SessionError> {
        let max_frame = self.coordinator.defaults().max_value_bytes + FRAME_SLACK;
        let mut input = BytesMut::with_capacity(16 * 1024);
        let mut output = BytesMut::with_capacity(16 * 1024);
        // Kept from one read to the next: no allocation per request for the list.
        let mut commands = Vec::new();
        loop {
            // Take every complete command already here, run them, answer in one write.
            let mut malformed = None;
            loop {
                match next_command(&mut input, max_frame) {
                    Ok(Some(args)) => commands.push(args),
                    Ok(None) => break,
                    Err(e) => {
                        malformed = Some(e);
                        break;
                    }
                }
            }
            self.run_pipeline(&mut commands, &mut output).await;
            if let Some(e) = malformed {
                encode(&mut output, Reply::err(format!("ERR Protocol error: {e}")));
                stream.write_all(&output).await?;
                return Err(SessionError::Protocol(e));
            }
            if self.state.quit {
                stream.write_all(&output).await?;
                return Ok(());
            }
            if !output.is_empty() {
                stream.write_all(&output).await?;
                output.clear();
            }
            if stream.read_buf(&mut input).await? == 0 {
                return Ok(());
            }
        }
    }

    /// Runs pipelined commands with the replies in order. Consecutive commands on distinct
    /// keys run concurrently (each waits for its replicas, not for the one before); a
    /// command on a key already in the group, one on several keys, and one that changes the
    /// connection (`QUORUM`, `QUIT`) wait for everything before them, so a pipeline behaves
    /// as if run one command at a time.
    async fn run_pipeline(&mut self, commands: &mut Vec<Vec<Bytes>>, output: &mut BytesMut) {
        let mut rest = commands
            .drain(..)
            .map(|args| (find(&args), args))
            .peekable();
        while let Some(first) = rest.next() {
            if self.state.quit {
                return;
            }
            let touch = touches(&first);
            if touch == Touch::Session {
                let reply = self.execute(first).await;
                encode(output, reply);
                continue;
            }
            let mut group = vec![first];
            let mut keys: Vec<Bytes> = Vec::new();
            if let Touch::Key(k) = touch {
                keys.push(k);
            }
            while let Some(next) = rest.peek() {
                match touches(next) {
                    Touch::Session => break,
                    Touch::Key(k) if keys.contains(&k) => break,
                    Touch::Key(k) => keys.push(k),
                    Touch::Nothing => {}
                }
                group.extend(rest.next());
            }
            if group.len() == 1 {
                let reply = self.execute(group.remove(0)).await;
                encode(output, reply);
            } else {
                let this = &*self;
                let replies = futures_util::future::join_all(
                    group
                        .into_iter()
                        .map(|(spec, args)| this.run_data(spec, args)),
                )
                .await;
                for reply in replies {
                    encode(output, reply);
                }
            }
        }
    }

    /// Runs one command (its name first) and answers it.
    async fn execute(&mut self, (spec, args): Command) -> Reply {
        let spec = match spec {
            Ok(spec) => spec,
            Err(e) => return e.into(),
        };
        match spec.run {
            Run::Connection(run) => {
                let result = spec
                    .check_arity(&args)
                    .and_then(|()| run(&mut self.state, &self.coordinator, &args[1..]));
                result.unwrap_or_else(Reply::from)
            }
            Run::Data(_) => self.run_data(Ok(spec), args).await,
        }
    }

    /// Runs a command that leaves the connection as it is, counted in the request metrics.
    async fn run_data(&self, spec: Found, args: Vec<Bytes>) -> Reply {
        let spec = match spec {
            Ok(spec) => spec,
            Err(e) => return e.into(),
        };
        let Run::Data(run) = spec.run else {
            // The scheduler runs connection commands alone, through `execute`.
            return Reply::err("ERR this command changes the connection and cannot run here");
        };
        let start = std::time::Instant::now();
        let ctx = Ctx {
            coordinator: &self.coordinator,
            consistency: &self.state.consistency,
        };
        let result = match spec.check_arity(&args) {
            Ok(()) => run(&ctx, &args[1..]).await,
            Err(e) => Err(e),
        };
        if let Some(op) = spec.meta.metric {
            let outcome = result.as_ref().map_or_else(CmdError::outcome, |_| "ok");
            self.coordinator
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
