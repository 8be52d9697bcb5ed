//! The `quorumkv` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use quorumkv::config::Config;
use quorumkv::storage::{Key, Kind};

#[derive(Parser)]
#[command(
    name = "quorumkv",
    version,
    about = "A leaderless, Dynamo-style key-value store"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Shows the ring a cluster file describes: each node's share, and where keys live.
    Ring {
        /// The cluster file.
        #[arg(long, default_value = "cluster.toml")]
        config: PathBuf,
        /// Replicas per key for the preference lists shown.
        #[arg(long)]
        n: Option<usize>,
        /// Keys (in the /kv key space) whose preference lists to show.
        #[arg(long = "key")]
        keys: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Ring { config, n, keys } => match show_ring(&config, n, &keys) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("quorumkv: {e}");
                ExitCode::from(2)
            }
        },
    }
}

fn show_ring(path: &std::path::Path, n: Option<usize>, keys: &[String]) -> Result<(), String> {
    let config = Config::load(path).map_err(|e| e.to_string())?;
    let ring = config.ring().map_err(|e| e.to_string())?;
    let n = n.unwrap_or(config.cluster.replicas as usize);
    println!(
        "{:<12} {:<12} {:>6} {:>8}",
        "node", "zone", "vnodes", "share"
    );
    let shares = ring.shares();
    for m in ring.members() {
        println!(
            "{:<12} {:<12} {:>6} {:>7.2}%",
            m.id,
            m.zone,
            m.vnodes,
            shares[m.id.as_str()] * 100.0
        );
    }
    for key in keys {
        let pos = Key::new(Kind::Kv, key.clone()).position();
        let list = ring.preference_list(pos, n);
        let names: Vec<String> = list
            .replicas
            .iter()
            .map(|m| format!("{} ({})", m.id, m.zone))
            .collect();
        println!("/kv/{key} at {pos:#018x}: {}", names.join(", "));
    }
    Ok(())
}
