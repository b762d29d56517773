//! Request counters: atomics for the totals, a read-mostly map for per-model counts, and the
//! guard that tells a finished response from one whose client went away.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use serde::{Deserialize, Serialize};

/// How many distinct model names `by_model` tracks; further names are counted under
/// [`OTHER_MODELS`], so clients sending random names cannot grow memory without bound.
const MAX_TRACKED_MODELS: usize = 1024;

/// The `by_model` key that counts models beyond the first 1024 distinct names.
pub const OTHER_MODELS: &str = "<other>";

/// A snapshot of the counters (what `GET /admin/stats` returns).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Stats {
    /// API requests received (everything except `/admin/*`, `/healthz` and `/`).
    pub requests: u64,
    /// API requests in flight now (not zeroed by a reset).
    pub active: u64,
    /// API requests whose response the mock finished (faults included).
    pub completed: u64,
    /// API requests whose client went away before the response finished.
    pub cancelled: u64,
    /// Requests per model name as sent by the client.
    pub by_model: BTreeMap<String, u64>,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    requests: AtomicU64,
    active: AtomicU64,
    completed: AtomicU64,
    cancelled: AtomicU64,
    by_model: RwLock<HashMap<String, AtomicU64>>,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> Stats {
        let by_model = self
            .by_model
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(name, count)| (name.clone(), count.load(Ordering::Relaxed)))
            .collect();
        Stats {
            requests: self.requests.load(Ordering::Relaxed),
            active: self.active.load(Ordering::Relaxed),
            completed: self.completed.load(Ordering::Relaxed),
            cancelled: self.cancelled.load(Ordering::Relaxed),
            by_model,
        }
    }

    /// Zeroes everything but `active`, which counts requests still running.
    pub(crate) fn reset(&self) {
        self.requests.store(0, Ordering::Relaxed);
        self.completed.store(0, Ordering::Relaxed);
        self.cancelled.store(0, Ordering::Relaxed);
        self.by_model
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    pub(crate) fn count_model(&self, model: &str) {
        {
            let map = self.by_model.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(count) = map.get(model) {
                count.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let mut map = self
            .by_model
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let key = if map.len() >= MAX_TRACKED_MODELS && !map.contains_key(model) {
            OTHER_MODELS
        } else {
            model
        };
        map.entry(key.to_owned())
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts one API request: `requests` and `active` on creation; on drop `active` goes down and
/// either `completed` (after [`finish`](Self::finish)) or `cancelled` goes up.
#[derive(Debug)]
pub(crate) struct RequestGuard {
    counters: Arc<Counters>,
    finished: bool,
}

impl RequestGuard {
    pub(crate) fn new(counters: Arc<Counters>) -> Self {
        counters.requests.fetch_add(1, Ordering::Relaxed);
        counters.active.fetch_add(1, Ordering::Relaxed);
        Self {
            counters,
            finished: false,
        }
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Marks the response as fully handed to the connection.
    pub(crate) fn finish(&mut self) {
        self.finished = true;
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let counters = &self.counters;
        counters.active.fetch_sub(1, Ordering::Relaxed);
        if self.finished {
            counters.completed.fetch_add(1, Ordering::Relaxed);
        } else {
            counters.cancelled.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_counts_completion_and_cancellation() {
        let counters = Arc::new(Counters::default());
        let mut done = RequestGuard::new(Arc::clone(&counters));
        let dropped = RequestGuard::new(Arc::clone(&counters));
        assert_eq!(counters.snapshot().active, 2);
        done.finish();
        drop(done);
        drop(dropped);
        let stats = counters.snapshot();
        assert_eq!(
            (
                stats.requests,
                stats.active,
                stats.completed,
                stats.cancelled
            ),
            (2, 0, 1, 1)
        );
    }

    #[test]
    fn reset_keeps_active_requests_consistent() {
        let counters = Arc::new(Counters::default());
        let mut guard = RequestGuard::new(Arc::clone(&counters));
        counters.count_model("m");
        counters.reset();
        assert_eq!(counters.snapshot().active, 1);
        assert!(counters.snapshot().by_model.is_empty());
        guard.finish();
        drop(guard);
        let stats = counters.snapshot();
        assert_eq!((stats.requests, stats.active, stats.completed), (0, 0, 1));
    }

    #[test]
    fn model_names_are_bounded() {
        let counters = Counters::default();
        for i in 0..MAX_TRACKED_MODELS + 10 {
            counters.count_model(&format!("m{i}"));
        }
        counters.count_model("m0");
        let by_model = counters.snapshot().by_model;
        assert_eq!(by_model.len(), MAX_TRACKED_MODELS + 1);
        assert_eq!(by_model[OTHER_MODELS], 10);
        assert_eq!(by_model["m0"], 2);
    }
}
