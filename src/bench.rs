//! `quorumkv bench`: a closed-loop load generator over the HTTP API.
//!
//! A fixed number of concurrent workers send requests back to back, spread round-robin over
//! the given nodes, until a phase's request count is done; each request's latency goes into a
//! per-worker HDR histogram, merged at the end into percentiles and a log-scale histogram.
//! Phases run in order (by default `put` then `get` over the same keys, so the reads find
//! values). Latency is measured from the client, so it includes HTTP and the client itself.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::client::{Client, ClientError};
use crate::ops::{Consistency, MAX_TIMEOUT_MS};

/// The key space a benchmark drives.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchSpace {
    /// `/lww`: PUT and GET.
    Lww,
    /// `/kv`: PUT without a context (siblings accumulate until a read resolves them; the
    /// benchmark never resolves) and GET.
    Kv,
    /// `/counter`: POST delta=1 and GET.
    Counter,
}

/// One phase of a benchmark.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Writes each key (`/counter`: adds 1).
    Put,
    /// Reads each key.
    Get,
}

/// `quorumkv bench` options.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Nodes to send requests to, round robin (repeat, or separate with commas).
    #[arg(
        long = "node",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:8101,http://127.0.0.1:8102,http://127.0.0.1:8103"
    )]
    pub nodes: Vec<String>,
    /// Credentials (a writer's) and CA.
    #[command(flatten)]
    pub login: crate::cli::LoginArgs,
    /// The key space to drive.
    #[arg(long = "type", value_enum, default_value = "lww")]
    pub space: BenchSpace,
    /// Phases, in order.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "put,get")]
    pub phases: Vec<Phase>,
    /// Requests per phase.
    #[arg(long, default_value_t = 20_000)]
    pub requests: u64,
    /// Requests in flight at once (workers).
    #[arg(long, short = 'c', default_value_t = 32)]
    pub concurrency: u32,
    /// Distinct keys (request i uses key i mod keys, scrambled).
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Bytes per value written.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// N, W, R, timeout and sloppy of every request.
    #[command(flatten)]
    pub quorum: crate::cli::QuorumArgs,
    /// Key prefix, so that runs do not share keys.
    #[arg(long, default_value = "bench")]
    pub prefix: String,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// What one phase measured.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    /// Which phase this was.
    pub phase: Phase,
    /// Requests sent: `ok` plus every error.
    pub requests: u64,
    /// Requests that succeeded.
    pub ok: u64,
    /// Reads that found no value (counted in `ok`).
    pub not_found: u64,
    /// Failed requests by error code (or `connection`, `protocol`).
    pub errors: BTreeMap<String, u64>,
    /// Wall-clock time of the phase.
    pub seconds: f64,
    /// Throughput: requests per second of wall-clock time.
    pub per_second: f64,
    /// Median latency.
    pub p50_ms: f64,
    /// 90th percentile latency.
    pub p90_ms: f64,
    /// 99th percentile latency.
    pub p99_ms: f64,
    /// 99.9th percentile latency.
    pub p999_ms: f64,
    /// The slowest request.
    pub max_ms: f64,
    /// Log-scale latency buckets: (upper bound in ms, requests).
    pub histogram: Vec<(f64, u64)>,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The key space driven.
    pub space: BenchSpace,
    /// The nodes requests went to.
    pub nodes: Vec<String>,
    /// Requests in flight at once.
    pub concurrency: u32,
    /// Distinct keys.
    pub keys: u64,
    /// Bytes per value written.
    pub value_size: usize,
    /// N as given; `None`: the cluster's default.
    pub n: Option<String>,
    /// W as given; `None`: the cluster's default.
    pub w: Option<String>,
    /// R as given; `None`: the cluster's default.
    pub r: Option<String>,
    /// One report per phase, in the order they ran.
    pub phases: Vec<PhaseReport>,
}

/// Runs the benchmark. Errors are about the options; failed requests are counted, not fatal.
pub async fn run(args: BenchArgs) -> Result<Report, String> {
    if args.concurrency == 0 || args.requests == 0 || args.keys == 0 || args.nodes.is_empty() {
        return Err("--concurrency, --requests, --keys and --node must be at least 1".into());
    }
    let c = args.quorum.consistency()?;
    let timeout = Duration::from_millis(MAX_TIMEOUT_MS + 5_000);
    let access = args.login.access().map_err(|e| e.to_string())?;
    let clients = args
        .nodes
        .iter()
        .map(|n| Client::connect(n, timeout, &access))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let value = Bytes::from(vec![b'x'; args.value_size]);
    let mut phases = Vec::new();
    for &phase in &args.phases {
        let job = Arc::new(Job {
            clients: clients.clone(),
            space: args.space,
            phase,
            c: c.clone(),
            value: value.clone(),
            keys: args.keys,
            prefix: args.prefix.clone(),
            next: AtomicU64::new(0),
            total: args.requests,
            progress: progress_bar(args.requests, phase),
        });
        phases.push(run_phase(job, args.concurrency).await);
    }
    Ok(Report {
        space: args.space,
        nodes: args.nodes,
        concurrency: args.concurrency,
        keys: args.keys,
        value_size: args.value_size,
        n: args.quorum.n,
        w: args.quorum.w,
        r: args.quorum.r,
        phases,
    })
}

/// What the workers of one phase share.
struct Job {
    clients: Vec<Client>,
    space: BenchSpace,
    phase: Phase,
    c: Consistency,
    value: Bytes,
    keys: u64,
    prefix: String,
    next: AtomicU64,
    total: u64,
    progress: ProgressBar,
}

/// One worker's tally.
struct Tally {
    latency_us: Histogram<u64>,
    ok: u64,
    not_found: u64,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            // 1 µs to 2 minutes at 3 significant digits; longer is clamped to the top.
            latency_us: Histogram::new_with_bounds(1, 120_000_000, 3)
                .expect("constant bounds are valid: low >= 1, high >= 2 * low, sigfig <= 5"),
            ok: 0,
            not_found: 0,
            errors: BTreeMap::new(),
        }
    }
}

async fn run_phase(job: Arc<Job>, concurrency: u32) -> PhaseReport {
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| tokio::spawn(worker(Arc::clone(&job))))
        .collect();
    let mut all = Tally::new();
    for w in workers {
        let Ok(t) = w.await else { continue };
        let _ = all.latency_us.add(&t.latency_us);
        all.ok += t.ok;
        all.not_found += t.not_found;
        for (code, n) in t.errors {
            *all.errors.entry(code).or_default() += n;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    job.progress.finish_and_clear();
    let h = &all.latency_us;
    let ms = |us: u64| us as f64 / 1000.0;
    let requests = all.ok + all.errors.values().sum::<u64>();
    PhaseReport {
        phase: job.phase,
        requests,
        ok: all.ok,
        not_found: all.not_found,
        errors: all.errors,
        seconds,
        per_second: requests as f64 / seconds.max(1e-9),
        p50_ms: ms(h.value_at_quantile(0.50)),
        p90_ms: ms(h.value_at_quantile(0.90)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        p999_ms: ms(h.value_at_quantile(0.999)),
        max_ms: ms(h.max()),
        histogram: h
            .iter_log(100, 2.0)
            .filter(|v| v.count_since_last_iteration() > 0)
            .map(|v| (ms(v.value_iterated_to()), v.count_since_last_iteration()))
            .collect(),
    }
}

async fn worker(job: Arc<Job>) -> Tally {
    let mut tally = Tally::new();
    loop {
        let i = job.next.fetch_add(1, Ordering::Relaxed);
        if i >= job.total {
            return tally;
        }
        let client = &job.clients[(i % job.clients.len() as u64) as usize];
        let key = format!("{}:{}", job.prefix, scramble(i) % job.keys);
        let start = Instant::now();
        let result = request(&job, client, &key).await;
        let us = start.elapsed().as_micros() as u64;
        tally.latency_us.saturating_record(us.max(1));
        match result {
            Ok(found) => {
                tally.ok += 1;
                tally.not_found += u64::from(!found);
            }
            Err(e) => {
                let code = match &e {
                    ClientError::Api { code, .. } => code.clone(),
                    ClientError::Connection { .. } => "connection".into(),
                    ClientError::Protocol { .. } => "protocol".into(),
                    ClientError::Invalid(_) => "invalid".into(),
                };
                *tally.errors.entry(code).or_default() += 1;
            }
        }
        job.progress.inc(1);
    }
}

/// One request of the phase; `Ok(false)` for a read that found nothing.
async fn request(job: &Job, client: &Client, key: &str) -> Result<bool, ClientError> {
    let c = &job.c;
    match (job.space, job.phase) {
        (BenchSpace::Lww, Phase::Put) => client.lww_put(key, job.value.clone(), None, c).await?,
        (BenchSpace::Lww, Phase::Get) => return Ok(client.lww_get(key, c).await?.is_some()),
        (BenchSpace::Kv, Phase::Put) => {
            client.kv_put(key, job.value.clone(), None, None, c).await?;
        }
        (BenchSpace::Kv, Phase::Get) => {
            return Ok(!client.kv_get(key, c).await?.values.is_empty());
        }
        (BenchSpace::Counter, Phase::Put) => client.counter_add(key, 1, c).await?,
        (BenchSpace::Counter, Phase::Get) => return Ok(client.counter_get(key, c).await? != 0),
    }
    Ok(true)
}

/// Spreads consecutive request numbers over the key space (splitmix64's finaliser).
fn scramble(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn progress_bar(total: u64, phase: Phase) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if let Ok(style) =
        ProgressStyle::with_template("{prefix:>4} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(match phase {
        Phase::Put => "put",
        Phase::Get => "get",
    });
    bar
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let q = |v: &Option<String>| v.clone().unwrap_or_else(|| "default".into());
        writeln!(
            f,
            "/{} on {} node(s), concurrency {}, {} keys, {}-byte values, n={} w={} r={}",
            match self.space {
                BenchSpace::Lww => "lww",
                BenchSpace::Kv => "kv",
                BenchSpace::Counter => "counter",
            },
            self.nodes.len(),
            self.concurrency,
            self.keys,
            self.value_size,
            q(&self.n),
            q(&self.w),
            q(&self.r)
        )?;
        for p in &self.phases {
            f.write_str(&p.render())?;
        }
        Ok(())
    }
}

impl PhaseReport {
    fn render(&self) -> String {
        let mut s = String::new();
        let name = match self.phase {
            Phase::Put => "PUT",
            Phase::Get => "GET",
        };
        let _ = writeln!(
            s,
            "\n{name}: {} requests in {:.2} s = {:.0} req/s; {} ok{}",
            self.requests,
            self.seconds,
            self.per_second,
            self.ok,
            if self.not_found > 0 {
                format!(" ({} not found)", self.not_found)
            } else {
                String::new()
            }
        );
        for (code, n) in &self.errors {
            let _ = writeln!(s, "  errors {code}: {n}");
        }
        let _ = writeln!(
            s,
            "  latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
            self.p50_ms, self.p90_ms, self.p99_ms, self.p999_ms, self.max_ms
        );
        let widest = self.histogram.iter().map(|(_, n)| *n).max().unwrap_or(1);
        let total: u64 = self.histogram.iter().map(|(_, n)| n).sum();
        for (upto, n) in &self.histogram {
            let bar = "#".repeat(((*n as f64 / widest as f64) * 40.0).ceil() as usize);
            let _ = writeln!(
                s,
                "  <= {upto:>9.3} ms {n:>8} {:>5.1}% {bar}",
                *n as f64 * 100.0 / total.max(1) as f64
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scramble_spreads_consecutive_requests_over_the_keys() {
        let keys = 1000;
        let hit: std::collections::BTreeSet<u64> = (0..1000).map(|i| scramble(i) % keys).collect();
        // A random map of 1000 onto 1000 covers about 63%; a poor spread far less.
        assert!(hit.len() > 550, "{} distinct keys", hit.len());
    }

    #[test]
    fn the_report_prints_percentiles_and_a_histogram() {
        let p = PhaseReport {
            phase: Phase::Get,
            requests: 3,
            ok: 2,
            not_found: 1,
            errors: BTreeMap::from([("quorum_unavailable".to_string(), 1)]),
            seconds: 1.5,
            per_second: 2.0,
            p50_ms: 1.0,
            p90_ms: 2.0,
            p99_ms: 3.0,
            p999_ms: 3.0,
            max_ms: 3.0,
            histogram: vec![(1.0, 1), (2.0, 2)],
        };
        let text = p.render();
        assert!(text.contains("GET: 3 requests in 1.50 s = 2 req/s; 2 ok (1 not found)"));
        assert!(text.contains("errors quorum_unavailable: 1"));
        assert!(text.contains("p99 3.00"));
        assert!(text.contains("66.7% ####"), "{text}");
    }
}
