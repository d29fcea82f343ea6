//! Helpers the tests and the benchmark share; each module is a leaf.
//!
//! - `invariants`: the invariants of docs/contract.md §2, as SQL over the tables;
//! - `names`: unique names, and the topics and group of one test or benchmark run.

pub mod invariants;
pub mod names;
