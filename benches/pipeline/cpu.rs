//! CPU time of the whole machine during a phase, from `/proc/stat`: every process
//! counts (the service, PostgreSQL, the broker, this load generator), because on a
//! small machine they all share the same cores.

use serde::Serialize;
use std::time::Instant;

/// Busy core-seconds since the meter started.
pub struct CpuMeter {
    busy: Option<f64>,
    started: Instant,
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct CpuUse {
    /// Core-seconds spent outside the idle loop, by every process.
    pub core_seconds: f64,
    /// `core_seconds` over the phase's wall time: how many cores were busy on average.
    pub busy_cores: f64,
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
        CpuUse {
            core_seconds,
            busy_cores: core_seconds / self.started.elapsed().as_secs_f64(),
        }
    }
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
