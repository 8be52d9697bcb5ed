//! The command table: every command the Redis front end serves, one entry each, in the order
//! `COMMAND` and the unknown-command error list them. A command is a type in the module of its
//! group that implements [`DataCommand`](super::command::DataCommand) or
//! [`ConnectionCommand`](super::command::ConnectionCommand); adding one is writing that type
//! and adding its entry here.

mod connection;
mod counters;
mod keys;
mod sets;
mod strings;

use bytes::Bytes;

use super::command::{Spec, connection, data};
use super::reply::CmdError;

/// Every command, by group.
pub static TABLE: &[Spec] = &[
    data::<connection::Ping>(),
    data::<connection::Echo>(),
    connection::<connection::Quit>(),
    data::<connection::Info>(),
    data::<connection::Select>(),
    data::<connection::Command>(),
    data::<connection::Client>(),
    data::<connection::Config>(),
    data::<strings::Get>(),
    data::<strings::Set>(),
    data::<keys::Del>(),
    data::<keys::Exists>(),
    data::<strings::MGet>(),
    data::<keys::Expire>(),
    data::<keys::PExpire>(),
    data::<keys::Ttl>(),
    data::<keys::PTtl>(),
    data::<counters::Incr>(),
    data::<counters::IncrBy>(),
    data::<counters::Decr>(),
    data::<counters::DecrBy>(),
    data::<counters::CounterGet>(),
    data::<sets::SAdd>(),
    data::<sets::SRem>(),
    data::<sets::SMembers>(),
    data::<sets::SIsMember>(),
    data::<sets::SCard>(),
    connection::<connection::Quorum>(),
];

/// Redis's error for a command it does not know, with the commands this server knows.
pub fn unknown_command(args: &[Bytes]) -> CmdError {
    let name = args
        .first()
        .map_or_else(String::new, |n| String::from_utf8_lossy(n).to_lowercase());
    let names: Vec<&str> = TABLE.iter().map(|spec| spec.meta.name).collect();
    CmdError::err(format!(
        "unknown command '{name}', with args beginning with: {}; quorumkv serves {}",
        args.iter()
            .skip(1)
            .take(3)
            .map(|a| format!("'{}'", String::from_utf8_lossy(a)))
            .collect::<Vec<_>>()
            .join(" "),
        names.join(" ")
    ))
}
