//! Names no other test or benchmark run uses: a unique suffix, and the topics and
//! group of one test. Topic administration is `tests/support/broker.rs`'s.

/// A unique suffix for databases, topics and groups of one test.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// The input, output and dead-letter topics and the consumer group of one test.
#[derive(Clone, Debug)]
pub struct Topics {
    pub input: String,
    pub output: String,
    pub dlq: String,
    pub group: String,
}

impl Topics {
    pub fn unique(prefix: &str) -> Topics {
        let base = unique(prefix);
        Topics {
            input: format!("{base}.in"),
            output: format!("{base}.out"),
            dlq: format!("{base}.dlq"),
            group: format!("{base}.group"),
        }
    }

    pub fn names(&self) -> [&str; 3] {
        [&self.input, &self.output, &self.dlq]
    }

    /// These topics, this group and `brokers`, as the environment of a child process.
    pub fn env(&self, brokers: &str) -> Vec<(String, String)> {
        [
            ("KAFKA_BROKERS", brokers),
            ("KAFKA_INPUT_TOPIC", &self.input),
            ("KAFKA_OUTPUT_TOPIC", &self.output),
            ("KAFKA_DLQ_TOPIC", &self.dlq),
            ("KAFKA_GROUP_ID", &self.group),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }
}
