//! The data commands of the `quorumkv` binary: `get`, `put`, `delete`, `incr`, `sadd`, `srem`,
//! `smembers`. Each one is a single request through [`Client`], printed for a person (values on
//! stdout, contexts and notes on stderr) or, with `--json`, as one JSON object on stdout. And
//! the operator's `admin remove`.
//!
//! Exit codes: 0 success, 1 not found (`get` of a missing key), 2 any error.

pub mod changes;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value as Json, json};

use crate::client::{Access, Client, ClientError, Credentials, KvRead};
use crate::ops::{Consistency, MAX_TIMEOUT_MS};

/// Who a command authenticates as, and which CA it trusts for `https://` nodes.
#[derive(Args, Debug, Clone, Default)]
pub struct LoginArgs {
    /// The user to authenticate as (HTTP Basic), for a cluster with users.
    #[arg(long, env = "QUORUMKV_USER")]
    pub user: Option<String>,
    /// The user's password (better: the QUORUMKV_PASSWORD environment variable, which no
    /// process listing shows).
    #[arg(long, env = "QUORUMKV_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// The cluster CA certificate, for nodes with `client_tls` (https://): the ca.pem of
    /// the cluster's tls directory.
    #[arg(long, env = "QUORUMKV_CACERT")]
    pub cacert: Option<std::path::PathBuf>,
}

impl LoginArgs {
    /// The client's access settings.
    pub fn access(&self) -> Result<Access, ClientError> {
        Ok(Access {
            user: Credentials::from_parts(self.user.clone(), self.password.clone())?,
            ca_file: self.cacert.clone(),
        })
    }
}

/// Where a data command goes and with which consistency.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// The node to ask: http://HOST:PORT or HOST:PORT (any node coordinates any request).
    #[arg(long, env = "QUORUMKV_NODE", default_value = "http://127.0.0.1:8101")]
    pub node: String,
    /// Credentials and CA.
    #[command(flatten)]
    pub login: LoginArgs,
    /// N, W, R, timeout and sloppy of the request.
    #[command(flatten)]
    pub quorum: QuorumArgs,
    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The consistency options of every command that sends requests (the data commands and
/// `quorumkv bench`), as text: validated by [`QuorumArgs::consistency`].
#[derive(Args, Debug, Clone, Default)]
pub struct QuorumArgs {
    /// Replicas: an integer (default: the cluster's `replicas`).
    #[arg(long)]
    pub n: Option<String>,
    /// Write acks needed: an integer, one, quorum, all, local_quorum or each_quorum.
    #[arg(long)]
    pub w: Option<String>,
    /// Read answers needed: an integer, one, quorum, all, local_quorum or each_quorum.
    #[arg(long)]
    pub r: Option<String>,
    /// How long the node waits for replicas, 1 to 60000 ms.
    #[arg(long)]
    pub timeout_ms: Option<String>,
    /// true: hinted writes to fallback nodes count toward w; false: only the preference list.
    #[arg(long)]
    pub sloppy: Option<String>,
}

impl QuorumArgs {
    /// The settings, validated as the node would validate them.
    pub fn consistency(&self) -> Result<Consistency, String> {
        let mut c = Consistency::default();
        let given = [
            ("n", &self.n),
            ("w", &self.w),
            ("r", &self.r),
            ("timeout_ms", &self.timeout_ms),
            ("sloppy", &self.sloppy),
        ];
        for (name, value) in given {
            if let Some(value) = value {
                c.set(name, value).map_err(|e| format!("--{name}: {e}"))?;
            }
        }
        Ok(c)
    }
}

/// The key space a data command addresses: `/kv` (siblings and contexts), `/lww`
/// (last-write-wins), `/counter` or `/set`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    /// `/kv`: values with causal contexts; concurrent writes become siblings.
    Kv,
    /// `/lww`: one value per key; the latest write wins.
    Lww,
    /// `/counter`: a counter that merges the increments of every replica.
    Counter,
    /// `/set`: a set whose concurrent adds and removes merge.
    Set,
}

/// The data commands.
#[derive(Subcommand, Debug, Clone)]
pub enum DataCommand {
    /// Reads a key: a value, its siblings, a counter or a set.
    Get {
        /// The key to read.
        key: String,
        /// The node to ask and the consistency.
        #[command(flatten)]
        target: Target,
        /// The key space to read.
        #[arg(long = "type", value_enum, default_value = "kv")]
        space: Space,
    },
    /// Writes a value (`-` reads it from stdin).
    Put {
        /// The key to write.
        key: String,
        /// The node to ask and the consistency.
        #[command(flatten)]
        target: Target,
        /// The value, or `-` to read it from stdin.
        value: String,
        /// kv or lww.
        #[arg(long = "type", value_enum, default_value = "kv")]
        space: Space,
        /// /kv: the X-Context of an earlier read; the new value supersedes what it covers.
        #[arg(long)]
        context: Option<String>,
        /// Expire the value after this many seconds (at least 1).
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// Deletes a key (/kv: what --context covers, or what a read at r sees).
    Delete {
        /// The key to delete.
        key: String,
        /// The node to ask and the consistency.
        #[command(flatten)]
        target: Target,
        /// kv or lww.
        #[arg(long = "type", value_enum, default_value = "kv")]
        space: Space,
        /// /kv: the X-Context of an earlier read; the delete covers what that read saw.
        #[arg(long)]
        context: Option<String>,
    },
    /// Adds DELTA (default 1, may be negative) to a counter.
    #[command(allow_negative_numbers = true)]
    Incr {
        /// The counter to change.
        key: String,
        /// The node to ask and the consistency.
        #[command(flatten)]
        target: Target,
        /// The amount to add; negative subtracts.
        #[arg(default_value_t = 1)]
        delta: i64,
    },
    /// Adds members to a set.
    Sadd {
        /// The set to add to.
        key: String,
        /// The node to ask and the consistency.
        #[command(flatten)]
        target: Target,
        /// The members to add.
        #[arg(required = true)]
        members: Vec<String>,
    },
    /// Removes members from a set (the adds this removal has observed).
    Srem {
        /// The set to remove from.
        key: String,
        /// The node to ask and the consistency.
        #[command(flatten)]
        target: Target,
        /// The members to remove.
        #[arg(required = true)]
        members: Vec<String>,
    },
    /// Lists a set's members, sorted.
    Smembers {
        /// The set to list.
        key: String,
        /// The node to ask and the consistency.
        #[command(flatten)]
        target: Target,
    },
}

/// Operator commands on a running cluster.
#[derive(Subcommand, Debug, Clone)]
pub enum AdminCommand {
    /// Removes a dead member for good: every member then shows it `left`, and its ring share
    /// goes to the others. Only a member the asked node sees `dead` can be removed (stop it
    /// first, or let it leave); if its process starts again later, it joins as a new member.
    Remove {
        /// The id of the dead member, as /admin/status lists it.
        #[arg(value_name = "NODE")]
        id: String,
        /// The node to ask: http://HOST:PORT or HOST:PORT (any member).
        #[arg(
            long,
            value_name = "URL",
            env = "QUORUMKV_NODE",
            default_value = "http://127.0.0.1:8101"
        )]
        node: String,
        /// Credentials (an admin's) and CA.
        #[command(flatten)]
        login: LoginArgs,
    },
}

/// Runs one admin command.
pub async fn admin(command: AdminCommand) -> Outcome {
    let mut o = Outcome::default();
    match command {
        AdminCommand::Remove { id, node, login } => {
            let client = login
                .access()
                .and_then(|access| Client::connect(&node, Duration::from_secs(10), &access));
            let result = match client {
                Ok(client) => client.remove_member(&id).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => o.out(format!(
                    "{id} removed: it is left on every member within seconds, and its ring \
                     share goes to the others\n"
                )),
                Err(e) => fail(&mut o, false, &e),
            }
        }
    }
    o
}

/// What a command printed and how it ended.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// What goes to stdout: values, or with `--json` the one JSON object (errors too).
    pub stdout: Vec<u8>,
    /// What goes to stderr: contexts, notes and errors for a person; empty with `--json`.
    pub stderr: String,
    /// The exit code: 0 success, 1 not found, 2 any error.
    pub code: u8,
}

impl Outcome {
    fn out(&mut self, text: impl AsRef<[u8]>) {
        self.stdout.extend_from_slice(text.as_ref());
    }

    fn note(&mut self, text: &str) {
        self.stderr.push_str(text);
        self.stderr.push('\n');
    }

    fn json(&mut self, value: Json) {
        self.out(value.to_string());
        self.out("\n");
    }
}

impl DataCommand {
    /// The node and consistency the command was given.
    pub fn target(&self) -> &Target {
        match self {
            DataCommand::Get { target, .. }
            | DataCommand::Put { target, .. }
            | DataCommand::Delete { target, .. }
            | DataCommand::Incr { target, .. }
            | DataCommand::Sadd { target, .. }
            | DataCommand::Srem { target, .. }
            | DataCommand::Smembers { target, .. } => target,
        }
    }
}

/// Runs one data command.
pub async fn run(command: DataCommand) -> Outcome {
    let target = command.target().clone();
    let target = &target;
    let mut o = Outcome::default();
    let c = match target.quorum.consistency() {
        Ok(c) => c,
        Err(e) => {
            fail(&mut o, target.json, &ClientError::Invalid(e));
            return o;
        }
    };
    // The node gives up at timeout_ms; the client waits a little longer for its answer.
    let wait = c.timeout_ms.unwrap_or(MAX_TIMEOUT_MS) + 5_000;
    let client = target
        .login
        .access()
        .and_then(|access| Client::connect(&target.node, Duration::from_millis(wait), &access));
    let client = match client {
        Ok(client) => client,
        Err(e) => {
            fail(&mut o, target.json, &e);
            return o;
        }
    };
    if let Err(e) = execute(&client, command, &c, target.json, &mut o).await {
        fail(&mut o, target.json, &e);
    }
    o
}

async fn execute(
    client: &Client,
    command: DataCommand,
    c: &Consistency,
    json: bool,
    o: &mut Outcome,
) -> Result<(), ClientError> {
    match command {
        DataCommand::Get { key, space, .. } => match space {
            Space::Kv => print_kv(client.kv_get(&key, c).await?, json, o),
            Space::Lww => match client.lww_get(&key, c).await? {
                Some(v) if json => o.json(json!({ "found": true, "value": text_or_base64(&v) })),
                Some(v) => print_value(o, &v),
                None => not_found(o, json),
            },
            Space::Counter => {
                let v = client.counter_get(&key, c).await?;
                if json {
                    o.json(json!({ "value": v }));
                } else {
                    o.out(format!("{v}\n"));
                }
            }
            Space::Set => print_members(client.set_get(&key, c).await?, json, o),
        },
        DataCommand::Put {
            key,
            value,
            space,
            context,
            ttl,
            ..
        } => {
            let value = read_value(&value)?;
            match space {
                Space::Kv => {
                    let ctx = client
                        .kv_put(&key, value, context.as_deref(), ttl, c)
                        .await?;
                    done(o, json, ctx.as_deref());
                }
                Space::Lww => {
                    no_context(&context)?;
                    client.lww_put(&key, value, ttl, c).await?;
                    done(o, json, None);
                }
                other => return Err(wrong_space("put", other)),
            }
        }
        DataCommand::Delete {
            key,
            space,
            context,
            ..
        } => {
            match space {
                Space::Kv => client.kv_delete(&key, context.as_deref(), c).await?,
                Space::Lww => {
                    no_context(&context)?;
                    client.lww_delete(&key, c).await?;
                }
                other => return Err(wrong_space("delete", other)),
            }
            done(o, json, None);
        }
        DataCommand::Incr { key, delta, .. } => {
            client.counter_add(&key, delta, c).await?;
            done(o, json, None);
        }
        DataCommand::Sadd { key, members, .. } => {
            let add: Vec<&str> = members.iter().map(String::as_str).collect();
            client.set_update(&key, &add, &[], c).await?;
            done(o, json, None);
        }
        DataCommand::Srem { key, members, .. } => {
            let remove: Vec<&str> = members.iter().map(String::as_str).collect();
            client.set_update(&key, &[], &remove, c).await?;
            done(o, json, None);
        }
        DataCommand::Smembers { key, .. } => print_members(client.set_get(&key, c).await?, json, o),
    }
    Ok(())
}

/// `-` means stdin, anything else is the value itself.
fn read_value(value: &str) -> Result<Bytes, ClientError> {
    if value != "-" {
        return Ok(Bytes::from(value.to_string()));
    }
    let mut buf = Vec::new();
    std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
        .map_err(|e| ClientError::Invalid(format!("cannot read the value from stdin: {e}")))?;
    Ok(Bytes::from(buf))
}

fn no_context(context: &Option<String>) -> Result<(), ClientError> {
    match context {
        Some(_) => Err(ClientError::Invalid(
            "--context applies to --type kv only; lww keys need none".into(),
        )),
        None => Ok(()),
    }
}

fn wrong_space(command: &str, space: Space) -> ClientError {
    let hint = match space {
        Space::Counter => "use incr for counters",
        _ => "use sadd and srem for sets",
    };
    ClientError::Invalid(format!("{command} works on --type kv or lww; {hint}"))
}

fn print_kv(read: KvRead, json: bool, o: &mut Outcome) {
    if json {
        let values: Vec<Json> = read.values.iter().map(|v| text_or_base64(v)).collect();
        o.json(json!({
            "found": !read.values.is_empty(),
            "values": values,
            "context": read.context,
        }));
        if read.values.is_empty() {
            o.code = 1;
        }
        return;
    }
    match read.values.as_slice() {
        [] => not_found(o, false),
        [one] => print_value(o, one),
        many => {
            o.out(format!(
                "{} siblings (resolve by writing with the context):\n",
                many.len()
            ));
            for (i, v) in many.iter().enumerate() {
                o.out(format!("{}) {}\n", i + 1, quoted(v)));
            }
        }
    }
    if let Some(ctx) = &read.context {
        o.note(&format!("context: {ctx}"));
    }
}

fn print_members(members: Vec<String>, json: bool, o: &mut Outcome) {
    if json {
        o.json(json!({ "members": members }));
    } else if members.is_empty() {
        o.note("(empty set)");
    } else {
        for m in members {
            o.out(format!("{m}\n"));
        }
    }
}

/// The value as it is, ending in a newline so the prompt starts on its own line.
fn print_value(o: &mut Outcome, v: &[u8]) {
    o.out(v);
    if !v.ends_with(b"\n") {
        o.out("\n");
    }
}

fn not_found(o: &mut Outcome, json: bool) {
    if json {
        o.json(json!({ "found": false }));
    } else {
        o.note("(not found)");
    }
    o.code = 1;
}

fn done(o: &mut Outcome, json: bool, context: Option<&str>) {
    if json {
        o.json(match context {
            Some(ctx) => json!({ "ok": true, "context": ctx }),
            None => json!({ "ok": true }),
        });
    } else {
        o.out("OK\n");
        if let Some(ctx) = context {
            o.note(&format!("context: {ctx}"));
        }
    }
}

fn fail(o: &mut Outcome, json: bool, e: &ClientError) {
    o.code = 2;
    if !json {
        let detail = match e {
            ClientError::Api {
                needed: Some(needed),
                acks: Some(acks),
                ..
            } => format!(" [needed {needed}, acks {acks}]"),
            _ => String::new(),
        };
        o.note(&format!("error: {e}{detail}"));
        return;
    }
    let body = match e {
        ClientError::Api {
            status,
            code,
            message,
            needed,
            acks,
        } => {
            let mut body = json!({ "status": status, "error": code, "message": message });
            if let (Some(needed), Some(acks)) = (needed, acks) {
                body["needed"] = json!(needed);
                body["acks"] = json!(acks);
            }
            body
        }
        ClientError::Invalid(m) => json!({ "error": "invalid", "message": m }),
        ClientError::Connection { .. } => {
            json!({ "error": "connection", "message": e.to_string() })
        }
        ClientError::Protocol { .. } => json!({ "error": "protocol", "message": e.to_string() }),
    };
    o.json(body);
}

/// A value as JSON: a string when it is UTF-8, else `{"base64": ...}`.
fn text_or_base64(v: &[u8]) -> Json {
    match std::str::from_utf8(v) {
        Ok(s) => Json::from(s),
        Err(_) => json!({ "base64": STANDARD.encode(v) }),
    }
}

/// A sibling on one line: quoted text, or base64 for bytes that are not UTF-8.
fn quoted(v: &[u8]) -> String {
    match std::str::from_utf8(v) {
        Ok(s) => format!("{s:?}"),
        Err(_) => format!("base64:{}", STANDARD.encode(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            node: "127.0.0.1:1".into(),
            login: LoginArgs::default(),
            quorum: QuorumArgs::default(),
            json: false,
        }
    }

    #[test]
    fn consistency_is_validated_before_any_request() {
        let mut t = target();
        t.quorum.w = Some("most".into());
        let e = t.quorum.consistency().expect_err("bad w");
        assert!(e.starts_with("--w:"), "{e}");
        t.quorum.w = Some("all".into());
        t.quorum.timeout_ms = Some("0".into());
        assert!(t.quorum.consistency().is_err());
        t.quorum.timeout_ms = Some("250".into());
        let c = t.quorum.consistency().expect("valid");
        assert_eq!(c.timeout_ms, Some(250));
    }

    #[test]
    fn siblings_print_one_per_line_with_the_context_on_stderr() {
        let mut o = Outcome::default();
        let read = KvRead {
            values: vec![Bytes::from("blue"), Bytes::from_static(&[0xff, 0x00])],
            context: Some("CTX".into()),
        };
        print_kv(read, false, &mut o);
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "2 siblings (resolve by writing with the context):\n1) \"blue\"\n2) base64:/wA=\n"
        );
        assert!(o.stderr.contains("context: CTX"));
        assert_eq!(o.code, 0);
    }

    #[test]
    fn a_missing_key_exits_1_and_says_so_in_json() {
        let mut o = Outcome::default();
        print_kv(KvRead::default(), true, &mut o);
        assert_eq!(o.code, 1);
        let v: Json = serde_json::from_slice(&o.stdout).expect("json");
        assert_eq!(v["found"], false);
    }

    #[tokio::test]
    async fn admin_remove_of_an_unreachable_node_is_an_error_with_exit_code_2() {
        let o = admin(AdminCommand::Remove {
            id: "n3".into(),
            node: "127.0.0.1:1".into(),
            login: LoginArgs::default(),
        })
        .await;
        assert_eq!(o.code, 2);
        assert!(o.stdout.is_empty());
        assert!(o.stderr.starts_with("error: cannot reach"), "{}", o.stderr);
        assert!(o.stderr.contains("/admin/members/n3"), "{}", o.stderr);
    }

    #[tokio::test]
    async fn an_unreachable_node_is_an_error_with_exit_code_2() {
        // Port 1 on loopback: nothing listens there.
        let o = run(DataCommand::Get {
            key: "k".into(),
            space: Space::Kv,
            target: target(),
        })
        .await;
        assert_eq!(o.code, 2);
        assert!(o.stderr.contains("cannot reach"), "{}", o.stderr);
    }
}
