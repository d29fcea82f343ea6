//! Pausing the assignment while a batch backs off, so that nothing more is fetched;
//! the consumer loop keeps polling, which keeps the group membership alive.

use super::batch::Kafka;
use crate::metrics::METRICS;
use rdkafka::consumer::Consumer;
use std::sync::atomic::Ordering;

/// Pauses the assignment, unless it is paused already.
pub(super) fn pause(consumer: &Kafka) {
    let paused = &consumer.context().paused;
    // Set first: a partition assigned from now on starts paused.
    if paused.swap(true, Ordering::SeqCst) {
        return;
    }
    let done = consumer
        .assignment()
        .is_ok_and(|assignment| consumer.pause(&assignment).is_ok());
    if done {
        METRICS.partitions_paused.set(1);
    } else {
        paused.store(false, Ordering::SeqCst);
    }
}

/// Resumes the assignment after a back-off.
pub(super) fn resume(consumer: &Kafka) {
    let paused = &consumer.context().paused;
    if !paused.load(Ordering::SeqCst) {
        return;
    }
    if let Ok(assignment) = consumer.assignment() {
        if let Err(e) = consumer.resume(&assignment) {
            tracing::warn!(error = %e, "cannot resume partitions");
            return;
        }
    }
    paused.store(false, Ordering::SeqCst);
    METRICS.partitions_paused.set(0);
    tracing::info!("resumed after back-off");
}
