//! Running quorumkv as processes: one node in the foreground ([`node`]: `quorumkv node` and
//! `quorumkv certs`, what an operator runs on every host), and a local development cluster
//! in the background ([`cluster`]: `quorumkv cluster start|stop|status|kill|partition|heal`,
//! which the `make` targets call).

pub mod cluster;
pub mod node;

use std::path::{Path, PathBuf};

use crate::config::Config;

pub use cluster::{
    cluster_heal, cluster_kill, cluster_partition, cluster_start, cluster_status, cluster_stop,
};
pub use node::{certs, node_info, run_node};

/// The cluster file, with errors as the message the command prints.
pub(crate) fn load(config_path: &Path) -> Result<Config, String> {
    Config::load(config_path).map_err(|e| e.to_string())
}

pub(crate) fn node_dir(config: &Config, id: &str) -> PathBuf {
    config.data_dir().join(id)
}

pub(crate) fn pid_path(config: &Config, id: &str) -> PathBuf {
    node_dir(config, id).join("node.pid")
}
