//! CPU time of the whole machine during a phase, from `/proc/stat`: every process
//! counts (the service, PostgreSQL, the broker, this load generator), because on a
//! small machine they all share the same cores; and who spent it, from each
//! process's `/proc/<pid>/stat`.

use serde::Serialize;
use std::collections::HashMap;
use std::time::Instant;

/// Busy core-seconds since the meter started.
pub struct CpuMeter {
    busy: Option<f64>,
    processes: HashMap<i32, f64>,
    started: Instant,
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct CpuUse {
    /// Core-seconds spent outside the idle loop, by every process.
    pub core_seconds: f64,
    /// `core_seconds` over the phase's wall time: how many cores were busy on average.
    pub busy_cores: f64,
    pub by_process: ByProcess,
}

/// `CpuUse::core_seconds` by who spent them. A process counts with the children it
/// reaped during the phase (PostgreSQL's postmaster reaps exited backends and
/// autovacuum workers); `other` is the rest: the kernel's own threads, other
/// programs, and processes that exited unreaped.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct ByProcess {
    /// `identity-reconciler`.
    pub service: f64,
    /// Every `postgres` process.
    pub postgres: f64,
    /// Every JVM: the Kafka nodes.
    pub broker: f64,
    /// This benchmark's own process: the load generator, the baselines' clients.
    pub load_generator: f64,
    pub other: f64,
}

#[derive(Clone, Copy)]
enum Group {
    Service,
    Postgres,
    Broker,
    LoadGenerator,
}

impl CpuUse {
    /// Microseconds of CPU per event (or record) of the phase.
    pub fn us_per(&self, n: usize) -> f64 {
        self.core_seconds * 1e6 / n.max(1) as f64
    }
}

impl CpuMeter {
    pub fn start() -> CpuMeter {
        CpuMeter {
            processes: process_seconds().map(|(pid, _, s)| (pid, s)).collect(),
            busy: busy_seconds(),
            started: Instant::now(),
        }
    }

    /// Zero where `/proc/stat` cannot be read (not Linux).
    pub fn stop(&self) -> CpuUse {
        let (Some(before), Some(after)) = (self.busy, busy_seconds()) else {
            return CpuUse::default();
        };
        let core_seconds = after - before;
        let mut by = ByProcess::default();
        for (pid, group, seconds) in process_seconds() {
            // A process started during the phase counts from zero.
            let spent = seconds - self.processes.get(&pid).copied().unwrap_or(0.0);
            let slot = match group {
                Group::Service => &mut by.service,
                Group::Postgres => &mut by.postgres,
                Group::Broker => &mut by.broker,
                Group::LoadGenerator => &mut by.load_generator,
            };
            *slot += spent.max(0.0);
        }
        let named = by.service + by.postgres + by.broker + by.load_generator;
        by.other = (core_seconds - named).max(0.0);
        CpuUse {
            core_seconds,
            busy_cores: core_seconds / self.started.elapsed().as_secs_f64(),
            by_process: by,
        }
    }
}

/// The user and system seconds of every process of a group, with those of the
/// children it reaped.
fn process_seconds() -> impl Iterator<Item = (i32, Group, f64)> {
    let own = std::process::id() as i32;
    let ticks = procfs::ticks_per_second() as f64;
    procfs::process::all_processes()
        .into_iter()
        .flatten()
        .filter_map(move |p| {
            let stat = p.ok()?.stat().ok()?;
            let group = match stat.comm.as_str() {
                _ if stat.pid == own => Group::LoadGenerator,
                // `comm` holds the first 15 bytes of the program's name.
                "identity-reconc" => Group::Service,
                "postgres" => Group::Postgres,
                "java" => Group::Broker,
                _ => return None,
            };
            let ticks_spent =
                (stat.utime + stat.stime) as f64 + (stat.cutime + stat.cstime).max(0) as f64;
            Some((stat.pid, group, ticks_spent / ticks))
        })
}

/// Busy time of all CPUs since boot: every field of the `cpu` line but idle and iowait.
fn busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<f64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let busy: f64 = fields.iter().take(8).sum::<f64>() - fields.get(3)? - fields.get(4)?;
    // USER_HZ is 100 on every Linux ABI.
    Some(busy / 100.0)
}
