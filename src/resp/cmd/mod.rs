//! The command table: every command the Redis front end serves, one entry each, in the order
//! `COMMAND` and the unknown-command error list them. A command is a type in the module of its
//! group that implements [`DataCommand`](super::command::DataCommand) or
//! [`ConnectionCommand`](super::command::ConnectionCommand); adding one is writing that type
//! and adding its entry here.

mod connection;
mod counters;
mod hashes;
mod keys;
mod keyspace;
mod scan;
mod sets;
mod strings;
mod transaction;

pub use connection::REDIS_VERSION;

use bytes::Bytes;

use super::command::{Spec, connection, data};
use super::reply::CmdError;

/// Every command, by group.
pub static TABLE: &[Spec] = &[
    // Connection and server.
    connection::<connection::Hello>(),
    connection::<connection::Auth>(),
    data::<connection::Ping>(),
    data::<connection::Echo>(),
    connection::<connection::Quit>(),
    connection::<connection::Reset>(),
    data::<connection::Select>(),
    connection::<connection::Client>(),
    data::<connection::Command>(),
    data::<connection::Info>(),
    data::<connection::Config>(),
    data::<connection::Time>(),
    data::<connection::Function>(),
    // Strings.
    data::<strings::Get>(),
    data::<strings::Set>(),
    data::<strings::SetNx>(),
    data::<strings::SetExSeconds>(),
    data::<strings::PSetEx>(),
    data::<strings::GetSet>(),
    data::<strings::GetDel>(),
    data::<strings::GetEx>(),
    data::<strings::MGet>(),
    data::<strings::MSet>(),
    data::<strings::Append>(),
    data::<strings::StrLen>(),
    data::<strings::GetRange>(),
    data::<strings::SetRange>(),
    data::<strings::IncrOne>(),
    data::<strings::IncrBy>(),
    data::<strings::DecrOne>(),
    data::<strings::DecrBy>(),
    data::<strings::IncrByFloat>(),
    // Keys of any type.
    data::<keys::Del>(),
    data::<keys::Unlink>(),
    data::<keys::Exists>(),
    data::<keys::TypeOf>(),
    data::<keys::ExpireSeconds>(),
    data::<keys::PExpire>(),
    data::<keys::ExpireAt>(),
    data::<keys::PExpireAt>(),
    data::<keys::TtlOf>(),
    data::<keys::PTtlOf>(),
    data::<keys::Persist>(),
    // Sets.
    data::<sets::SAdd>(),
    data::<sets::SRem>(),
    data::<sets::SMembers>(),
    data::<sets::SIsMember>(),
    data::<sets::SMIsMember>(),
    data::<sets::SCard>(),
    data::<sets::SRandMember>(),
    data::<sets::SPop>(),
    data::<sets::SInter>(),
    data::<sets::SUnion>(),
    data::<sets::SDiff>(),
    data::<sets::SScan>(),
    // Hashes.
    data::<hashes::HSet>(),
    data::<hashes::HSetNx>(),
    data::<hashes::HMSet>(),
    data::<hashes::HGet>(),
    data::<hashes::HMGet>(),
    data::<hashes::HGetAll>(),
    data::<hashes::HDel>(),
    data::<hashes::HExists>(),
    data::<hashes::HLen>(),
    data::<hashes::HKeys>(),
    data::<hashes::HVals>(),
    data::<hashes::HStrLen>(),
    data::<hashes::HIncrBy>(),
    data::<hashes::HIncrByFloat>(),
    data::<hashes::HScan>(),
    // The whole keyspace.
    data::<keyspace::Scan>(),
    data::<keyspace::KeysMatching>(),
    data::<keyspace::DbSize>(),
    data::<keyspace::FlushAll>(),
    data::<keyspace::FlushDb>(),
    // Transactions.
    connection::<transaction::Multi>(),
    connection::<transaction::Exec>(),
    connection::<transaction::Discard>(),
    connection::<transaction::Watch>(),
    connection::<transaction::Unwatch>(),
    // quorumkv's own.
    connection::<connection::Quorum>(),
    data::<counters::CounterIncrBy>(),
    data::<counters::CounterGet>(),
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
