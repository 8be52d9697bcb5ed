//! The connection and server commands: `HELLO`, `AUTH`, `PING`, `ECHO`, `QUIT`, `RESET`,
//! `SELECT`, `CLIENT`, `COMMAND`, `INFO`, `CONFIG`, `TIME`, `FUNCTION`, and quorumkv's own
//! `QUORUM`.

use std::fmt::Write as _;

use bytes::Bytes;

use crate::ops::Consistency;
use crate::resp::command::{
    Access, ConnectionCommand, Ctx, DataCommand, Keys, Meta, Spec, is, text,
};
use crate::resp::connection::{ConnState, Login};
use crate::resp::glob::matches;
use crate::resp::reply::{CmdError, Protocol, Reply};
use crate::resp::server::Server;

/// The Redis version quorumkv answers as: the one whose commands and replies it follows.
pub const REDIS_VERSION: &str = "7.2.4";

/// A command of this group with no keys that touches no data.
const fn meta(name: &'static str, arity: i32, summary: &'static str) -> Meta {
    Meta::new(name, arity, Access::None, Keys::NONE, "connection", summary)
}

/// `PING [message]`.
pub struct Ping(Option<Bytes>);

impl DataCommand for Ping {
    const META: Meta = meta("PING", -1, "Returns the server's liveliness response.");

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
    const META: Meta = meta("ECHO", 2, "Returns the given string.");

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
    const META: Meta = meta("QUIT", -1, "Closes the connection.");

    fn parse(_: &[Bytes]) -> Result<Self, CmdError> {
        Ok(Quit)
    }

    fn run(self, conn: &mut ConnState, _: &Server) -> Result<Reply, CmdError> {
        conn.quit = true;
        Ok(Reply::Ok)
    }
}

/// `RESET`: the connection as it was when it opened.
pub struct Reset;

impl ConnectionCommand for Reset {
    const META: Meta = meta("RESET", 1, "Resets the connection.");

    fn parse(_: &[Bytes]) -> Result<Self, CmdError> {
        Ok(Reset)
    }

    fn run(self, conn: &mut ConnState, server: &Server) -> Result<Reply, CmdError> {
        // As Redis's: the connection is back to the default user, unauthenticated when the
        // node has users.
        *conn = ConnState {
            id: conn.id,
            peer: conn.peer,
            login: Login::initial(&server.users),
            ..ConnState::default()
        };
        Ok(Reply::Simple("RESET"))
    }
}

/// The error of a password given when no user needs one, as Redis's.
fn auth_without_password() -> CmdError {
    CmdError::err(
        "AUTH <password> called without any password configured for the default user. Are you \
         sure your configuration is correct?",
    )
}

/// Authenticates the connection as `user`: with no users configured, only Redis's
/// passwordless `default` user exists, and any password opens it.
fn authenticate(
    conn: &mut ConnState,
    server: &Server,
    user: &Bytes,
    password: &Bytes,
) -> Result<(), CmdError> {
    let wrong =
        || CmdError::Client("WRONGPASS invalid username-password pair or user is disabled.".into());
    if server.users.is_open() {
        // User names are case-sensitive, as Redis's.
        return if user.as_ref() == b"default" {
            Ok(())
        } else {
            Err(wrong())
        };
    }
    let role = server.users.check(user, password).map_err(|_| wrong())?;
    conn.login = Some(Login {
        name: String::from_utf8_lossy(user).into_owned(),
        role,
    });
    Ok(())
}

/// `AUTH [username] password`.
pub struct Auth {
    user: Option<Bytes>,
    password: Bytes,
}

impl ConnectionCommand for Auth {
    const META: Meta = meta("AUTH", -2, "Authenticates the connection.");

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        match args {
            [password] => Ok(Auth {
                user: None,
                password: password.clone(),
            }),
            [user, password] => Ok(Auth {
                user: Some(user.clone()),
                password: password.clone(),
            }),
            _ => Err(CmdError::syntax()),
        }
    }

    fn run(self, conn: &mut ConnState, server: &Server) -> Result<Reply, CmdError> {
        match self.user {
            None if server.users.is_open() => Err(auth_without_password()),
            // `AUTH password` authenticates as the `default` user, as Redis's.
            None => authenticate(
                conn,
                server,
                &Bytes::from_static(b"default"),
                &self.password,
            )
            .map(|()| Reply::Ok),
            Some(user) => authenticate(conn, server, &user, &self.password).map(|()| Reply::Ok),
        }
    }
}

/// `HELLO [protover [AUTH username password] [SETNAME clientname]]`: switches the protocol
/// and answers what the server is.
pub struct Hello {
    protocol: Option<Protocol>,
    auth: Option<(Bytes, Bytes)>,
    name: Option<Bytes>,
}

impl ConnectionCommand for Hello {
    const META: Meta = meta("HELLO", -1, "Handshakes with the server.");

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        let mut hello = Hello {
            protocol: None,
            auth: None,
            name: None,
        };
        let Some((version, mut rest)) = args.split_first() else {
            return Ok(hello);
        };
        hello.protocol = Some(
            match text(version).ok().and_then(|v| v.parse::<i64>().ok()) {
                Some(2) => Protocol::Resp2,
                Some(3) => Protocol::Resp3,
                Some(_) => {
                    return Err(CmdError::Client(
                        "NOPROTO unsupported protocol version".into(),
                    ));
                }
                None => {
                    return Err(CmdError::err(
                        "Protocol version is not an integer or out of range",
                    ));
                }
            },
        );
        while let Some((option, tail)) = rest.split_first() {
            match tail {
                [user, password, more @ ..] if is(option, "AUTH") => {
                    hello.auth = Some((user.clone(), password.clone()));
                    rest = more;
                }
                [name, more @ ..] if is(option, "SETNAME") => {
                    hello.name = Some(name.clone());
                    rest = more;
                }
                _ => {
                    return Err(CmdError::err(format!(
                        "Syntax error in HELLO option '{}'",
                        String::from_utf8_lossy(option)
                    )));
                }
            }
        }
        Ok(hello)
    }

    fn run(self, conn: &mut ConnState, server: &Server) -> Result<Reply, CmdError> {
        match &self.auth {
            Some((user, password)) => authenticate(conn, server, user, password)?,
            None if conn.login.is_none() => {
                return Err(CmdError::Client(
                    "NOAUTH HELLO must be called with the client already authenticated, \
                     otherwise the HELLO <proto> AUTH <user> <pass> option can be used to \
                     authenticate the client and select the RESP protocol version at the same \
                     time"
                        .into(),
                ));
            }
            None => {}
        }
        if let Some(name) = &self.name {
            check_name(name)?;
        }
        if let Some(protocol) = self.protocol {
            conn.protocol = protocol;
        }
        if let Some(name) = self.name {
            conn.name = (!name.is_empty()).then_some(name);
        }
        let proto = match conn.protocol {
            Protocol::Resp2 => 2,
            Protocol::Resp3 => 3,
        };
        Ok(Reply::Map(vec![
            (Reply::bulk("server"), Reply::bulk("redis")),
            (Reply::bulk("version"), Reply::bulk(REDIS_VERSION)),
            (Reply::bulk("proto"), Reply::Integer(proto)),
            (Reply::bulk("id"), Reply::Integer(conn.id as i64)),
            (Reply::bulk("mode"), Reply::bulk("standalone")),
            (Reply::bulk("role"), Reply::bulk("master")),
            (Reply::bulk("modules"), Reply::Array(Vec::new())),
        ]))
    }
}

/// Redis's rule for client names: no spaces, newlines or other special characters.
fn check_name(name: &Bytes) -> Result<(), CmdError> {
    if name.iter().all(|&b| (b'!'..=b'~').contains(&b)) {
        Ok(())
    } else {
        Err(CmdError::err(
            "Client names cannot contain spaces, newlines or special characters.",
        ))
    }
}

/// `SELECT 0`: quorumkv has one database.
pub struct Select;

impl DataCommand for Select {
    const META: Meta = meta("SELECT", 2, "Changes the selected database.");

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        match text(&args[0]).ok().and_then(|t| t.parse::<i64>().ok()) {
            Some(0) => Ok(Select),
            Some(_) => Err(CmdError::err(
                "DB index is out of range (quorumkv has one database, 0)",
            )),
            None => Err(CmdError::not_an_integer()),
        }
    }

    async fn run(self, _: &Ctx<'_>) -> Result<Reply, CmdError> {
        Ok(Reply::Ok)
    }
}

/// `CLIENT SETNAME | GETNAME | SETINFO | ID | INFO | LIST | NO-EVICT | NO-TOUCH`.
pub struct Client {
    sub: ClientSub,
}

enum ClientSub {
    SetName(Bytes),
    GetName,
    SetInfo(bool, Bytes),
    Id,
    Info,
    Ok,
}

impl ConnectionCommand for Client {
    const META: Meta = meta("CLIENT", -2, "A container for client connection commands.");

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        let sub = &args[0];
        let name = String::from_utf8_lossy(sub).to_uppercase();
        let arity = |n: usize| {
            if args.len() == n {
                Ok(())
            } else {
                Err(CmdError::Client(format!(
                    "ERR wrong number of arguments for 'client|{}' command",
                    name.to_lowercase()
                )))
            }
        };
        let sub = match name.as_str() {
            "SETNAME" => {
                arity(2)?;
                check_name(&args[1])?;
                ClientSub::SetName(args[1].clone())
            }
            "GETNAME" => arity(1).map(|()| ClientSub::GetName)?,
            "SETINFO" => {
                arity(3)?;
                let lib_name = if is(&args[1], "LIB-NAME") {
                    true
                } else if is(&args[1], "LIB-VER") {
                    false
                } else {
                    return Err(CmdError::err(format!(
                        "Unrecognized option '{}'",
                        String::from_utf8_lossy(&args[1])
                    )));
                };
                check_name(&args[2])?;
                ClientSub::SetInfo(lib_name, args[2].clone())
            }
            "ID" => arity(1).map(|()| ClientSub::Id)?,
            "INFO" | "LIST" => ClientSub::Info,
            // Settings of Redis's own memory and LRU bookkeeping: nothing to change here.
            "NO-EVICT" | "NO-TOUCH" => arity(2).map(|()| ClientSub::Ok)?,
            _ => {
                return Err(CmdError::err(format!(
                    "unknown subcommand '{}'. Try CLIENT HELP.",
                    String::from_utf8_lossy(sub)
                )));
            }
        };
        Ok(Client { sub })
    }

    fn run(self, conn: &mut ConnState, _: &Server) -> Result<Reply, CmdError> {
        Ok(match self.sub {
            ClientSub::SetName(name) => {
                conn.name = (!name.is_empty()).then_some(name);
                Reply::Ok
            }
            ClientSub::GetName => conn.name.clone().map_or(Reply::Nil, Reply::Bulk),
            ClientSub::SetInfo(lib_name, value) => {
                if lib_name {
                    conn.lib.0 = Some(value);
                } else {
                    conn.lib.1 = Some(value);
                }
                Reply::Ok
            }
            ClientSub::Id => Reply::Integer(conn.id as i64),
            ClientSub::Info => Reply::Bulk(Bytes::from(client_line(conn))),
            ClientSub::Ok => Reply::Ok,
        })
    }
}

/// This connection as `CLIENT INFO` describes it.
fn client_line(conn: &ConnState) -> String {
    let lossy = |b: &Option<Bytes>| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
    format!(
        "id={} addr={} laddr= fd=0 name={} age=0 idle=0 flags={} db=0 sub=0 psub=0 ssub=0 \
         multi={} qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 \
         tot-mem=0 events=r cmd=client|info user=default redir=-1 resp={} lib-name={} \
         lib-ver={}\n",
        conn.id,
        conn.peer.map(|p| p.to_string()).unwrap_or_default(),
        lossy(&conn.name).unwrap_or_default(),
        if conn.multi.is_some() { "x" } else { "N" },
        conn.multi.as_ref().map_or(-1, |m| m.queued.len() as i64),
        match conn.protocol {
            Protocol::Resp2 => 2,
            Protocol::Resp3 => 3,
        },
        lossy(&conn.lib.0).unwrap_or_default(),
        lossy(&conn.lib.1).unwrap_or_default(),
    )
}

/// `COMMAND [COUNT | LIST | INFO name... | DOCS [name...]]`.
pub struct Command {
    sub: CommandSub,
}

enum CommandSub {
    All,
    Count,
    List,
    Info(Vec<Bytes>),
    Docs(Vec<Bytes>),
}

impl DataCommand for Command {
    const META: Meta = meta(
        "COMMAND",
        -1,
        "Returns detailed information about all commands.",
    );

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        let sub = match args.split_first() {
            None => CommandSub::All,
            Some((sub, rest)) if is(sub, "COUNT") => {
                if !rest.is_empty() {
                    return Err(CmdError::Client(
                        "ERR wrong number of arguments for 'command|count' command".into(),
                    ));
                }
                CommandSub::Count
            }
            Some((sub, _)) if is(sub, "LIST") => CommandSub::List,
            Some((sub, rest)) if is(sub, "INFO") => CommandSub::Info(rest.to_vec()),
            Some((sub, rest)) if is(sub, "DOCS") => CommandSub::Docs(rest.to_vec()),
            Some((sub, _)) => {
                return Err(CmdError::err(format!(
                    "unknown subcommand '{}'. Try COMMAND HELP.",
                    String::from_utf8_lossy(sub)
                )));
            }
        };
        Ok(Command { sub })
    }

    async fn run(self, _: &Ctx<'_>) -> Result<Reply, CmdError> {
        let table = super::TABLE;
        let named = |names: &[Bytes]| -> Vec<Option<&'static Spec>> {
            names
                .iter()
                .map(|n| crate::resp::command::lookup(n))
                .collect()
        };
        Ok(match self.sub {
            CommandSub::All => Reply::Array(table.iter().map(info).collect()),
            CommandSub::Count => Reply::Integer(table.len() as i64),
            CommandSub::List => Reply::Array(
                table
                    .iter()
                    .map(|s| Reply::bulk(s.meta.name.to_lowercase()))
                    .collect(),
            ),
            CommandSub::Info(names) if names.is_empty() => {
                Reply::Array(table.iter().map(info).collect())
            }
            CommandSub::Info(names) => Reply::Array(
                named(&names)
                    .into_iter()
                    .map(|s| s.map_or(Reply::Nil, info))
                    .collect(),
            ),
            CommandSub::Docs(names) => {
                let specs: Vec<&Spec> = if names.is_empty() {
                    table.iter().collect()
                } else {
                    named(&names).into_iter().flatten().collect()
                };
                Reply::Map(specs.into_iter().map(docs).collect())
            }
        })
    }
}

/// A command as `COMMAND INFO` describes it (Redis 7's ten fields).
fn info(spec: &Spec) -> Reply {
    let m = &spec.meta;
    let mut flags = vec![Reply::Simple(m.access.flag())];
    if matches!(spec.run, crate::resp::command::Run::Connection(_)) {
        flags.push(Reply::Simple("noscript"));
    }
    let (first, last, step) = (m.keys.first as i64, m.keys.last as i64, m.keys.step as i64);
    let category = match m.access {
        crate::resp::command::Access::None => "@connection",
        crate::resp::command::Access::Read => "@read",
        crate::resp::command::Access::Write => "@write",
        crate::resp::command::Access::Admin => "@admin",
    };
    Reply::Array(vec![
        Reply::bulk(m.name.to_lowercase()),
        Reply::Integer(i64::from(m.arity)),
        Reply::Set(flags),
        Reply::Integer(first),
        Reply::Integer(if m.keys.first == 0 { 0 } else { last }),
        Reply::Integer(if m.keys.first == 0 { 0 } else { step }),
        Reply::Set(vec![Reply::Simple(category)]),
        Reply::Array(Vec::new()),
        Reply::Array(Vec::new()),
        Reply::Array(Vec::new()),
    ])
}

/// A command as `COMMAND DOCS` describes it.
fn docs(spec: &Spec) -> (Reply, Reply) {
    let m = &spec.meta;
    (
        Reply::bulk(m.name.to_lowercase()),
        Reply::Map(vec![
            (Reply::bulk("summary"), Reply::bulk(m.summary)),
            (Reply::bulk("since"), Reply::bulk("1.0.0")),
            (Reply::bulk("group"), Reply::bulk(m.group)),
        ]),
    )
}

/// `INFO [section ...]`: Redis's sections with this node's figures, and a `cluster` section
/// naming this node and its members.
pub struct Info {
    sections: Vec<String>,
}

/// The sections `INFO` knows, in the order it writes them.
const SECTIONS: [&str; 8] = [
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "keyspace",
    "cluster",
];

impl DataCommand for Info {
    const META: Meta = meta(
        "INFO",
        -1,
        "Returns information and statistics about the server.",
    );

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        let sections = args
            .iter()
            .map(|a| String::from_utf8_lossy(a).to_lowercase())
            .collect();
        Ok(Info { sections })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let all = self.sections.is_empty()
            || self
                .sections
                .iter()
                .any(|s| s == "all" || s == "everything" || s == "default");
        let mut text = String::new();
        for section in SECTIONS {
            if all || self.sections.iter().any(|s| s == section) {
                if !text.is_empty() {
                    text.push_str("\r\n");
                }
                write_section(&mut text, section, ctx);
            }
        }
        Ok(Reply::Bulk(Bytes::from(text)))
    }
}

fn human(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.2}G", bytes as f64 / f64::from(1u32 << 30))
    } else if bytes >= 1 << 20 {
        format!("{:.2}M", bytes as f64 / f64::from(1u32 << 20))
    } else {
        format!("{:.2}K", bytes as f64 / 1024.0)
    }
}

fn write_section(out: &mut String, section: &str, ctx: &Ctx<'_>) {
    use std::sync::atomic::Ordering::Relaxed;
    let server = ctx.server;
    let c = ctx.coordinator;
    let stats = &server.stats;
    let uptime = server.started.elapsed().as_secs();
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut line = |k: &str, v: &dyn std::fmt::Display| fields.push((k.into(), v.to_string()));
    let title = match section {
        "server" => {
            line("redis_version", &REDIS_VERSION);
            line("quorumkv_version", &env!("CARGO_PKG_VERSION"));
            line("redis_mode", &"standalone");
            line("os", &std::env::consts::OS);
            line("arch_bits", &(usize::BITS));
            line("process_id", &std::process::id());
            line("tcp_port", &server.addr.map_or(0, |a| a.port()));
            line("uptime_in_seconds", &uptime);
            line("uptime_in_days", &(uptime / 86_400));
            line("node", &c.me());
            "Server"
        }
        "clients" => {
            line("connected_clients", &stats.connected_clients.load(Relaxed));
            line("blocked_clients", &0);
            line("maxclients", &10_000);
            "Clients"
        }
        "memory" => {
            let used = c.memory_used();
            let rss = crate::metrics::resident_bytes();
            let max = c.defaults().max_memory_bytes;
            line("used_memory", &used);
            line("used_memory_human", &human(used));
            line("used_memory_rss", &rss);
            line("used_memory_rss_human", &human(rss));
            // What the allocator has handed out (what the limit's calibration reads), and the
            // store's own estimate of its data before the calibration scales it.
            if let Some(allocated) = crate::alloc::allocated() {
                line("allocator_allocated", &allocated);
                let ratio = rss as f64 / allocated.max(1) as f64;
                line("mem_fragmentation_ratio", &format!("{ratio:.2}"));
            }
            line("used_memory_estimate", &c.store().memory_used());
            line("maxmemory", &max);
            line("maxmemory_human", &human(max));
            line("maxmemory_policy", &c.defaults().eviction.name());
            line("evicted_keys", &c.metrics().evictions.get());
            "Memory"
        }
        "persistence" => {
            // The durable log plays the part of Redis's append-only file.
            let log = c.store().journal().map(|j| j.log().clone());
            line("loading", &0);
            line("rdb_bgsave_in_progress", &0);
            line("aof_enabled", &u8::from(log.is_some()));
            if let Some(log) = log {
                line("aof_current_size", &log.bytes_on_disk());
                let status = if log.error().is_none() { "ok" } else { "err" };
                line("aof_last_write_status", &status);
            }
            "Persistence"
        }
        "stats" => {
            line(
                "total_connections_received",
                &stats.total_connections_received.load(Relaxed),
            );
            line(
                "total_commands_processed",
                &stats.total_commands_processed.load(Relaxed),
            );
            line("keyspace_hits", &stats.keyspace_hits.load(Relaxed));
            line("keyspace_misses", &stats.keyspace_misses.load(Relaxed));
            line("evicted_keys", &c.metrics().evictions.get());
            "Stats"
        }
        "replication" => {
            line("role", &"master");
            line("connected_slaves", &0);
            "Replication"
        }
        "keyspace" => {
            let (keys, expires) = c.store().typed_counts(c.now_ms());
            if keys > 0 {
                line("db0", &format!("keys={keys},expires={expires},avg_ttl=0"));
            }
            "Keyspace"
        }
        _ => {
            let view = c.cluster_view();
            line("cluster_enabled", &0);
            line("node", &view.me);
            line("members", &view.members.len());
            for m in &view.members {
                line(
                    &format!("member_{}", m.info.id),
                    &format!(
                        "zone={},state={},peer={},http={},resp={}",
                        m.info.zone,
                        m.state.as_str(),
                        m.info.peer,
                        m.info.http,
                        m.info.resp
                    ),
                );
            }
            "Cluster"
        }
    };
    let _ = write!(out, "# {title}\r\n");
    for (k, v) in fields {
        let _ = write!(out, "{k}:{v}\r\n");
    }
}

/// `CONFIG GET pattern... | SET parameter value... | RESETSTAT | REWRITE`.
pub struct Config {
    sub: ConfigSub,
}

enum ConfigSub {
    Get(Vec<Bytes>),
    Set(Vec<(Bytes, Bytes)>),
    ResetStat,
    Rewrite,
}

impl DataCommand for Config {
    const META: Meta = Meta::new(
        "CONFIG",
        -2,
        Access::Admin,
        Keys::NONE,
        "server",
        "A container for server configuration commands.",
    );

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        let (sub, rest) = args.split_first().ok_or_else(CmdError::syntax)?;
        let arity = |name: &str| {
            CmdError::Client(format!(
                "ERR wrong number of arguments for 'config|{name}' command"
            ))
        };
        let sub = if is(sub, "GET") {
            if rest.is_empty() {
                return Err(arity("get"));
            }
            ConfigSub::Get(rest.to_vec())
        } else if is(sub, "SET") {
            if rest.is_empty() || rest.len() % 2 != 0 {
                return Err(arity("set"));
            }
            ConfigSub::Set(
                rest.chunks(2)
                    .map(|p| (p[0].clone(), p[1].clone()))
                    .collect(),
            )
        } else if is(sub, "RESETSTAT") {
            ConfigSub::ResetStat
        } else if is(sub, "REWRITE") {
            ConfigSub::Rewrite
        } else {
            return Err(CmdError::err(format!(
                "unknown subcommand '{}'. Try CONFIG HELP.",
                String::from_utf8_lossy(sub)
            )));
        };
        Ok(Config { sub })
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Reply, CmdError> {
        let params = parameters(ctx);
        Ok(match self.sub {
            ConfigSub::Get(patterns) => Reply::Map(
                params
                    .iter()
                    .filter(|(name, _)| {
                        patterns
                            .iter()
                            .any(|p| matches(&p.to_ascii_lowercase(), name.as_bytes()))
                    })
                    .map(|(name, value)| (Reply::bulk(name), Reply::bulk(value)))
                    .collect(),
            ),
            ConfigSub::Set(pairs) => {
                for (name, value) in &pairs {
                    let name = String::from_utf8_lossy(name).to_lowercase();
                    if let Some((_, current)) = params.iter().find(|(n, _)| *n == name)
                        && current.as_bytes() != &value[..]
                    {
                        return Err(CmdError::err(format!(
                            "CONFIG SET {name} is not supported here: quorumkv takes it from \
                             the cluster file (it is {current}); change it there and restart"
                        )));
                    }
                }
                // Parameters quorumkv does not have only tune Redis's internals.
                Reply::Ok
            }
            ConfigSub::ResetStat => {
                ctx.server.stats.reset();
                Reply::Ok
            }
            ConfigSub::Rewrite => Reply::Ok,
        })
    }
}

/// The parameters `CONFIG GET` shows, with this node's values.
fn parameters(ctx: &Ctx<'_>) -> Vec<(&'static str, String)> {
    let d = ctx.coordinator.defaults();
    let port = ctx.server.addr.map_or(0, |a| a.port());
    let bind = ctx
        .server
        .addr
        .map_or(String::new(), |a| a.ip().to_string());
    vec![
        ("maxmemory", d.max_memory_bytes.to_string()),
        ("maxmemory-policy", d.eviction.name().into()),
        ("databases", "1".into()),
        ("port", port.to_string()),
        ("bind", bind),
        ("appendonly", "no".into()),
        ("save", String::new()),
        ("timeout", "0".into()),
        ("maxclients", "10000".into()),
        ("proto-max-bulk-len", d.max_value_bytes.to_string()),
        ("cluster-enabled", "no".into()),
        ("notify-keyspace-events", String::new()),
    ]
}

/// `TIME`: the node's clock, seconds and microseconds.
pub struct Time;

impl DataCommand for Time {
    const META: Meta = meta("TIME", 1, "Returns the server time.");

    fn parse(_: &[Bytes]) -> Result<Self, CmdError> {
        Ok(Time)
    }

    async fn run(self, _: &Ctx<'_>) -> Result<Reply, CmdError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Ok(Reply::Array(vec![
            Reply::bulk(now.as_secs().to_string()),
            Reply::bulk(now.subsec_micros().to_string()),
        ]))
    }
}

/// `FUNCTION FLUSH | LIST`: quorumkv has no functions.
pub struct Function {
    list: bool,
}

impl DataCommand for Function {
    const META: Meta = meta("FUNCTION", -2, "A container for function commands.");

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        if is(&args[0], "FLUSH") {
            Ok(Function { list: false })
        } else if is(&args[0], "LIST") {
            Ok(Function { list: true })
        } else {
            Err(CmdError::err(format!(
                "unknown subcommand '{}': quorumkv has no functions (FUNCTION FLUSH and LIST \
                 only)",
                String::from_utf8_lossy(&args[0])
            )))
        }
    }

    async fn run(self, _: &Ctx<'_>) -> Result<Reply, CmdError> {
        Ok(if self.list {
            Reply::Array(Vec::new())
        } else {
            Reply::Ok
        })
    }
}

/// `QUORUM n w r`: N, W and R for every later command of this connection.
pub struct Quorum(Consistency);

impl ConnectionCommand for Quorum {
    const META: Meta = meta(
        "QUORUM",
        4,
        "Sets N, W and R for the connection (quorumkv).",
    );

    fn parse(args: &[Bytes]) -> Result<Self, CmdError> {
        let mut c = Consistency::default();
        for (name, value) in ["n", "w", "r"].iter().zip(args) {
            c.set(name, text(value)?)?;
        }
        Ok(Quorum(c))
    }

    fn run(self, conn: &mut ConnState, server: &Server) -> Result<Reply, CmdError> {
        // Checked against the cluster now, so a bad setting fails here, not on each command.
        server.coordinator.plan(&self.0)?;
        conn.consistency = Consistency {
            timeout_ms: conn.consistency.timeout_ms,
            sloppy: conn.consistency.sloppy,
            ..self.0
        };
        Ok(Reply::Ok)
    }
}
