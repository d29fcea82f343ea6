//! Summaries of measured samples, shared by every phase that reports latencies.

/// The `q` quantile of `sorted` (ascending) by the nearest-rank method; 0 when empty.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
