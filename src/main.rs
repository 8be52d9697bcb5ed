//! The `quorumkv` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: a node allocates small, short-lived buffers for
/// every request, and glibc's malloc took about 15% of a busy node's CPU (docs/benchmarks.md).
/// Counted, so that the memory limit follows what the data holds (`quorumkv::alloc`).
#[cfg(not(feature = "heap-profile"))]
#[global_allocator]
static ALLOCATOR: quorumkv::alloc::CountingMiMalloc = quorumkv::alloc::CountingMiMalloc;
/// With the `heap-profile` feature: dhat, so a node's live memory can be traced to where it
/// was allocated (`make heap-profile`).
#[cfg(feature = "heap-profile")]
#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;
use quorumkv::bench::BenchArgs;
use quorumkv::cli::{AdminCommand, DataCommand, Outcome};
use quorumkv::config::Config;
use quorumkv::process;
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
    /// Runs one node in the foreground until SIGTERM or SIGINT (then it leaves gracefully).
    Node {
        /// The cluster file.
        #[arg(long, default_value = "cluster.toml")]
        config: PathBuf,
        /// This node's id: one of the file's [[node]] entries.
        #[arg(long)]
        id: String,
        /// Join through the running member at HOST:PORT (its peer address).
        #[arg(long, value_name = "HOST:PORT")]
        join: Option<String>,
    },
    /// Creates whatever TLS material is missing: the cluster CA and one certificate per node.
    Certs {
        /// The cluster file.
        #[arg(long, default_value = "cluster.toml")]
        config: PathBuf,
    },
    /// Runs every node of a cluster file in the background (what `make cluster` uses).
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
        /// The cluster file.
        #[arg(long, default_value = "cluster.toml", global = true)]
        config: PathBuf,
    },
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
    /// Drives a running cluster with concurrent requests; prints throughput and latency.
    Bench(BenchArgs),
    /// Operator commands on a running cluster (exit code 0 on success, 2 on error).
    Admin {
        #[command(subcommand)]
        action: AdminCommand,
    },
    /// Prints a node's change feed as JSON lines, one per change, and follows it.
    Changes {
        /// The node: http://HOST:PORT or HOST:PORT.
        #[arg(long, env = "QUORUMKV_NODE", default_value = "http://127.0.0.1:8101")]
        node: String,
        /// Start after this event id (0: from the oldest change the node keeps; without it:
        /// from now on).
        #[arg(long)]
        since: Option<u64>,
        /// Credentials (a reader's is enough) and CA.
        #[command(flatten)]
        login: quorumkv::cli::LoginArgs,
    },
    /// Prints the argon2 hash of a password read from stdin, for a [[user]]'s
    /// password_hash (so the cluster file holds no password in the clear).
    HashPassword,
    #[command(flatten)]
    Data(DataCommand),
}

#[derive(Subcommand)]
enum ClusterAction {
    /// Starts every node (or one) in the background, waits for /health, prints the addresses.
    Start {
        /// Only this node.
        #[arg(long)]
        id: Option<String>,
    },
    /// SIGKILL to one node, as a crash.
    Kill {
        #[arg(long)]
        id: String,
    },
    /// Partitions the nodes into groups that cannot reach each other, e.g. "n1,n2|n3"
    /// (through /admin/faults; needs fault_injection = true).
    Partition { groups: String },
    /// Clears the injected faults of every node.
    Heal,
    /// SIGTERM to every node (SIGKILL after 10 s); data is kept.
    Stop,
    /// Which nodes run, and the membership each one sees.
    Status,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Node { .. }) {
        // A command piped into `head` should stop quietly when the pipe closes, as Unix tools
        // do, instead of panicking on a failed print.
        // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
        let _ = unsafe {
            nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigDfl,
            )
        };
    }
    let result = match cli.command {
        Command::Data(command) => return run_data(command),
        Command::Admin { action } => {
            return match runtime() {
                Ok(rt) => print_outcome(rt.block_on(quorumkv::cli::admin(action))),
                Err(e) => {
                    eprintln!("quorumkv: {e}");
                    ExitCode::from(2)
                }
            };
        }
        Command::Bench(args) => runtime().and_then(|rt| {
            let json = args.json;
            let report = rt.block_on(quorumkv::bench::run(args))?;
            if json {
                let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
                println!("{text}");
            } else {
                print!("{report}");
            }
            Ok(())
        }),
        Command::Changes { node, since, login } => runtime().and_then(|rt| {
            let access = login.access().map_err(|e| e.to_string())?;
            rt.block_on(quorumkv::cli::changes::follow(&node, since, &access))
        }),
        Command::HashPassword => hash_password(),
        Command::Ring { config, n, keys } => show_ring(&config, n, &keys),
        Command::Certs { config } => process::certs(&config),
        Command::Node { config, id, join } => {
            // Written to dhat-heap.json in the working directory when the node stops.
            #[cfg(feature = "heap-profile")]
            let _profiler = dhat::Profiler::new_heap();
            init_tracing();
            // The file's worker_threads, if it loads (run_node reports a file that does not).
            let threads = Config::load(&config).map_or(0, |c| c.cluster.worker_threads);
            node_runtime(threads)
                .and_then(|rt| rt.block_on(process::run_node(&config, &id, join.as_deref())))
        }
        Command::Cluster { action, config } => runtime().and_then(|rt| {
            rt.block_on(async {
                match action {
                    ClusterAction::Start { id } => {
                        process::cluster_start(&config, id.as_deref()).await
                    }
                    ClusterAction::Kill { id } => process::cluster_kill(&config, &id),
                    ClusterAction::Partition { groups } => {
                        process::cluster_partition(&config, &groups).await
                    }
                    ClusterAction::Heal => process::cluster_heal(&config).await,
                    ClusterAction::Stop => process::cluster_stop(&config).await,
                    ClusterAction::Status => process::cluster_status(&config).await,
                }
            })
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("quorumkv: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs a data command (`get`, `put`, ...) and exits with its code: 0 ok, 1 not found, 2 error.
fn run_data(command: DataCommand) -> ExitCode {
    let outcome = match runtime() {
        Ok(rt) => rt.block_on(quorumkv::cli::run(command)),
        Err(e) => {
            eprintln!("quorumkv: {e}");
            return ExitCode::from(2);
        }
    };
    print_outcome(outcome)
}

/// Prints what a client command printed and exits with its code.
fn print_outcome(outcome: Outcome) -> ExitCode {
    use std::io::Write;
    let _ = std::io::stdout().write_all(&outcome.stdout);
    let _ = std::io::stderr().write_all(outcome.stderr.as_bytes());
    ExitCode::from(outcome.code)
}

/// A node's runtime: `threads` workers, or one per core for 0.
fn node_runtime(threads: usize) -> Result<tokio::runtime::Runtime, String> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if threads > 0 {
        builder.worker_threads(threads);
    }
    builder
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

/// Logs go to stderr; `RUST_LOG` filters them (default: info, quieter for dependencies).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,quinn=warn,foca=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
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

/// `quorumkv hash-password`: the argon2 hash of the password on stdin.
fn hash_password() -> Result<(), String> {
    let mut password = String::new();
    std::io::stdin()
        .read_line(&mut password)
        .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
    let password = password.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        return Err("no password on stdin: echo -n 'PASSWORD' | quorumkv hash-password".into());
    }
    quorumkv::auth::hash_password(password).map(|hash| println!("{hash}"))
}
