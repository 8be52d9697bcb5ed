//! The Redis protocol (RESP2) front end: `redis-cli`, `redis-benchmark` and Redis client
//! libraries talk to any node as to a Redis server.
//!
//! Strings (`GET`, `SET`, `DEL`, `EXPIRE`, ...) are the `/lww` key space, `INCR` and friends the
//! `/counter` key space, and `SADD` and friends the `/set` key space, so a value written over
//! RESP is read over HTTP and back. Every command goes through the same coordinator as HTTP,
//! with the connection's N/W/R (`QUORUM n w r`), or the cluster defaults.
//!
//! Requests are parsed with the `redis-protocol` crate. Pipelining works: every complete
//! command in the input buffer is run in order and the replies go out in one write. Inline
//! commands (`PING\r\n`, as telnet sends them) are accepted too. Malformed input gets an
//! error reply and closes that connection only.

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::decode::decode_bytes_mut;
use redis_protocol::resp2::encode::extend_encode;
use redis_protocol::resp2::types::BytesFrame as Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::coordinator::Coordinator;
use crate::crdt::LwwRegister;
use crate::ops::{Consistency, OpError, ReadResult, Write};
use crate::storage::{Kind, Value};

/// Most arguments one command may carry (Redis allows more; nobody sends them).
const MAX_ARGS: usize = 1024 * 1024;
/// Room for a command's framing and key on top of the largest value.
const FRAME_SLACK: usize = 64 * 1024;

/// Accepts RESP connections until the task is aborted.
pub async fn serve(listener: TcpListener, coordinator: Coordinator) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("resp accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let session = Session::new(coordinator.clone());
        tokio::spawn(async move {
            if let Err(e) = session.run(stream).await {
                tracing::debug!(%peer, "resp connection closed: {e}");
            }
        });
    }
}

/// What a command answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ok,
    Simple(&'static str),
    Error(String),
    Integer(i64),
    Bulk(Bytes),
    Nil,
    Array(Vec<Reply>),
}

impl Reply {
    fn err(message: impl Into<String>) -> Reply {
        Reply::Error(message.into())
    }

    fn frame(self) -> Frame {
        match self {
            Reply::Ok => Frame::SimpleString(Bytes::from_static(b"OK")),
            Reply::Simple(s) => Frame::SimpleString(Bytes::from_static(s.as_bytes())),
            // Error lines cannot hold line breaks.
            Reply::Error(e) => Frame::Error(e.replace(['\r', '\n'], " ").into()),
            Reply::Integer(i) => Frame::Integer(i),
            Reply::Bulk(b) => Frame::BulkString(b),
            Reply::Nil => Frame::Null,
            Reply::Array(items) => Frame::Array(items.into_iter().map(Reply::frame).collect()),
        }
    }
}

impl From<OpError> for Reply {
    fn from(e: OpError) -> Self {
        match e {
            OpError::Unavailable {
                needed,
                acks,
                message,
            } => Reply::Error(format!(
                "QUORUM needed {needed} acks, got {acks}: {message}"
            )),
            OpError::BadRequest(m) | OpError::TooLarge(m) => Reply::Error(format!("ERR {m}")),
        }
    }
}

/// One connection's state.
pub struct Session {
    coordinator: Coordinator,
    consistency: Consistency,
    quit: bool,
}

/// Why a connection ends.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Protocol(String),
}

impl Session {
    pub fn new(coordinator: Coordinator) -> Self {
        Session {
            coordinator,
            consistency: Consistency::default(),
            quit: false,
        }
    }

    async fn run(mut self, mut stream: TcpStream) -> Result<(), SessionError> {
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
            if self.quit {
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
        let mut rest = commands.drain(..).peekable();
        while let Some(first) = rest.next() {
            if self.quit {
                return;
            }
            if touches(&first) == Touch::Session {
                let reply = self.execute(first).await;
                encode(output, reply);
                continue;
            }
            let mut group = vec![first];
            let mut keys: Vec<Bytes> = Vec::new();
            if let Touch::Key(k) = touches(&group[0]) {
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
                let replies =
                    futures_util::future::join_all(group.into_iter().map(|c| this.run_command(c)))
                        .await;
                for reply in replies {
                    encode(output, reply);
                }
            }
        }
    }

    /// Runs one command (its name first) and answers it.
    pub async fn execute(&mut self, args: Vec<Bytes>) -> Reply {
        let Some(name) = args.first() else {
            return Reply::err("ERR empty command");
        };
        let mut buf = NameBuf::default();
        match upper(name, &mut buf) {
            "QUIT" => {
                self.quit = true;
                Reply::Ok
            }
            "QUORUM" => match self.set_quorum(&args[1..]) {
                Ok(()) => Reply::Ok,
                Err(reply) => reply,
            },
            _ => self.run_command(args).await,
        }
    }

    /// Runs a command that leaves the connection as it is.
    async fn run_command(&self, args: Vec<Bytes>) -> Reply {
        let Some(name) = args.first() else {
            return Reply::err("ERR empty command");
        };
        let mut buf = NameBuf::default();
        let name = upper(name, &mut buf);
        let start = std::time::Instant::now();
        let result = self.dispatch(name, &args[1..]).await;
        if let Some(op) = operation(name) {
            let outcome = match &result {
                Ok(_) => "ok",
                Err(Reply::Error(e)) if e.starts_with("QUORUM") => "unavailable",
                Err(_) => "bad_request",
            };
            self.coordinator
                .metrics()
                .request(op, outcome, start.elapsed().as_secs_f64());
        }
        match result {
            Ok(reply) => reply,
            Err(reply) => reply,
        }
    }

    async fn dispatch(&self, name: &str, args: &[Bytes]) -> Result<Reply, Reply> {
        let arity = |min: usize, max: Option<usize>| {
            if args.len() < min || max.is_some_and(|m| args.len() > m) {
                Err(Reply::err(format!(
                    "ERR wrong number of arguments for '{}' command",
                    name.to_lowercase()
                )))
            } else {
                Ok(())
            }
        };
        match name {
            "PING" => {
                arity(0, Some(1))?;
                Ok(match args.first() {
                    Some(msg) => Reply::Bulk(msg.clone()),
                    None => Reply::Simple("PONG"),
                })
            }
            "ECHO" => {
                arity(1, Some(1))?;
                Ok(Reply::Bulk(args[0].clone()))
            }
            "SELECT" => {
                arity(1, Some(1))?;
                match text(&args[0])? {
                    "0" => Ok(Reply::Ok),
                    _ => Err(Reply::err(
                        "ERR DB index is out of range (quorumkv has one database, 0)",
                    )),
                }
            }
            "INFO" => Ok(Reply::Bulk(self.info())),
            "COMMAND" => Ok(match args.first().map(|a| text(a)).transpose()? {
                Some(sub) if sub.eq_ignore_ascii_case("COUNT") => {
                    Reply::Integer(COMMANDS.len() as i64)
                }
                _ => Reply::Array(Vec::new()),
            }),
            // Client libraries send these on connect; nothing to configure here.
            "CLIENT" => Ok(Reply::Ok),
            "CONFIG" => Ok(Reply::Array(Vec::new())),
            "GET" => {
                arity(1, Some(1))?;
                let read = self.read(Kind::Lww, &args[0]).await?;
                Ok(live_lww(&read).map_or(Reply::Nil, |(v, _)| Reply::Bulk(v)))
            }
            "MGET" => {
                arity(1, None)?;
                let mut out = Vec::with_capacity(args.len());
                for key in args {
                    let read = self.read(Kind::Lww, key).await?;
                    out.push(live_lww(&read).map_or(Reply::Nil, |(v, _)| Reply::Bulk(v)));
                }
                Ok(Reply::Array(out))
            }
            "SET" => self.set(args).await,
            "DEL" => {
                arity(1, None)?;
                let mut removed = 0;
                for key in args {
                    let read = self.read(Kind::Lww, key).await?;
                    if live_lww(&read).is_some() {
                        self.write(key, Write::LwwDelete).await?;
                        removed += 1;
                    }
                }
                Ok(Reply::Integer(removed))
            }
            "EXISTS" => {
                arity(1, None)?;
                let mut found = 0;
                for key in args {
                    let read = self.read(Kind::Lww, key).await?;
                    found += i64::from(live_lww(&read).is_some());
                }
                Ok(Reply::Integer(found))
            }
            "EXPIRE" | "PEXPIRE" => {
                arity(2, Some(2))?;
                let amount = integer(&args[1])?;
                let ttl_ms = if name == "EXPIRE" {
                    amount.saturating_mul(1000)
                } else {
                    amount
                };
                let read = self.read(Kind::Lww, &args[0]).await?;
                let Some((value, _)) = live_lww(&read) else {
                    return Ok(Reply::Integer(0));
                };
                let write = if ttl_ms <= 0 {
                    // As Redis: a non-positive timeout deletes the key.
                    Write::LwwDelete
                } else {
                    Write::LwwPut {
                        value,
                        ttl_ms: Some(ttl_ms as u64),
                    }
                };
                self.write(&args[0], write).await?;
                Ok(Reply::Integer(1))
            }
            "TTL" | "PTTL" => {
                arity(1, Some(1))?;
                let read = self.read(Kind::Lww, &args[0]).await?;
                Ok(Reply::Integer(match live_lww(&read) {
                    None => -2,
                    Some((_, None)) => -1,
                    Some((_, Some(expiry))) => {
                        let left = expiry.saturating_sub(read.now_ms) as i64;
                        if name == "TTL" {
                            (left + 999) / 1000
                        } else {
                            left
                        }
                    }
                }))
            }
            "INCR" | "DECR" | "INCRBY" | "DECRBY" => {
                let by = match name {
                    "INCR" | "DECR" => {
                        arity(1, Some(1))?;
                        1
                    }
                    _ => {
                        arity(2, Some(2))?;
                        integer(&args[1])?
                    }
                };
                let delta = if name.starts_with("DECR") {
                    by.checked_neg()
                        .ok_or_else(|| Reply::err("ERR decrement would overflow"))?
                } else {
                    by
                };
                let written = self.write(&args[0], Write::CounterAdd { delta }).await?;
                int_reply(written.counter.unwrap_or_default())
            }
            "COUNTER.GET" => {
                arity(1, Some(1))?;
                let read = self.read(Kind::Counter, &args[0]).await?;
                int_reply(match read.value {
                    Some(Value::Counter(c)) => c.value(),
                    _ => 0,
                })
            }
            "SADD" | "SREM" => {
                arity(2, None)?;
                let members = args[1..]
                    .iter()
                    .map(|m| text(m).map(str::to_string))
                    .collect::<Result<Vec<_>, _>>()?;
                let (write, adding) = if name == "SADD" {
                    (
                        Write::SetUpdate {
                            add: dedup(members),
                            remove: Vec::new(),
                        },
                        true,
                    )
                } else {
                    (
                        Write::SetUpdate {
                            add: Vec::new(),
                            remove: dedup(members),
                        },
                        false,
                    )
                };
                let written = self.write(&args[0], write).await?;
                Ok(Reply::Integer(i64::from(if adding {
                    written.added
                } else {
                    written.removed
                })))
            }
            "SMEMBERS" | "SCARD" | "SISMEMBER" => {
                if name == "SISMEMBER" {
                    arity(2, Some(2))?;
                } else {
                    arity(1, Some(1))?;
                }
                let read = self.read(Kind::Set, &args[0]).await?;
                let members: Vec<&str> = match &read.value {
                    Some(Value::Set(set)) => set.members().collect(),
                    _ => Vec::new(),
                };
                Ok(match name {
                    "SCARD" => Reply::Integer(members.len() as i64),
                    "SISMEMBER" => {
                        let m = text(&args[1])?;
                        Reply::Integer(i64::from(members.contains(&m)))
                    }
                    _ => Reply::Array(
                        members
                            .into_iter()
                            .map(|m| Reply::Bulk(Bytes::copy_from_slice(m.as_bytes())))
                            .collect(),
                    ),
                })
            }
            other => Err(Reply::err(format!(
                "ERR unknown command '{}', with args beginning with: {}; quorumkv serves {}",
                other.to_lowercase(),
                args.iter()
                    .take(3)
                    .map(|a| format!("'{}'", String::from_utf8_lossy(a)))
                    .collect::<Vec<_>>()
                    .join(" "),
                COMMANDS.join(" ")
            ))),
        }
    }

    /// `SET key value [EX s | PX ms] [NX | XX]`.
    async fn set(&self, args: &[Bytes]) -> Result<Reply, Reply> {
        if args.len() < 2 {
            return Err(Reply::err(
                "ERR wrong number of arguments for 'set' command",
            ));
        }
        let (key, value) = (&args[0], args[1].clone());
        let mut ttl_ms = None;
        let mut condition = None;
        let mut i = 2;
        while i < args.len() {
            let option = text(&args[i])?.to_ascii_uppercase();
            match option.as_str() {
                "EX" | "PX" if ttl_ms.is_none() => {
                    let amount = args
                        .get(i + 1)
                        .ok_or_else(|| Reply::err("ERR syntax error"))
                        .and_then(integer)?;
                    if amount <= 0 {
                        return Err(Reply::err("ERR invalid expire time in 'set' command"));
                    }
                    let ms = if option == "EX" {
                        amount.saturating_mul(1000)
                    } else {
                        amount
                    };
                    ttl_ms = Some(ms as u64);
                    i += 2;
                }
                "NX" | "XX" if condition.is_none() => {
                    condition = Some(option == "NX");
                    i += 1;
                }
                _ => return Err(Reply::err("ERR syntax error")),
            }
        }
        if let Some(only_if_absent) = condition {
            // Read at R, then write: a check, not a lock (two racing NX can both succeed).
            let read = self.read(Kind::Lww, key).await?;
            if live_lww(&read).is_some() == only_if_absent {
                return Ok(Reply::Nil);
            }
        }
        self.write(key, Write::LwwPut { value, ttl_ms }).await?;
        Ok(Reply::Ok)
    }

    fn set_quorum(&mut self, args: &[Bytes]) -> Result<(), Reply> {
        if args.len() != 3 {
            return Err(Reply::err(
                "ERR wrong number of arguments for 'quorum' command; use QUORUM n w r",
            ));
        }
        let mut c = Consistency::default();
        for (name, value) in ["n", "w", "r"].iter().zip(args) {
            c.set(name, text(value)?).map_err(Reply::from)?;
        }
        // Checked against the cluster now, so a bad setting fails here, not on each command.
        self.coordinator.plan(&c).map_err(Reply::from)?;
        self.consistency = Consistency {
            timeout_ms: self.consistency.timeout_ms,
            sloppy: self.consistency.sloppy,
            ..c
        };
        Ok(())
    }

    async fn read(&self, kind: Kind, key: &Bytes) -> Result<ReadResult, Reply> {
        let name = text(key)?;
        self.coordinator
            .read(kind, name, &self.consistency)
            .await
            .map_err(Reply::from)
    }

    async fn write(&self, key: &Bytes, write: Write) -> Result<crate::ops::Written, Reply> {
        let name = text(key)?;
        self.coordinator
            .write(name, write, &self.consistency)
            .await
            .map_err(Reply::from)
    }

    fn info(&self) -> Bytes {
        let (keys, hints) = (
            self.coordinator.store().len(),
            self.coordinator.pending_hints().0,
        );
        Bytes::from(format!(
            "# Server\r\nredis_version:7.0.0\r\nquorumkv_version:{}\r\nredis_mode:standalone\r\n\
             node:{}\r\n\r\n# Keyspace\r\ndb0:keys={keys},expires=0\r\nhints_pending:{hints}\r\n",
            env!("CARGO_PKG_VERSION"),
            self.coordinator.me()
        ))
    }
}

/// Room for a command name in upper case: longer names are no command of ours.
type NameBuf = [u8; 16];

/// A command's name in upper case, without allocating; `"?"` for what cannot be one.
fn upper<'a>(name: &[u8], buf: &'a mut NameBuf) -> &'a str {
    if name.len() > buf.len() {
        return "?";
    }
    let out = &mut buf[..name.len()];
    out.copy_from_slice(name);
    out.make_ascii_uppercase();
    std::str::from_utf8(out).unwrap_or("?")
}

/// What a command touches, for running pipelined commands side by side.
#[derive(Debug, PartialEq, Eq)]
enum Touch {
    /// The connection itself, or several keys: runs alone.
    Session,
    Key(Bytes),
    Nothing,
}

fn touches(args: &[Bytes]) -> Touch {
    let Some(name) = args.first() else {
        return Touch::Nothing;
    };
    let mut buf = NameBuf::default();
    match upper(name, &mut buf) {
        "PING" | "ECHO" | "INFO" | "COMMAND" | "CLIENT" | "CONFIG" | "SELECT" => Touch::Nothing,
        "QUIT" | "QUORUM" | "DEL" | "EXISTS" | "MGET" => Touch::Session,
        _ => match args.get(1) {
            Some(key) => Touch::Key(key.clone()),
            None => Touch::Nothing,
        },
    }
}

/// The metrics operation of a data command (the HTTP endpoints' names).
fn operation(name: &str) -> Option<&'static str> {
    Some(match name {
        "GET" | "MGET" | "EXISTS" | "TTL" | "PTTL" => "lww_get",
        "SET" | "EXPIRE" | "PEXPIRE" => "lww_put",
        "DEL" => "lww_delete",
        "INCR" | "INCRBY" | "DECR" | "DECRBY" => "counter_add",
        "COUNTER.GET" => "counter_get",
        "SADD" | "SREM" => "set_update",
        "SMEMBERS" | "SCARD" | "SISMEMBER" => "set_get",
        _ => return None,
    })
}

/// The commands this server knows, for `COMMAND COUNT` and unknown-command errors.
const COMMANDS: &[&str] = &[
    "PING",
    "ECHO",
    "QUIT",
    "INFO",
    "SELECT",
    "COMMAND",
    "GET",
    "SET",
    "DEL",
    "EXISTS",
    "MGET",
    "EXPIRE",
    "PEXPIRE",
    "TTL",
    "PTTL",
    "INCR",
    "INCRBY",
    "DECR",
    "DECRBY",
    "COUNTER.GET",
    "SADD",
    "SREM",
    "SMEMBERS",
    "SISMEMBER",
    "SCARD",
    "QUORUM",
];

/// The live value of an LWW read and its expiry, if any.
fn live_lww(read: &ReadResult) -> Option<(Bytes, Option<u64>)> {
    match &read.value {
        Some(Value::Lww(reg)) => {
            let value = reg.get(read.now_ms)?.clone();
            Some((value, expiry_of(reg)))
        }
        _ => None,
    }
}

fn expiry_of(reg: &LwwRegister) -> Option<u64> {
    reg.next_expiry()
}

fn text(arg: &Bytes) -> Result<&str, Reply> {
    std::str::from_utf8(arg).map_err(|_| Reply::err("ERR keys and members must be UTF-8"))
}

fn integer(arg: &Bytes) -> Result<i64, Reply> {
    text(arg)?
        .parse()
        .map_err(|_| Reply::err("ERR value is not an integer or out of range"))
}

fn int_reply(v: i128) -> Result<Reply, Reply> {
    i64::try_from(v)
        .map(Reply::Integer)
        .map_err(|_| Reply::err(format!("ERR the counter is {v}, beyond a 64-bit reply")))
}

fn dedup(mut members: Vec<String>) -> Vec<String> {
    members.sort();
    members.dedup();
    members
}

/// Appends a reply. The replies of the hot path (`+OK`, bulk strings, nil, integers) are
/// written directly (redis-protocol's encoder took about 500 instructions for a `GET`'s bulk
/// reply); the rest go through the codec.
fn encode(out: &mut BytesMut, reply: Reply) {
    let mut digits = [0; 20];
    match &reply {
        Reply::Ok => return out.extend_from_slice(b"+OK\r\n"),
        Reply::Nil => return out.extend_from_slice(b"$-1\r\n"),
        Reply::Integer(i) => {
            out.extend_from_slice(b":");
            out.extend_from_slice(decimal(*i, &mut digits));
            return out.extend_from_slice(b"\r\n");
        }
        Reply::Bulk(b) => {
            out.reserve(b.len() + 16);
            out.extend_from_slice(b"$");
            out.extend_from_slice(decimal(b.len() as i64, &mut digits));
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(b);
            return out.extend_from_slice(b"\r\n");
        }
        _ => {}
    }
    let frame = reply.frame();
    if let Err(e) = extend_encode(out, &frame, false) {
        tracing::warn!("cannot encode a reply: {e}");
    }
}

/// `n` in decimal, written at the end of `buf`.
fn decimal(n: i64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    let mut rest = n.unsigned_abs();
    loop {
        at -= 1;
        buf[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if n < 0 {
        at -= 1;
        buf[at] = b'-';
    }
    &buf[at..]
}

/// Takes the next complete command off `input`: `Ok(None)` when more bytes are needed.
fn next_command(input: &mut BytesMut, max_frame: usize) -> Result<Option<Vec<Bytes>>, String> {
    if input.is_empty() {
        return Ok(None);
    }
    if input[0] != b'*' {
        return inline_command(input, max_frame);
    }
    check_header(input)?;
    match walk_bulk_array(input, |_| ()) {
        BulkArray::Complete { len, count } => {
            let frame = input.split_to(len).freeze();
            let mut args = Vec::with_capacity(count);
            walk_bulk_array(&frame, |arg| args.push(frame.slice(arg)));
            return Ok(Some(args));
        }
        BulkArray::Incomplete if input.len() > max_frame => return Err(too_long(max_frame)),
        BulkArray::Incomplete => return Ok(None),
        // Anything else (other frame types inside, odd lengths) is the codec's to judge.
        BulkArray::Other => {}
    }
    codec_command(input, max_frame)
}

/// [`next_command`] by redis-protocol's decoder: any array, checked item by item.
fn codec_command(input: &mut BytesMut, max_frame: usize) -> Result<Option<Vec<Bytes>>, String> {
    match decode_bytes_mut(input) {
        Ok(Some((frame, _, _))) => match frame {
            Frame::Array(items) => items
                .into_iter()
                .map(|f| match f {
                    Frame::BulkString(b) | Frame::SimpleString(b) => Ok(b),
                    Frame::Integer(i) => Ok(Bytes::from(i.to_string())),
                    other => Err(format!("expected bulk strings, got {other:?}")),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            other => Err(format!("expected an array of bulk strings, got {other:?}")),
        },
        Ok(None) if input.len() > max_frame => Err(too_long(max_frame)),
        Ok(None) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

fn too_long(max_frame: usize) -> String {
    format!(
        "a command of more than {max_frame} bytes; values may have at most {} bytes",
        max_frame - FRAME_SLACK
    )
}

/// What [`walk_bulk_array`] found at the start of the input.
#[derive(Debug, PartialEq, Eq)]
enum BulkArray {
    /// A whole command of `len` bytes and `count` arguments.
    Complete { len: usize, count: usize },
    /// The start of one: more bytes are needed.
    Incomplete,
    /// Not an array of bulk strings.
    Other,
}

/// Walks a command in the shape every client sends (`*N` then N bulk strings), handing each
/// argument's byte range to `arg`. The common case, read without the codec: redis-protocol
/// builds a frame tree first, about 2,200 instructions per `SET` (a tenth of a three-node
/// coordinator's; README, Benchmarks). Everything else goes to the codec.
fn walk_bulk_array(input: &[u8], mut arg: impl FnMut(std::ops::Range<usize>)) -> BulkArray {
    /// A decimal length after `prefix` at `at`, ended by CRLF: (value, where the line ends).
    fn length(input: &[u8], at: usize, prefix: u8) -> Result<(usize, usize), BulkArray> {
        match input.get(at) {
            None => return Err(BulkArray::Incomplete),
            Some(&b) if b != prefix => return Err(BulkArray::Other),
            Some(_) => {}
        }
        // At most 11 digits: no overflow, and longer than any frame this node accepts.
        let mut value: u64 = 0;
        let mut i = at + 1;
        loop {
            match input.get(i) {
                None => return Err(BulkArray::Incomplete),
                Some(b'\r') if i > at + 1 => break,
                Some(&d) if d.is_ascii_digit() && i < at + 12 => {
                    value = value * 10 + u64::from(d - b'0');
                }
                Some(_) => return Err(BulkArray::Other),
            }
            i += 1;
        }
        let value = usize::try_from(value).map_err(|_| BulkArray::Other)?;
        match input.get(i + 1) {
            None => Err(BulkArray::Incomplete),
            Some(b'\n') => Ok((value, i + 2)),
            Some(_) => Err(BulkArray::Other),
        }
    }
    let walk = |arg: &mut dyn FnMut(std::ops::Range<usize>)| -> Result<(usize, usize), BulkArray> {
        let (count, mut at) = length(input, 0, b'*')?;
        if count == 0 || count > MAX_ARGS {
            return Err(BulkArray::Other);
        }
        for _ in 0..count {
            let (len, start) = length(input, at, b'$')?;
            let end = start.checked_add(len).ok_or(BulkArray::Other)?;
            let after = end.checked_add(2).ok_or(BulkArray::Other)?;
            match input.get(end..after) {
                None => return Err(BulkArray::Incomplete),
                Some(b"\r\n") => {}
                Some(_) => return Err(BulkArray::Other),
            }
            arg(start..end);
            at = after;
        }
        Ok((at, count))
    };
    match walk(&mut arg) {
        Ok((len, count)) => BulkArray::Complete { len, count },
        Err(found) => found,
    }
}

/// Refuses an array header that announces more arguments than any command has, before the
/// decoder reserves room for them.
fn check_header(input: &[u8]) -> Result<(), String> {
    let Some(end) = input.iter().take(24).position(|&b| b == b'\r') else {
        return if input.len() > 24 {
            Err("array header too long".into())
        } else {
            Ok(())
        };
    };
    let count: i64 = std::str::from_utf8(&input[1..end])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| "invalid multibulk length".to_string())?;
    if count > MAX_ARGS as i64 {
        return Err(format!("{count} arguments; at most {MAX_ARGS}"));
    }
    Ok(())
}

/// A command typed as one line of words (telnet, `nc`).
fn inline_command(input: &mut BytesMut, max_frame: usize) -> Result<Option<Vec<Bytes>>, String> {
    let Some(end) = input.iter().position(|&b| b == b'\n') else {
        return if input.len() > max_frame {
            Err("inline command too long".into())
        } else {
            Ok(None)
        };
    };
    let line = input.split_to(end + 1);
    let line = std::str::from_utf8(&line)
        .map_err(|_| "inline commands must be UTF-8".to_string())?
        .trim();
    let args: Vec<Bytes> = line
        .split_whitespace()
        .map(|w| Bytes::copy_from_slice(w.as_bytes()))
        .collect();
    if args.is_empty() {
        // An empty line: nothing to run, look for the next command.
        return next_command(input, max_frame);
    }
    Ok(Some(args))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Option<Vec<Bytes>>, String> {
        let mut buf = BytesMut::from(bytes);
        next_command(&mut buf, 1 << 20)
    }

    #[test]
    fn commands_parse_from_arrays_and_inline_lines_and_wait_for_more() {
        assert_eq!(
            parse(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n").unwrap(),
            Some(vec![Bytes::from("GET"), Bytes::from("k")])
        );
        assert_eq!(parse(b"*2\r\n$3\r\nGET\r\n$1\r").unwrap(), None);
        // Arrays of bulk strings take the fast path; anything else is the codec's.
        let get = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
        let mut ranges = Vec::new();
        assert_eq!(
            walk_bulk_array(get, |r| ranges.push(r)),
            BulkArray::Complete {
                len: get.len(),
                count: 2
            }
        );
        assert_eq!(ranges, [8..11, 17..18]);
        assert_eq!(walk_bulk_array(&get[..12], |_| ()), BulkArray::Incomplete);
        assert_eq!(walk_bulk_array(b"*1\r\n:5\r\n", |_| ()), BulkArray::Other);
        assert_eq!(walk_bulk_array(b"*1\r\n$-1\r\n", |_| ()), BulkArray::Other);
        assert_eq!(
            parse(b"PING hello\r\n").unwrap(),
            Some(vec![Bytes::from("PING"), Bytes::from("hello")])
        );
        assert_eq!(parse(b"PIN").unwrap(), None);
        // Pipelined: the second command stays in the buffer for the next call.
        let mut buf = BytesMut::from(&b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n"[..]);
        assert!(next_command(&mut buf, 1 << 20).unwrap().is_some());
        assert!(next_command(&mut buf, 1 << 20).unwrap().is_some());
        assert!(buf.is_empty());
    }

    /// What redis-protocol alone makes of `bytes`: the fast path must read the same.
    fn codec(bytes: &[u8]) -> Result<Option<Vec<Bytes>>, String> {
        check_header(bytes)?;
        codec_command(&mut BytesMut::from(bytes), 1 << 20)
    }

    proptest::proptest! {
        /// Every command, and every prefix of one, reads as the codec reads it; what follows a
        /// command stays in the buffer.
        #[test]
        fn the_fast_path_reads_commands_as_the_codec_does(
            args in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40), 1..6),
            cut in 0usize..400,
        ) {
            let mut wire = format!("*{}\r\n", args.len()).into_bytes();
            for a in &args {
                wire.extend(format!("${}\r\n", a.len()).as_bytes());
                wire.extend(a);
                wire.extend(b"\r\n");
            }
            let whole = wire.len();
            wire.extend(b"*1\r\n$4\r\nPING\r\n");
            let mut buf = BytesMut::from(&wire[..]);
            let parsed = next_command(&mut buf, 1 << 20).expect("a command");
            let expected: Vec<Bytes> = args.iter().map(|a| Bytes::copy_from_slice(a)).collect();
            proptest::prop_assert_eq!(parsed, Some(expected));
            proptest::prop_assert_eq!(buf.len(), wire.len() - whole);
            let prefix = &wire[..cut.min(whole)];
            if prefix.is_empty() {
                return Ok(());
            }
            proptest::prop_assert_eq!(parse(prefix), codec(prefix));
        }

        /// Damaged input gets the codec's verdict.
        #[test]
        fn damaged_commands_read_as_the_codec_reads_them(
            mut wire in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..30),
            pos in 0usize..30,
            byte in proptest::prelude::any::<u8>(),
        ) {
            let mut cmd = b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n".to_vec();
            let at = pos % cmd.len();
            cmd[at] = byte;
            cmd.append(&mut wire);
            if cmd[0] == b'*' {
                proptest::prop_assert_eq!(parse(&cmd), codec(&cmd));
            }
        }
    }

    #[test]
    fn malformed_and_oversized_input_is_an_error_not_a_panic() {
        assert!(parse(b"*x\r\n").is_err());
        assert!(parse(b"*99999999999\r\n").is_err());
        assert!(parse(b"*1\r\n:5\r\n").is_ok());
        assert!(parse(b"*1\r\n*1\r\n$1\r\na\r\n").is_err());
        let mut big = b"*2\r\n$3\r\nSET\r\n$9999999\r\n".to_vec();
        big.extend(vec![b'x'; 2 << 20]);
        let mut buf = BytesMut::from(&big[..]);
        assert!(next_command(&mut buf, 1 << 20).is_err());
    }

    proptest::proptest! {
        /// The replies written directly are byte for byte what the codec writes.
        #[test]
        fn direct_replies_match_the_codec(
            i in proptest::prelude::any::<i64>(),
            bulk in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
        ) {
            let edge = [i, 0, -1, i64::MIN, i64::MAX, 9, 10, -10];
            let mut replies = vec![Reply::Ok, Reply::Nil, Reply::Bulk(Bytes::from(bulk))];
            replies.extend(edge.iter().map(|n| Reply::Integer(*n)));
            for reply in replies {
                let mut direct = BytesMut::new();
                encode(&mut direct, reply.clone());
                let mut codec = BytesMut::new();
                extend_encode(&mut codec, &reply.frame(), false).expect("encode");
                proptest::prop_assert_eq!(&direct[..], &codec[..]);
            }
        }
    }

    #[test]
    fn error_replies_never_break_the_line() {
        let mut out = BytesMut::new();
        encode(&mut out, Reply::err("ERR two\r\nlines"));
        assert_eq!(&out[..], b"-ERR two  lines\r\n");
    }

    #[test]
    fn quorum_errors_name_what_was_needed() {
        let reply = Reply::from(OpError::Unavailable {
            needed: 2,
            acks: 1,
            message: "n3 is dead".into(),
        });
        assert_eq!(
            reply,
            Reply::Error("QUORUM needed 2 acks, got 1: n3 is dead".into())
        );
    }
}
