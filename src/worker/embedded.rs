//! The embedded development cluster: librdkafka's in-process mock cluster on a real
//! TCP port, so that `run` works with no broker installed. Nothing survives the process.

use rdkafka::mocking::MockCluster;
use std::sync::mpsc;
use std::thread::JoinHandle;

/// The mock cluster keeps only the last 5 MB (and 100,000 batches) of each partition,
/// a limit librdkafka does not let us configure; it drops older records silently. With
/// this many partitions a topic keeps 80 MB, far more than a quick start produces, so
/// the `identities` a user just made can still be read from the beginning.
pub(crate) const MIN_PARTITIONS: i32 = 16;

/// A running mock cluster. It lives on a thread of its own (the handle is not `Send`)
/// and stops when this value is dropped.
pub(crate) struct EmbeddedCluster {
    bootstrap: String,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EmbeddedCluster {
    /// Starts a one-broker cluster with `topics`, each with `partitions` partitions, or
    /// [`MIN_PARTITIONS`] if that is more.
    pub(crate) fn start(topics: &[&str], partitions: i32) -> anyhow::Result<EmbeddedCluster> {
        let partitions = partitions.max(MIN_PARTITIONS);
        let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<String>>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("embedded-kafka".into())
            .spawn(move || {
                let started =
                    MockCluster::new(1)
                        .map_err(anyhow::Error::from)
                        .and_then(|cluster| {
                            for topic in &topics {
                                cluster.create_topic(topic, partitions, 1)?;
                            }
                            Ok(cluster)
                        });
                match started {
                    Ok(cluster) => {
                        let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                        // Until the owner drops us (or goes away).
                        let _ = stop_rx.recv();
                        drop(cluster);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })?;
        let bootstrap = ready_rx.recv()??;
        Ok(EmbeddedCluster {
            bootstrap,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    pub(crate) fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }
}

impl Drop for EmbeddedCluster {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
