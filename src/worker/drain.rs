//! The rebalance drain (docs/contract.md §6 v2, "Delivery"): before revoked partitions are
//! released, the batch that applies any of them is finished or abandoned, and nothing
//! read from them before the revocation is applied, or stores an offset, afterwards.
//!
//! The consumer loop applies one batch at a time in a task of its own and keeps
//! polling the consumer meanwhile; librdkafka runs the rebalance callback inside that
//! poll, on the loop's thread. The callback ([`Drain::revoke`]) waits, up to
//! `worker.drain_timeout`, for the batch in flight when it holds a revoked partition.
//! Past the deadline it cancels the batch (its futures are dropped, so its open
//! transactions roll back) and waits for the task to let go. Either way the revoked
//! partitions then get a new generation: every message is tagged with its partition's
//! generation when it is read, a message of an older generation is dropped instead of
//! applied, and offsets are stored under the lock that changes generations, so a
//! batch never stores an offset of a partition revoked since it was read.
//!
//! One limit, stated: a transaction whose COMMIT was already sent when the batch is
//! abandoned may still commit. Its events are then in the ledger, and the new owner,
//! which reads them again from the committed offset, finds them applied.
//!
//! The consumer subscribes to one topic, so partitions are named by number alone.

use super::event::Message;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio_util::sync::CancellationToken;

/// Longest the callback waits for a cancelled batch to let go: dropping its futures
/// takes one poll of its task.
const LET_GO_TIMEOUT: Duration = Duration::from_secs(5);

/// What the rebalance callback and the consumer loop share.
pub(crate) struct Drain {
    timeout: Duration,
    state: Mutex<State>,
    /// Signalled when the batch in flight lets go.
    let_go: Condvar,
}

#[derive(Default)]
struct State {
    /// Bumped on every revocation of the partition; absent is 0.
    generations: HashMap<i32, u64>,
    in_flight: Option<InFlight>,
    /// Numbers the batches, so that a ticket lets go of its own batch only.
    batches: u64,
    /// A revocation is waiting for the batch in flight to finish.
    draining: bool,
}

/// The batch being applied.
struct InFlight {
    number: u64,
    partitions: BTreeSet<i32>,
    cancel: CancellationToken,
}

/// A message read from the input topic, with its partition's generation at the time.
pub(super) struct Received {
    pub(super) message: Message,
    pub(super) generation: u64,
}

/// What a revocation found.
#[derive(Clone, Copy, Debug)]
pub(super) enum Revoked {
    /// No batch in flight held a revoked partition.
    Idle,
    /// The batch in flight finished (its offsets stored) within the drain timeout.
    Drained,
    /// The batch in flight did not finish in time and was cancelled, uncommitted.
    Abandoned,
}

impl Revoked {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Revoked::Idle => "idle",
            Revoked::Drained => "drained",
            Revoked::Abandoned => "abandoned",
        }
    }
}

impl Drain {
    pub(super) fn new(timeout: Duration) -> Drain {
        Drain {
            timeout,
            state: Mutex::default(),
            let_go: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state consistent (every change is
        // one assignment), so a poisoned lock is used as it is.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Tags a message just read with its partition's current generation.
    pub(super) fn tag(&self, message: Message) -> Received {
        let generation = generation(&self.lock(), message.position.partition);
        Received {
            message,
            generation,
        }
    }

    /// Registers `batch` as the batch in flight, without its messages of partitions
    /// revoked since they were read (those are dropped: the partitions' new owner reads
    /// them). Returns what is left and the batch's hold on the drain.
    pub(super) fn begin(self: &Arc<Self>, batch: Vec<Received>) -> (Vec<Received>, Ticket) {
        let mut state = self.lock();
        let current: Vec<Received> = batch
            .into_iter()
            .filter(|r| r.generation == generation(&state, r.message.position.partition))
            .collect();
        let cancel = CancellationToken::new();
        state.batches += 1;
        let number = state.batches;
        state.in_flight = Some(InFlight {
            number,
            partitions: current
                .iter()
                .map(|r| r.message.position.partition)
                .collect(),
            cancel: cancel.clone(),
        });
        let ticket = Ticket {
            drain: self.clone(),
            number,
            cancel,
        };
        (current, ticket)
    }

    /// The rebalance callback's part: waits for (or abandons) the batch in flight if it
    /// holds one of `revoked`, then moves the revoked partitions to a new generation.
    /// Blocks the calling thread, at most `drain_timeout` plus [`LET_GO_TIMEOUT`].
    pub(super) fn revoke(&self, revoked: &BTreeSet<i32>) -> Revoked {
        // The batch runs on another worker thread; `block_in_place` hands this thread's
        // other tasks to the runtime while it waits. A current-thread runtime cannot run
        // the batch while this thread waits, so there the batch is abandoned at once.
        match Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(|| {
                self.wait_and_revoke(revoked, self.timeout, LET_GO_TIMEOUT)
            }),
            _ => self.wait_and_revoke(revoked, Duration::ZERO, Duration::ZERO),
        }
    }

    fn wait_and_revoke(
        &self,
        revoked: &BTreeSet<i32>,
        timeout: Duration,
        let_go_timeout: Duration,
    ) -> Revoked {
        let holds = |state: &mut State| {
            state
                .in_flight
                .as_ref()
                .is_some_and(|batch| !batch.partitions.is_disjoint(revoked))
        };
        let mut state = self.lock();
        let mut outcome = Revoked::Idle;
        if holds(&mut state) {
            outcome = Revoked::Drained;
            state.draining = true;
            state = self.wait_while(state, timeout, holds);
            state.draining = false;
            if holds(&mut state) {
                outcome = Revoked::Abandoned;
                if let Some(batch) = &state.in_flight {
                    batch.cancel.cancel();
                }
                state = self.wait_while(state, let_go_timeout, holds);
                if holds(&mut state) && !let_go_timeout.is_zero() {
                    tracing::error!(
                        "a cancelled batch did not let go of revoked partitions in time"
                    );
                }
            }
        }
        for partition in revoked {
            *state.generations.entry(*partition).or_default() += 1;
        }
        outcome
    }

    fn wait_while<'a>(
        &self,
        state: MutexGuard<'a, State>,
        timeout: Duration,
        condition: impl FnMut(&mut State) -> bool,
    ) -> MutexGuard<'a, State> {
        match self.let_go.wait_timeout_while(state, timeout, condition) {
            Ok((state, _)) => state,
            Err(poisoned) => poisoned.into_inner().0,
        }
    }

    fn let_go(&self, state: &mut State) {
        state.in_flight = None;
        self.let_go.notify_all();
    }
}

fn generation(state: &State, partition: i32) -> u64 {
    state.generations.get(&partition).copied().unwrap_or(0)
}

/// The hold of the batch in flight on the drain; dropping it lets go without storing
/// anything (the batch failed or was abandoned).
pub(super) struct Ticket {
    drain: Arc<Drain>,
    number: u64,
    cancel: CancellationToken,
}

impl Ticket {
    /// Cancelled when a revocation abandons the batch.
    pub(super) fn cancelled(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// The batch is done: `store` stores its offsets, under the lock revocations take,
    /// given a check that says whether a message (partition, generation) is still
    /// current; then the batch lets go.
    pub(super) fn finish(self, store: impl FnOnce(&dyn Fn(i32, u64) -> bool)) {
        let mut state = self.drain.lock();
        if state.draining {
            tracing::debug!("batch finished while a revocation waited for it");
        }
        store(&|partition, tagged| tagged == generation(&state, partition));
        self.drain.let_go(&mut state);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut state = self.drain.lock();
        // After `finish` nothing is left to let go of.
        if state
            .in_flight
            .as_ref()
            .is_some_and(|batch| batch.number == self.number)
        {
            self.drain.let_go(&mut state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::event::Source;
    use std::time::Instant;

    fn read(drain: &Drain, partition: i32, offset: i64) -> Received {
        drain.tag(Message {
            key: None,
            value: Some(b"{}".to_vec()),
            headers: Vec::new(),
            position: Source {
                topic: "orders".into(),
                partition,
                offset,
            },
            timestamp_ms: None,
        })
    }

    fn partitions(batch: &[Received]) -> Vec<(i32, i64)> {
        batch
            .iter()
            .map(|r| (r.message.position.partition, r.message.position.offset))
            .collect()
    }

    fn revoked(partitions: &[i32]) -> BTreeSet<i32> {
        partitions.iter().copied().collect()
    }

    /// Spins (no sleeping) until `condition` holds, or fails after five seconds.
    fn until(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::yield_now();
        }
    }

    #[test]
    fn messages_read_before_their_partition_was_revoked_are_dropped_from_the_next_batch() {
        let drain = Arc::new(Drain::new(Duration::from_secs(5)));
        let early = vec![read(&drain, 0, 10), read(&drain, 1, 20)];

        let outcome = drain.revoke(&revoked(&[0]));
        let late = read(&drain, 0, 10);
        let (batch, _ticket) = drain.begin(early.into_iter().chain([late]).collect());

        assert!(matches!(outcome, Revoked::Idle));
        // The stale copy of (0, 10) is gone; the one read again after the revocation stays.
        assert_eq!(partitions(&batch), [(1, 20), (0, 10)]);
    }

    #[test]
    fn a_finished_batch_stores_offsets_only_for_partitions_not_revoked_since_it_was_read() {
        let drain = Arc::new(Drain::new(Duration::from_secs(5)));
        let (batch, ticket) = drain.begin(vec![read(&drain, 0, 1)]);
        let other = read(&drain, 1, 2);

        // Partition 1 is not in the batch: its revocation does not wait.
        let outcome = drain.revoke(&revoked(&[1]));
        let mut current = Vec::new();
        ticket.finish(|is_current| {
            current = vec![
                is_current(0, batch[0].generation),
                is_current(1, other.generation),
            ]
        });

        assert!(matches!(outcome, Revoked::Idle));
        assert_eq!(current, [true, false]);
    }

    #[test]
    fn a_revocation_waits_for_the_batch_in_flight_and_lets_it_store_its_offsets() {
        let drain = Arc::new(Drain::new(Duration::from_secs(30)));
        let (batch, ticket) = drain.begin(vec![read(&drain, 0, 1)]);
        let generation = batch[0].generation;

        let revoking = {
            let drain = drain.clone();
            std::thread::spawn(move || {
                drain.wait_and_revoke(&revoked(&[0]), drain.timeout, LET_GO_TIMEOUT)
            })
        };
        until("the revocation waits", || drain.lock().draining);
        let mut stored = None;
        ticket.finish(|is_current| stored = Some(is_current(0, generation)));
        let outcome = revoking.join().unwrap();

        assert!(matches!(outcome, Revoked::Drained));
        assert_eq!(
            stored,
            Some(true),
            "the offsets are stored before the partition goes"
        );
        let (next, _ticket) = drain.begin(vec![read(&drain, 0, 2)]);
        assert_eq!(partitions(&next), [(0, 2)]);
    }

    #[test]
    fn a_batch_not_finished_within_the_drain_timeout_is_cancelled_and_stores_nothing() {
        let drain = Arc::new(Drain::new(Duration::ZERO));
        let stale = read(&drain, 0, 1);
        let (_batch, ticket) = drain.begin(vec![read(&drain, 0, 1)]);
        let cancelled = ticket.cancelled();
        // The batch's task: it lets go (drops its ticket) once cancelled.
        let task = std::thread::spawn(move || {
            futures::executor::block_on(cancelled.cancelled());
            drop(ticket);
        });

        let outcome = drain.wait_and_revoke(&revoked(&[0]), Duration::ZERO, LET_GO_TIMEOUT);
        task.join().unwrap();

        assert!(matches!(outcome, Revoked::Abandoned));
        assert!(drain.lock().in_flight.is_none());
        let (next, _ticket) = drain.begin(vec![stale]);
        assert!(
            next.is_empty(),
            "what was read before the revocation is not applied"
        );
    }

    #[test]
    fn without_a_multi_thread_runtime_a_revocation_abandons_the_batch_at_once() {
        let drain = Arc::new(Drain::new(Duration::from_secs(30)));
        let (_batch, ticket) = drain.begin(vec![read(&drain, 3, 1)]);

        let outcome = drain.revoke(&revoked(&[3]));

        assert!(matches!(outcome, Revoked::Abandoned));
        assert!(ticket.cancelled().is_cancelled());
    }

    #[test]
    fn an_earlier_batch_letting_go_late_does_not_release_the_batch_in_flight() {
        let drain = Arc::new(Drain::new(Duration::from_secs(30)));
        let (_first, first) = drain.begin(vec![read(&drain, 0, 1)]);
        let (_second, second) = drain.begin(vec![read(&drain, 0, 2)]);

        drop(first);
        let outcome = drain.revoke(&revoked(&[0]));

        assert!(matches!(outcome, Revoked::Abandoned));
        assert!(second.cancelled().is_cancelled());
    }

    #[test]
    fn a_dropped_ticket_lets_go_of_its_partitions() {
        let drain = Arc::new(Drain::new(Duration::from_secs(30)));
        let (_batch, ticket) = drain.begin(vec![read(&drain, 0, 1)]);

        drop(ticket);
        let outcome = drain.revoke(&revoked(&[0]));

        assert!(matches!(outcome, Revoked::Idle));
    }
}
