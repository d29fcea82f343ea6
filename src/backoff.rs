//! The back-off of every retry loop that waits for a dependency (PostgreSQL, the
//! broker): jittered exponential delays from `worker.backoff_initial`, doubling up
//! to `worker.backoff_max` (backon's schedule; each delay is the step plus up to
//! as much again of jitter), cut short by shutdown.

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Shutdown was requested while waiting.
#[derive(Debug, thiserror::Error)]
#[error("shutdown requested during a back-off")]
pub(crate) struct Cancelled;

/// The delays of one retry loop; [`Backoff::reset`] starts again from the first.
pub(crate) struct Backoff {
    schedule: ExponentialBuilder,
    delays: ExponentialBackoff,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Backoff {
        let schedule = ExponentialBuilder::new()
            .with_min_delay(initial)
            .with_max_delay(max)
            .with_jitter()
            .without_max_times();
        Backoff {
            delays: schedule.build(),
            schedule,
            attempt: 0,
        }
    }

    /// Waits done since the last reset, for the logs.
    pub(crate) fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Sleeps the next delay; returns early on shutdown.
    pub(crate) async fn wait(&mut self, shutdown: &CancellationToken) -> Result<(), Cancelled> {
        let delay = self.next_delay();
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => Err(Cancelled),
            _ = tokio::time::sleep(delay) => Ok(()),
        }
    }

    /// After a success: the next failure waits the first delay again.
    pub(crate) fn reset(&mut self) {
        self.delays = self.schedule.build();
        self.attempt = 0;
    }

    fn next_delay(&mut self) -> Duration {
        self.attempt += 1;
        self.delays.next().expect("the schedule has no limit")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_maximum_and_start_again_after_a_reset() {
        let (initial, max) = (Duration::from_millis(100), Duration::from_millis(1_000));
        let mut backoff = Backoff::new(initial, max);
        let steps: Vec<Duration> = (0..8).map(|_| backoff.next_delay()).collect();
        for (n, delay) in steps.iter().enumerate() {
            let step = (initial * 2u32.pow(n as u32)).min(max);
            assert!(
                *delay >= step && *delay < step * 2,
                "delay {n}: {delay:?} not in [{step:?}, {:?})",
                step * 2
            );
        }
        assert_eq!(backoff.attempt(), 8);
        backoff.reset();
        assert_eq!(backoff.attempt(), 0);
        assert!(backoff.next_delay() < initial * 2);
    }
}
