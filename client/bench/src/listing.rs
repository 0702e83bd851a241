//! `listing`: does paging through every task stall writes? Loads `--tasks` tasks, then runs
//! `-c` compare-and-set writers (each on its own config key, as in `cas`) for `-d` while
//! nothing else happens (idle), then while one client pages through ALL tasks with the largest
//! page (`list_tasks` following `next_page_token` to the end), linearizable then serializable,
//! again and again until that phase has lasted `-d` too. Reports write latency idle vs during
//! the listing (the target: p99 during within 2× of idle), pages/s and tasks listed/s, and
//! verifies that every pass saw every task of the run exactly once.
//!
//! Both listings go to the leader: it is where writes commit and apply, so it is where a
//! listing holding the state lock would stall them (and it has applied every loaded task, so
//! a serializable listing there is complete too).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use hdrhistogram::Histogram;
use percy_client::paging::MAX_PAGE_SIZE;
use percy_client::{Client, Consistency, TaskFilter};
use serde::Serialize;
use tonic::Code;

use super::cas::value_of;
use super::report::{fields_table, r3};
use super::setup::{self, task_id_prefix};
use super::stats::{new_hist, CpuSample, CpuUsage};
use super::{leader_of_with, Env};

/// Clients used to submit the tasks.
const LOAD_CLIENTS: usize = 8;
/// The target: p99 write latency during a full listing within this factor of idle.
const TARGET_RATIO: f64 = 2.0;

/// What the writers are measuring now.
const PHASE_WARMUP: u8 = 0;
const PHASE_IDLE: u8 = 1;
const PHASE_LISTING: u8 = 2;
const PHASE_DONE: u8 = 3;

#[derive(Debug, Serialize)]
pub struct ListingReport {
    pub workload: &'static str,
    pub tasks: usize,
    pub load_s: f64,
    pub cas_clients: usize,
    pub page_size: u32,
    pub idle: Latency,
    pub during_listing: Latency,
    /// p99 during the listing / p99 idle.
    pub p99_ratio: f64,
    pub target_ratio: f64,
    pub target_met: bool,
    pub passes: Vec<Pass>,
    pub pages_per_s: f64,
    pub tasks_listed_per_s: f64,
    pub verify: Verify,
    pub machine_steal_pct: f64,
    pub machine_busy_pct: f64,
    pub leader_cpu_pct_of_one_core_during_listing: Option<f64>,
    pub server_version: String,
    pub tag: String,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub writes: u64,
    pub writes_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub errors: u64,
}

/// One full listing.
#[derive(Debug, Serialize)]
pub struct Pass {
    pub consistency: &'static str,
    pub pages: u64,
    pub tasks_listed: u64,
    pub seconds: f64,
    /// The slowest page, round trip.
    pub max_page_ms: f64,
    pub missing: usize,
    pub duplicates: usize,
}

#[derive(Debug, Serialize)]
pub struct Verify {
    pub passes: usize,
    pub passes_with_every_task_once: usize,
    pub ok: bool,
}

impl ListingReport {
    /// The report as a two-column table: its JSON fields, one per row.
    pub fn table(&self) -> Result<String> {
        fields_table(self)
    }
}

/// One writer's latencies, by phase.
struct Writer {
    idle: Histogram<u64>,
    listing: Histogram<u64>,
    idle_errors: u64,
    listing_errors: u64,
    error_sample: Option<String>,
}

impl Writer {
    fn new() -> Result<Writer> {
        Ok(Writer {
            idle: new_hist()?,
            listing: new_hist()?,
            idle_errors: 0,
            listing_errors: 0,
            error_sample: None,
        })
    }
}

pub async fn run(env: &Env) -> Result<ListingReport> {
    let tasks = env.args.tasks;
    anyhow::ensure!(tasks > 0, "--tasks must be at least 1");
    let load_clients = env.clients(LOAD_CLIENTS).await?;
    let t_load = Instant::now();
    let submitted = setup::submit_tasks(env, &load_clients, tasks, &[]).await?;
    let load_s = t_load.elapsed().as_secs_f64();
    drop(load_clients);

    let c = env.args.clients();
    let writers = env.clients(c).await?;
    let phase = Arc::new(AtomicU8::new(PHASE_WARMUP));
    let mut handles = Vec::with_capacity(c);
    for (i, client) in writers.into_iter().enumerate() {
        let key = format!("bench/{}/listing/{i:05}", env.run_id);
        let size = env.args.value_size;
        let created = client
            .put_config(&key, value_of(size, i, 0), None)
            .await
            .with_context(|| format!("create {key}"))?;
        let revision = created
            .entry
            .map(|e| e.revision)
            .ok_or_else(|| anyhow!("put {key}: no entry in the answer"))?;
        handles.push(tokio::spawn(write_until_done(
            client,
            key,
            revision,
            size,
            i,
            phase.clone(),
            Writer::new()?,
        )));
    }

    let (_, leader_addr) = leader_of_with(&env.endpoints, &env.security).await?;
    let lister_endpoints = {
        let mut endpoints = env.endpoints.clone();
        if let Some(i) = endpoints
            .iter()
            .position(|e| super::same_addr(e, &leader_addr))
        {
            endpoints.rotate_left(i);
        }
        endpoints
    };
    tokio::time::sleep(env.args.warmup()).await;

    env.progress.say("listing: writes while idle".into());
    phase.store(PHASE_IDLE, Ordering::SeqCst);
    let idle_start = CpuSample::take(&env.server_pids, env.leader_pid);
    tokio::time::sleep(env.args.duration).await;
    let idle_end = CpuSample::take(&env.server_pids, env.leader_pid);

    phase.store(PHASE_LISTING, Ordering::SeqCst);
    let listing_start = CpuSample::take(&env.server_pids, env.leader_pid);
    let started = Instant::now();
    env.progress
        .say("listing: paging through every task".into());
    // The lister runs on an OS thread and runtime of its own: decoding pages of 10,000 tasks
    // on the writers' runtime would delay their answers and count as write latency.
    let listing = ListingJob {
        endpoints: lister_endpoints,
        retry: env
            .retry
            .with_deadline(env.args.op_timeout.max(env.retry.deadline)),
        security: env.security.clone(),
        prefix: task_id_prefix(&env.run_id),
        tasks,
        at_least: env.args.duration,
    };
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("lister".into())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("start the lister's runtime")
                .and_then(|runtime| runtime.block_on(listing.run()));
            let _ = done_tx.send(result);
        })
        .context("start the lister thread")?;
    let listed = done_rx
        .await
        .map_err(|_| anyhow!("the lister thread died"))
        .and_then(|r| r);
    let listing_s = started.elapsed().as_secs_f64();
    let listing_end = CpuSample::take(&env.server_pids, env.leader_pid);
    phase.store(PHASE_DONE, Ordering::SeqCst);
    let mut results = Vec::with_capacity(c);
    for handle in handles {
        results.push(handle.await?);
    }
    let passes = listed?;

    let idle_cpu = CpuUsage::between(&idle_start, &idle_end);
    let listing_cpu = CpuUsage::between(&listing_start, &listing_end);
    let idle = latency(&results, |w| (&w.idle, w.idle_errors), idle_cpu.wall_s)?;
    let during = latency(&results, |w| (&w.listing, w.listing_errors), listing_s)?;
    if let Some(sample) = results.iter().find_map(|w| w.error_sample.clone()) {
        env.progress
            .say(format!("listing: a write failed: {sample}"));
    }
    let p99_ratio = during.p99_ms / idle.p99_ms.max(f64::MIN_POSITIVE);
    let pages: u64 = passes.iter().map(|p| p.pages).sum();
    let listed_tasks: u64 = passes.iter().map(|p| p.tasks_listed).sum();
    let complete = passes
        .iter()
        .filter(|p| p.missing == 0 && p.duplicates == 0)
        .count();
    let machine = idle_cpu.plus(&listing_cpu);
    Ok(ListingReport {
        workload: "listing",
        tasks: submitted.ids.len(),
        load_s: r3(load_s),
        cas_clients: c,
        page_size: MAX_PAGE_SIZE,
        idle,
        during_listing: during,
        p99_ratio: r3(p99_ratio),
        target_ratio: TARGET_RATIO,
        target_met: p99_ratio <= TARGET_RATIO,
        pages_per_s: r3(pages as f64 / listing_s.max(f64::MIN_POSITIVE)),
        tasks_listed_per_s: r3(listed_tasks as f64 / listing_s.max(f64::MIN_POSITIVE)),
        verify: Verify {
            passes: passes.len(),
            passes_with_every_task_once: complete,
            ok: complete == passes.len() && results.iter().all(|w| w.error_sample.is_none()),
        },
        passes,
        machine_steal_pct: r3(machine.machine_steal_pct),
        machine_busy_pct: r3(machine.machine_busy_pct),
        leader_cpu_pct_of_one_core_during_listing: env
            .leader_pid
            .map(|_| r3(100.0 * listing_cpu.leader_s / listing_cpu.wall_s.max(f64::MIN_POSITIVE))),
        server_version: env.server_version.clone(),
        tag: env.args.tag.clone(),
    })
}

/// Compare-and-sets `key` until the phase is done, each write's latency counted in the phase
/// it started and ended in (a write straddling two phases counts in neither).
async fn write_until_done(
    client: Client,
    key: String,
    mut last: u64,
    size: usize,
    i: usize,
    phase: Arc<AtomicU8>,
    mut writer: Writer,
) -> Writer {
    let mut n = 0u64;
    loop {
        let before = phase.load(Ordering::SeqCst);
        if before == PHASE_DONE {
            return writer;
        }
        n += 1;
        let t0 = Instant::now();
        let result = client
            .put_config(&key, value_of(size, i, n), Some(last))
            .await;
        let latency = t0.elapsed();
        let after = phase.load(Ordering::SeqCst);
        let counted = before == after;
        let ok = match result {
            Ok(put) => match put.entry {
                Some(entry) => {
                    last = entry.revision;
                    true
                }
                None => false,
            },
            Err(e) => {
                if e.code() == Code::FailedPrecondition {
                    if let Ok(Some(entry)) = client
                        .get_config(&key, Consistency::Linearizable)
                        .await
                        .map(|g| g.entry)
                    {
                        last = entry.revision;
                    }
                }
                writer.error_sample.get_or_insert_with(|| e.to_string());
                false
            }
        };
        if !counted {
            continue;
        }
        let (hist, errors) = match after {
            PHASE_IDLE => (&mut writer.idle, &mut writer.idle_errors),
            PHASE_LISTING => (&mut writer.listing, &mut writer.listing_errors),
            _ => continue,
        };
        if ok {
            hist.saturating_record(super::stats::micros(latency));
        } else {
            *errors += 1;
        }
    }
}

fn latency(
    writers: &[Writer],
    pick: impl Fn(&Writer) -> (&Histogram<u64>, u64),
    seconds: f64,
) -> Result<Latency> {
    let mut all = new_hist()?;
    let mut errors = 0;
    for w in writers {
        let (hist, e) = pick(w);
        all.add(hist)?;
        errors += e;
    }
    let ms = |us: u64| r3(us as f64 / 1000.0);
    Ok(Latency {
        writes: all.len(),
        writes_per_s: r3(all.len() as f64 / seconds.max(f64::MIN_POSITIVE)),
        p50_ms: ms(all.value_at_quantile(0.50)),
        p99_ms: ms(all.value_at_quantile(0.99)),
        max_ms: ms(all.max()),
        errors,
    })
}

/// Full listings, linearizable and serializable in turn, until `at_least` has passed.
struct ListingJob {
    endpoints: Vec<String>,
    retry: percy_client::RetryPolicy,
    security: percy_client::Security,
    prefix: String,
    tasks: usize,
    at_least: Duration,
}

impl ListingJob {
    async fn run(self) -> Result<Vec<Pass>> {
        let client = Client::connect_secure(&self.endpoints, self.retry, &self.security)
            .await
            .context("connect the lister")?;
        let started = Instant::now();
        let mut passes = Vec::new();
        loop {
            for consistency in [Consistency::Linearizable, Consistency::Serializable] {
                passes.push(list_all(&client, consistency, &self.prefix, self.tasks).await?);
            }
            if started.elapsed() >= self.at_least {
                return Ok(passes);
            }
        }
    }
}

/// Pages through every task with the largest page; counts how often each of the run's
/// `tasks` tasks (ids `prefix` + index) was listed.
async fn list_all(
    client: &Client,
    consistency: Consistency,
    prefix: &str,
    tasks: usize,
) -> Result<Pass> {
    let started = Instant::now();
    let mut seen = vec![0u32; tasks];
    let mut token = String::new();
    let mut pages = 0u64;
    let mut listed = 0u64;
    let mut max_page = Duration::ZERO;
    let filter = TaskFilter::default();
    loop {
        let t0 = Instant::now();
        let page = client
            .list_tasks_page(&filter, MAX_PAGE_SIZE, &token, consistency)
            .await
            .with_context(|| format!("list tasks, page {}", pages + 1))?;
        max_page = max_page.max(t0.elapsed());
        pages += 1;
        listed += page.tasks.len() as u64;
        for task in &page.tasks {
            let index = task
                .id
                .strip_prefix(prefix)
                .and_then(|i| i.parse::<usize>().ok());
            if let Some(slot) = index.and_then(|i| seen.get_mut(i)) {
                *slot += 1;
            }
        }
        if page.next_page_token.is_empty() {
            break;
        }
        if page.next_page_token == token {
            return Err(anyhow!(
                "the server gave back the same page token {token:?}"
            ));
        }
        token = page.next_page_token;
    }
    Ok(Pass {
        consistency: match consistency {
            Consistency::Serializable => "serializable",
            _ => "linearizable",
        },
        pages,
        tasks_listed: listed,
        seconds: r3(started.elapsed().as_secs_f64()),
        max_page_ms: r3(max_page.as_secs_f64() * 1000.0),
        missing: seen.iter().filter(|n| **n == 0).count(),
        duplicates: seen.iter().filter(|n| **n > 1).count(),
    })
}
