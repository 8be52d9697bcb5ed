//! The node's Prometheus metrics: what `/metrics` serves.
//!
//! One registry per node (not the process-global one) so that a test running several nodes in
//! one process sees each node's own figures.

use std::sync::Arc;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Operations and outcomes of client requests, and kinds of replica calls, known in advance
/// so that counting one is a lookup in a fixed map rather than the labelled vector's.
const OPS: &[&str] = &[
    "kv_get",
    "kv_put",
    "kv_delete",
    "lww_get",
    "lww_put",
    "lww_delete",
    "counter_get",
    "counter_add",
    "set_get",
    "set_update",
];
const OUTCOMES: &[&str] = &["ok", "not_found", "bad_request", "too_large", "unavailable"];
const RPCS: &[&str] = &[
    "read",
    "merge",
    "forward",
    "repair",
    "hint",
    "hint_delivery",
    "anti_entropy",
];

const RPC_OUTCOMES: &[&str] = &["ok", "error"];

/// Pre-resolved children of the labelled metrics on the hot path, in the order of the label
/// lists above: finding one is a few comparisons of short strings, not hashing both labels.
#[derive(Default)]
struct Handles {
    /// By `OPS` index times `OUTCOMES.len()` plus `OUTCOMES` index.
    requests: Vec<(IntCounter, Histogram)>,
    /// By `RPCS` index times 2, plus 1 for an error.
    rpcs: Vec<IntCounter>,
}

impl Handles {
    fn request(&self, op: &str, outcome: &str) -> Option<&(IntCounter, Histogram)> {
        let op = OPS.iter().position(|o| *o == op)?;
        let outcome = OUTCOMES.iter().position(|o| *o == outcome)?;
        self.requests.get(op * OUTCOMES.len() + outcome)
    }

    fn rpc(&self, rpc: &str, ok: bool) -> Option<&IntCounter> {
        let rpc = RPCS.iter().position(|r| *r == rpc)?;
        self.rpcs.get(rpc * 2 + usize::from(!ok))
    }
}

/// Every metric a node exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    handles: Arc<Handles>,
    /// Client requests by operation (`kv_get`, `lww_put`, ...) and outcome (`ok`,
    /// `not_found`, `bad_request`, `too_large`, `unavailable`).
    pub requests: IntCounterVec,
    /// Client request latency, same labels.
    pub request_seconds: HistogramVec,
    /// Node-to-node calls made by the coordinator, by kind (`read`, `merge`, `forward`,
    /// `repair`) and outcome (`ok`, `error`).
    pub replica_rpcs: IntCounterVec,
    /// Replicas brought up to date by a read (one per stale replica).
    pub read_repairs: IntCounter,
    /// Hinted handoff: hints stored for an unreachable owner, and delivered to it.
    pub hints_stored: IntCounter,
    /// Hints the owner acknowledged, after which they are forgotten.
    pub hints_delivered: IntCounter,
    /// Hints given up by `reason`: `overflow` (past the per-owner bounds, oldest first) or
    /// `expired` (older than the maximum age).
    pub hints_dropped: IntCounterVec,
    /// Hints held for other nodes right now; set at scrape time.
    pub hints_pending: IntGauge,
    /// Keys repaired by Merkle-tree anti-entropy, its rounds, and the payload bytes it sent
    /// and received.
    pub anti_entropy_repairs: IntCounter,
    /// Anti-entropy rounds run.
    pub anti_entropy_rounds: IntCounter,
    /// Payload bytes of anti-entropy queries and answers, sent and received.
    pub anti_entropy_bytes: IntCounter,
    /// Members as this node sees them, by state; set at scrape time.
    pub members: IntGaugeVec,
    /// Keys (tombstones included) in this node's store; set at scrape time.
    pub keys: IntGauge,
    /// Bytes the node's data costs (what the memory limit compares); set at scrape time.
    pub memory_bytes: IntGauge,
    /// The memory limit (`max_memory_bytes`, 0: none); set at scrape time.
    pub memory_limit_bytes: IntGauge,
    /// The process's resident memory; set at scrape time.
    pub resident_bytes: IntGauge,
    /// Keys evicted past the memory limit.
    pub evictions: IntCounter,
}

/// The resident memory of this process, from `/proc/self/statm` (0 where there is none).
pub fn resident_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .unwrap_or(0);
    pages * 4096
}

/// Latency buckets from 100 µs to 10 s: loopback quorum calls take well under a millisecond,
/// geo-distributed ones tens to hundreds.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

impl Metrics {
    /// A fresh set of metrics in its own registry, all at zero.
    pub fn new() -> Self {
        let registry =
            Registry::new_custom(Some("quorumkv".into()), None).unwrap_or_else(|_| Registry::new());
        let requests = IntCounterVec::new(
            Opts::new("requests_total", "Client requests by operation and outcome"),
            &["op", "outcome"],
        );
        let request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "request_duration_seconds",
                "Client request latency by operation and outcome",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["op", "outcome"],
        );
        let replica_rpcs = IntCounterVec::new(
            Opts::new(
                "replica_rpcs_total",
                "Calls from coordinators to replicas by kind and outcome",
            ),
            &["rpc", "outcome"],
        );
        let counter = |name: &str, help: &str| IntCounter::new(name, help);
        let members = IntGaugeVec::new(
            Opts::new(
                "members",
                "Cluster members by state, as this node sees them",
            ),
            &["state"],
        );
        let keys = IntGauge::new("keys", "Keys in this node's store, tombstones included");
        let hints_dropped = IntCounterVec::new(
            Opts::new("hints_dropped_total", "Hints given up, by reason"),
            &["reason"],
        );
        let hints_pending = IntGauge::new("hints_pending", "Hints held for other nodes");
        let memory_bytes = IntGauge::new(
            "memory_bytes",
            "Bytes the node's data costs: the store's estimate calibrated against the resident memory (what max_memory_bytes limits)",
        );
        let memory_limit_bytes =
            IntGauge::new("memory_limit_bytes", "max_memory_bytes (0: no limit)");
        let resident_bytes = IntGauge::new("resident_bytes", "Resident memory of the process");
        // Names and label sets are fixed literals, so construction cannot fail at run time;
        // the expect documents that invariant.
        let m = Metrics {
            requests: requests.expect("valid metric"),
            request_seconds: request_seconds.expect("valid metric"),
            replica_rpcs: replica_rpcs.expect("valid metric"),
            read_repairs: counter("read_repairs_total", "Stale replicas repaired by reads")
                .expect("valid metric"),
            hints_stored: counter("hints_stored_total", "Hints stored for unreachable owners")
                .expect("valid metric"),
            hints_delivered: counter("hints_delivered_total", "Hints delivered to their owners")
                .expect("valid metric"),
            hints_dropped: hints_dropped.expect("valid metric"),
            hints_pending: hints_pending.expect("valid metric"),
            anti_entropy_repairs: counter(
                "anti_entropy_repairs_total",
                "Keys repaired by Merkle-tree anti-entropy",
            )
            .expect("valid metric"),
            anti_entropy_rounds: counter("anti_entropy_rounds_total", "Anti-entropy rounds run")
                .expect("valid metric"),
            anti_entropy_bytes: counter(
                "anti_entropy_bytes_total",
                "Anti-entropy request and answer payload bytes",
            )
            .expect("valid metric"),
            handles: Arc::default(),
            members: members.expect("valid metric"),
            keys: keys.expect("valid metric"),
            memory_bytes: memory_bytes.expect("valid metric"),
            memory_limit_bytes: memory_limit_bytes.expect("valid metric"),
            resident_bytes: resident_bytes.expect("valid metric"),
            evictions: counter("evictions_total", "Keys evicted past the memory limit")
                .expect("valid metric"),
            registry,
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.requests.clone()),
            Box::new(m.request_seconds.clone()),
            Box::new(m.replica_rpcs.clone()),
            Box::new(m.read_repairs.clone()),
            Box::new(m.hints_stored.clone()),
            Box::new(m.hints_delivered.clone()),
            Box::new(m.hints_dropped.clone()),
            Box::new(m.hints_pending.clone()),
            Box::new(m.anti_entropy_repairs.clone()),
            Box::new(m.anti_entropy_rounds.clone()),
            Box::new(m.anti_entropy_bytes.clone()),
            Box::new(m.members.clone()),
            Box::new(m.keys.clone()),
            Box::new(m.memory_bytes.clone()),
            Box::new(m.memory_limit_bytes.clone()),
            Box::new(m.resident_bytes.clone()),
            Box::new(m.evictions.clone()),
        ];
        for c in collectors {
            // Distinct names, registered once: cannot collide.
            let _ = m.registry.register(c);
        }
        let mut handles = Handles::default();
        for op in OPS {
            for outcome in OUTCOMES {
                handles.requests.push((
                    m.requests.with_label_values(&[op, outcome]),
                    m.request_seconds.with_label_values(&[op, outcome]),
                ));
            }
        }
        for rpc in RPCS {
            for outcome in RPC_OUTCOMES {
                handles
                    .rpcs
                    .push(m.replica_rpcs.with_label_values(&[rpc, outcome]));
            }
        }
        Metrics {
            handles: Arc::new(handles),
            ..m
        }
    }

    /// Counts one replica call.
    pub fn rpc(&self, rpc: &str, ok: bool) {
        match self.handles.rpc(rpc, ok) {
            Some(counter) => counter.inc(),
            None => {
                let outcome = RPC_OUTCOMES[usize::from(!ok)];
                self.replica_rpcs.with_label_values(&[rpc, outcome]).inc();
            }
        }
    }

    /// Counts one client request and its latency.
    pub fn request(&self, op: &str, outcome: &str, seconds: f64) {
        match self.handles.request(op, outcome) {
            Some((count, latency)) => {
                count.inc();
                latency.observe(seconds);
            }
            None => {
                self.requests.with_label_values(&[op, outcome]).inc();
                self.request_seconds
                    .with_label_values(&[op, outcome])
                    .observe(seconds);
            }
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut out) {
            tracing::warn!("cannot encode metrics: {e}");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
