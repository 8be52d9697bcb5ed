//! The cluster file (`cluster.toml`): cluster-wide defaults and the nodes that bootstrap it.
//!
//! Parsing is strict about what it knows (a wrong type or an unknown quorum name is an error
//! naming the key) and tolerant of keys it does not know, so files written for a later version
//! still load.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::ring::{Ring, RingError, RingMember};
use crate::wal::Durability;

/// Default of `peer_budget_bytes`: the most request bytes one peer may have in flight at a node.
pub const DEFAULT_PEER_BUDGET_BYTES: usize = 64 * 1024 * 1024;

/// What a node does past `max_memory_bytes`, as Redis's `maxmemory-policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum Eviction {
    /// The least recently used strings, sets and hashes go first.
    #[default]
    #[serde(rename = "allkeys-lru")]
    AllkeysLru,
    /// Only keys with a time to live go, least recently used first.
    #[serde(rename = "volatile-lru")]
    VolatileLru,
    /// Nothing goes: writes that would grow the data are refused.
    #[serde(rename = "noeviction")]
    NoEviction,
}

impl Eviction {
    /// The name as the file (and Redis's `maxmemory-policy`) writes it.
    pub fn name(self) -> &'static str {
        match self {
            Eviction::AllkeysLru => "allkeys-lru",
            Eviction::VolatileLru => "volatile-lru",
            Eviction::NoEviction => "noeviction",
        }
    }
}

/// A quorum size as written in the file or a request: a number or a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quorum {
    /// A single replica.
    One,
    /// A majority of the replicas.
    Quorum,
    /// Every replica.
    All,
    /// Exactly this many replicas.
    Count(u32),
    /// A quorum of the key's replicas in the coordinating node's zone.
    LocalQuorum,
    /// A quorum of the key's replicas in every zone that has some.
    EachQuorum,
}

impl Quorum {
    /// Parses `one`, `quorum`, `all` or a positive integer.
    pub fn parse(s: &str) -> Result<Quorum, String> {
        match s {
            "one" => Ok(Quorum::One),
            "quorum" => Ok(Quorum::Quorum),
            "all" => Ok(Quorum::All),
            "local_quorum" => Ok(Quorum::LocalQuorum),
            "each_quorum" => Ok(Quorum::EachQuorum),
            _ => match s.parse::<u32>() {
                Ok(0) => Err("a quorum of 0 is not allowed; use 1 or more".into()),
                Ok(n) => Ok(Quorum::Count(n)),
                Err(_) => Err(format!(
                    "{s:?} is not a quorum; use an integer from 1, or one, quorum, all, \
                     local_quorum or each_quorum"
                )),
            },
        }
    }

    /// The number of replicas this quorum needs out of `n`; for the zone forms, which
    /// depend on where a key's replicas are, a majority of `n` (never more than `n`).
    pub fn resolve(self, n: u32) -> u32 {
        match self {
            Quorum::One => 1,
            Quorum::Quorum | Quorum::LocalQuorum | Quorum::EachQuorum => n / 2 + 1,
            Quorum::All => n,
            Quorum::Count(k) => k,
        }
    }
}

/// The form [`Quorum::parse`] reads back: what clients send as `w` and `r`.
impl std::fmt::Display for Quorum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Quorum::One => f.write_str("one"),
            Quorum::Quorum => f.write_str("quorum"),
            Quorum::All => f.write_str("all"),
            Quorum::Count(k) => write!(f, "{k}"),
            Quorum::LocalQuorum => f.write_str("local_quorum"),
            Quorum::EachQuorum => f.write_str("each_quorum"),
        }
    }
}

impl<'de> Deserialize<'de> for Quorum {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Quorum::parse(&n.to_string()),
            Raw::Str(s) => Quorum::parse(&s),
        }
        .map_err(serde::de::Error::custom)
    }
}

/// The `[cluster]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ClusterSettings {
    /// Names the cluster in its CA certificate and in `make cluster`'s output.
    pub name: String,
    /// Default N: how many nodes hold each key.
    pub replicas: u32,
    /// Default R of a request that sets none.
    pub read_quorum: Quorum,
    /// Default W of a request that sets none.
    pub write_quorum: Quorum,
    /// Ring positions per node, unless the node sets its own.
    pub vnodes: u32,
    /// Default `timeout_ms` of a request; also the deadline of read repairs, hint deliveries and
    /// anti-entropy calls.
    pub request_timeout_ms: u64,
    /// Largest value and HTTP body accepted.
    pub max_value_bytes: usize,
    /// Enables `/admin/faults`, which lets tests drop traffic between nodes; leave it off outside
    /// tests.
    pub fault_injection: bool,
    /// Where TLS material, pid files and logs live; relative to the cluster file's directory.
    pub data_dir: PathBuf,
    /// Hinted handoff on or off (off: `sloppy` has nothing to count, and replicas that miss a
    /// write wait for read repair or anti-entropy).
    pub hinted_handoff: bool,
    /// Hinted handoff: most keys and bytes of hints one node holds for one other node, and
    /// the age after which a hint is dropped (keep it below `tombstone_grace_s`).
    pub hint_max_keys: usize,
    /// Most bytes of hints one node holds for one other node.
    pub hint_max_bytes: usize,
    /// Age in seconds after which a hint is dropped.
    pub hint_max_age_s: u64,
    /// How long a replica keeps a tombstone (a delete or an expired TTL) before forgetting
    /// it, like Cassandra's gc_grace_seconds: a replica that was away longer than this and
    /// still holds the old value can bring it back.
    pub tombstone_grace_s: u64,
    /// A node's memory limit for stored data (estimated: keys, encoded values and a fixed
    /// overhead each), past which it evicts the least recently used `/lww` keys, as Redis's
    /// allkeys-lru. 0 (the default): no limit.
    pub max_memory_bytes: u64,
    /// What happens past `max_memory_bytes`: `allkeys-lru` (the default), `volatile-lru` or
    /// `noeviction`.
    pub eviction: Eviction,
    /// Round-trip time added between nodes of different zones, to run a geo-distributed
    /// cluster on one machine: each node holds what it sends to a node of another zone back
    /// by half of it. 0 (the default): none.
    pub zone_delay_ms: u64,
    /// Threads of each node's async runtime; 0 (the default): one per core. Several nodes
    /// sharing one machine run faster with fewer each (docs/benchmarks.md).
    pub worker_threads: usize,
    /// Anti-entropy: time between rounds (0: off) and most keys repaired per second.
    pub anti_entropy_interval_ms: u64,
    /// Most keys anti-entropy repairs per second, so repair does not crowd out requests.
    pub anti_entropy_keys_per_sec: u64,
    /// What an acknowledged write survives: `memory`, `everysec` (the default) or `always`.
    pub durability: Durability,
    /// The durable log is snapshotted (and its old segments deleted) once it has grown by
    /// this many bytes, or by the size of the last snapshot if that is larger.
    pub snapshot_after_bytes: u64,
    /// Lets a node without `[[user]]` entries listen for clients on a non-loopback address
    /// (protected mode off).
    pub insecure_open_access: bool,
    /// The HTTP and Redis ports speak TLS only, with the node's client certificate.
    pub client_tls: bool,
    /// Most bytes of requests one peer may have in flight at a node (read and not yet
    /// answered); a peer past it waits, the others do not.
    pub peer_budget_bytes: usize,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            name: "quorumkv".into(),
            replicas: 3,
            read_quorum: Quorum::Quorum,
            write_quorum: Quorum::Quorum,
            vnodes: 128,
            request_timeout_ms: 2000,
            max_value_bytes: 1024 * 1024,
            fault_injection: false,
            data_dir: PathBuf::from("data"),
            hinted_handoff: true,
            hint_max_keys: 100_000,
            hint_max_bytes: 64 * 1024 * 1024,
            hint_max_age_s: 1800,
            tombstone_grace_s: 3600,
            worker_threads: 0,
            zone_delay_ms: 0,
            max_memory_bytes: 0,
            eviction: Eviction::AllkeysLru,
            anti_entropy_interval_ms: 10_000,
            anti_entropy_keys_per_sec: 2_000,
            durability: Durability::EverySec,
            snapshot_after_bytes: crate::wal::DEFAULT_SNAPSHOT_AFTER_BYTES,
            insecure_open_access: false,
            client_tls: false,
            peer_budget_bytes: DEFAULT_PEER_BUDGET_BYTES,
        }
    }
}

/// One `[[node]]` entry.
#[derive(Debug, Clone, Deserialize)]
pub struct NodeSettings {
    /// The node's id: 1 to 64 ASCII letters, digits, `-`, `_` or `.`, unique in the file.
    pub id: String,
    /// The zone (region, rack) the node is in, for zone-aware replica placement and the zone
    /// quorums; `default` when absent.
    #[serde(default = "default_zone")]
    pub zone: String,
    /// QUIC address, node to node.
    pub peer: SocketAddr,
    /// Client HTTP API.
    pub http: SocketAddr,
    /// Redis protocol.
    pub resp: SocketAddr,
    /// Ring positions of this node; the cluster's `vnodes` when absent.
    pub vnodes: Option<u32>,
    /// This node's durability; the cluster's `durability` when absent.
    pub durability: Option<Durability>,
    /// Host names clients reach this node by, added to its client certificate next to the
    /// addresses of `http` and `resp` (for `client_tls`).
    #[serde(default)]
    pub host_names: Vec<String>,
}

fn default_zone() -> String {
    "default".into()
}

/// A parsed cluster file.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// The `[cluster]` table; its defaults when absent.
    #[serde(default)]
    pub cluster: ClusterSettings,
    /// The `[[node]]` entries.
    #[serde(default, rename = "node")]
    pub nodes: Vec<NodeSettings>,
    /// The `[[user]]` entries: the clients that may connect, and their roles. None: the
    /// nodes are open (on loopback only, unless `insecure_open_access`).
    #[serde(default, rename = "user")]
    pub users: Vec<crate::auth::UserSettings>,
    /// Directory of the file, against which a relative `data_dir` resolves.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// Why a cluster file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The cluster file.
        path: PathBuf,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// The file is not TOML of the expected shape (a wrong type, an unknown quorum name).
    #[error("{path}: {message}")]
    Parse {
        /// The cluster file; empty from [`Config::parse`], which has no path.
        path: PathBuf,
        /// The parser's message, naming the key.
        message: String,
    },
    /// The file parses but breaks a rule (a quorum larger than `replicas`, a duplicate id
    /// or address, a zero limit).
    #[error("{path}: {message}")]
    Invalid {
        /// The cluster file; empty from [`Config::parse`], which has no path.
        path: PathBuf,
        /// Which rule the file breaks.
        message: String,
    },
}

impl Config {
    /// Reads and checks a cluster file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("")).to_path_buf();
        Config::parse(&text, &base).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            ConfigError::Invalid { message, .. } => ConfigError::Invalid {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    /// Parses a cluster file's text; `base_dir` is where its relative paths start.
    pub fn parse(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: e.to_string(),
        })?;
        config.base_dir = base_dir.to_path_buf();
        config.validate().map_err(|message| ConfigError::Invalid {
            path: PathBuf::new(),
            message,
        })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        let c = &self.cluster;
        if c.replicas == 0 {
            return Err("[cluster] replicas must be at least 1".into());
        }
        for (name, q) in [
            ("read_quorum", c.read_quorum),
            ("write_quorum", c.write_quorum),
        ] {
            if q.resolve(c.replicas) > c.replicas {
                return Err(format!(
                    "[cluster] {name} needs {} replicas but replicas is {}",
                    q.resolve(c.replicas),
                    c.replicas
                ));
            }
        }
        if c.hint_max_keys == 0 || c.hint_max_bytes == 0 || c.hint_max_age_s == 0 {
            return Err(
                "[cluster] hint_max_keys, hint_max_bytes and hint_max_age_s must be at least 1"
                    .into(),
            );
        }
        if c.hint_max_age_s >= c.tombstone_grace_s {
            return Err(format!(
                "[cluster] hint_max_age_s ({}) must be less than tombstone_grace_s ({}): a hint \
                 delivered after its key's tombstone was forgotten would bring the value back",
                c.hint_max_age_s, c.tombstone_grace_s
            ));
        }
        if c.anti_entropy_keys_per_sec == 0 {
            return Err("[cluster] anti_entropy_keys_per_sec must be at least 1".into());
        }
        if c.peer_budget_bytes < 1024 * 1024 {
            return Err("[cluster] peer_budget_bytes must be at least 1048576 (1 MiB)".into());
        }
        if c.vnodes == 0 {
            return Err("[cluster] vnodes must be at least 1".into());
        }
        if c.request_timeout_ms == 0 || c.request_timeout_ms > 60_000 {
            return Err("[cluster] request_timeout_ms must be from 1 to 60000".into());
        }
        let mut ids = BTreeSet::new();
        let mut addrs = BTreeSet::new();
        for n in &self.nodes {
            if n.id.is_empty()
                || n.id.len() > 64
                || !n
                    .id
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
            {
                return Err(format!(
                    "node id {:?} must be 1 to 64 ASCII letters, digits, '-', '_' or '.'",
                    n.id
                ));
            }
            if !ids.insert(n.id.as_str()) {
                return Err(format!("node id {:?} appears twice", n.id));
            }
            for addr in [n.peer, n.http, n.resp] {
                if !addrs.insert(addr) {
                    return Err(format!("address {addr} is used twice (node {:?})", n.id));
                }
            }
            if n.vnodes == Some(0) {
                return Err(format!("node {:?}: vnodes must be at least 1", n.id));
            }
        }
        Ok(())
    }

    /// The node entry with this id.
    pub fn node(&self, id: &str) -> Option<&NodeSettings> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// The data directory, resolved against the file's directory.
    pub fn data_dir(&self) -> PathBuf {
        self.base_dir.join(&self.cluster.data_dir)
    }

    /// The ring of every node in the file.
    pub fn ring(&self) -> Result<Ring, RingError> {
        Ring::new(self.nodes.iter().map(|n| {
            RingMember::new(
                n.id.clone(),
                n.zone.clone(),
                n.vnodes.unwrap_or(self.cluster.vnodes),
            )
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[cluster]
name = "t"
replicas = 3
read_quorum = "quorum"
write_quorum = 2
data_dir = "target/x"
some_future_key = 1

[[node]]
id = "n1"
zone = "a"
peer = "127.0.0.1:7101"
http = "127.0.0.1:8101"
resp = "127.0.0.1:6101"
"#;

    #[test]
    fn parses_the_documented_format() {
        let c = Config::parse(FILE, Path::new("/etc/q")).unwrap();
        assert_eq!(c.cluster.write_quorum, Quorum::Count(2));
        assert_eq!(c.cluster.read_quorum.resolve(3), 2);
        assert_eq!(c.data_dir(), PathBuf::from("/etc/q/target/x"));
        assert_eq!(c.cluster.vnodes, 128);
        assert!(!c.cluster.fault_injection);
        assert_eq!(c.ring().unwrap().len(), 1);
    }

    #[test]
    fn refuses_bad_files_with_a_message() {
        let bad = FILE.replace("write_quorum = 2", "write_quorum = \"most\"");
        let e = Config::parse(&bad, Path::new("")).unwrap_err().to_string();
        assert!(e.contains("not a quorum"), "{e}");
        let bad = FILE.replace("write_quorum = 2", "write_quorum = 4");
        let e = Config::parse(&bad, Path::new("")).unwrap_err().to_string();
        assert!(e.contains("write_quorum needs 4"), "{e}");
        let dup = format!(
            "{FILE}\n[[node]]\nid = \"n1\"\npeer = \"127.0.0.1:1\"\nhttp = \"127.0.0.1:2\"\nresp = \"127.0.0.1:3\"\n"
        );
        let e = Config::parse(&dup, Path::new("")).unwrap_err().to_string();
        assert!(e.contains("appears twice"), "{e}");
        let bad = FILE.replace("replicas = 3", "replicas = 3\ntombstone_grace_s = 600");
        let e = Config::parse(&bad, Path::new("")).unwrap_err().to_string();
        assert!(e.contains("hint_max_age_s (1800) must be less"), "{e}");
        let ok = bad.replace("replicas = 3", "replicas = 3\nhint_max_age_s = 300");
        let c = Config::parse(&ok, Path::new("")).unwrap();
        assert_eq!(
            (c.cluster.tombstone_grace_s, c.cluster.hint_max_age_s),
            (600, 300)
        );
        let bad = FILE.replace(
            "replicas = 3",
            "replicas = 3\nanti_entropy_keys_per_sec = 0",
        );
        assert!(Config::parse(&bad, Path::new("")).is_err());
    }

    #[test]
    fn the_repository_geo_file_loads_with_three_zones_and_zone_quorums() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("geo.toml");
        let c = Config::load(&path).unwrap();
        let zones: BTreeSet<_> = c.nodes.iter().map(|n| n.zone.as_str()).collect();
        assert_eq!((c.nodes.len(), zones.len()), (6, 3));
        assert_eq!(c.cluster.write_quorum, Quorum::LocalQuorum);
        assert_eq!(c.cluster.zone_delay_ms, 80);
        assert_eq!(Quorum::parse("each_quorum"), Ok(Quorum::EachQuorum));
        assert_eq!(Quorum::EachQuorum.to_string(), "each_quorum");
    }

    #[test]
    fn the_repository_cluster_file_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster.toml");
        let c = Config::load(&path).unwrap();
        assert_eq!(c.nodes.len(), 3);
        let zones: BTreeSet<_> = c.nodes.iter().map(|n| n.zone.as_str()).collect();
        assert!(zones.len() >= 2);
        assert!(c.cluster.fault_injection);
    }
}
