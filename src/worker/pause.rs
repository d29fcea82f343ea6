//! Pausing the assignment while a batch backs off, so that nothing more is fetched;
//! the consumer loop keeps polling, which keeps the group membership alive.

use super::step::Pause;
use super::Kafka;
use crate::metrics::METRICS;
use rdkafka::consumer::Consumer;
use std::sync::atomic::Ordering;

impl Pause for Kafka {
    /// Pauses the assignment, unless it is paused already.
    fn pause(&self) {
        let paused = &self.context().paused;
        // Set first: a partition assigned from now on starts paused.
        if paused.swap(true, Ordering::SeqCst) {
            return;
        }
        let done = self
            .assignment()
            .is_ok_and(|assignment| Consumer::pause(self, &assignment).is_ok());
        if done {
            METRICS.partitions_paused.set(1);
        } else {
            paused.store(false, Ordering::SeqCst);
        }
    }

    /// Resumes the assignment after a back-off.
    fn resume(&self) {
        let paused = &self.context().paused;
        if !paused.load(Ordering::SeqCst) {
            return;
        }
        if let Ok(assignment) = self.assignment() {
            if let Err(e) = Consumer::resume(self, &assignment) {
                tracing::warn!(error = %e, "cannot resume partitions");
                return;
            }
        }
        paused.store(false, Ordering::SeqCst);
        METRICS.partitions_paused.set(0);
        tracing::info!("resumed after back-off");
    }
}
