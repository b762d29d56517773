//! Rates over a sliding time window computed from cumulative counters.
//!
//! Brokers expose cumulative counters (JetStream's stream `last_seq` and consumer `delivered`,
//! Redis's `entries-added` and `entries-read`); a rate is the counter's growth over a window.
//! Counters reset when a broker restarts or a stream is recreated, so [`RateWindow`] treats a
//! counter that goes backwards as a new baseline: it never reports a negative rate.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// How many samples a window keeps at most (besides the anchor before the window start).
const MAX_SAMPLES: u32 = 60;

/// A per-second rate of one cumulative counter over a sliding window.
///
/// Feed it readings with [`observe`](RateWindow::observe); it keeps at most about 60 samples
/// (readings closer together than `window / 60` overwrite the newest one), so memory is bounded
/// however often it is fed.
///
/// ```
/// use std::time::Duration;
/// use quorum_queue::rate::RateWindow;
/// use tokio::time::Instant;
///
/// let mut rate = RateWindow::new(Duration::from_secs(60));
/// let t0 = Instant::now();
/// assert_eq!(rate.observe(t0, 1_000), None); // one sample: no rate yet
/// assert_eq!(rate.observe(t0 + Duration::from_secs(10), 1_500), Some(50.0));
/// // The broker restarted: the counter went backwards; it becomes the new baseline.
/// assert_eq!(rate.observe(t0 + Duration::from_secs(20), 10), None);
/// assert_eq!(rate.observe(t0 + Duration::from_secs(30), 110), Some(10.0));
/// ```
#[derive(Clone, Debug)]
pub struct RateWindow {
    window: Duration,
    resolution: Duration,
    samples: VecDeque<(Instant, u64)>,
}

impl RateWindow {
    /// A window of this length (a zero window is treated as 1 ms).
    pub fn new(window: Duration) -> Self {
        let window = window.max(Duration::from_millis(1));
        RateWindow {
            window,
            resolution: window / MAX_SAMPLES,
            samples: VecDeque::new(),
        }
    }

    /// The window's length.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Records the counter's value at `now` and returns the rate ([`rate`](RateWindow::rate)).
    ///
    /// A value lower than the previous one, or a time earlier than the previous one, starts a new
    /// baseline (the old samples are dropped).
    pub fn observe(&mut self, now: Instant, cumulative: u64) -> Option<f64> {
        if let Some(&(at, value)) = self.samples.back()
            && (cumulative < value || now < at)
        {
            self.samples.clear();
        }
        let len = self.samples.len();
        if len >= 2
            && let Some(&(before, _)) = self.samples.get(len - 2)
            && now.duration_since(before) < self.resolution
        {
            // Too close to the previous sample: refresh the newest instead of growing.
            if let Some(last) = self.samples.back_mut() {
                *last = (now, cumulative);
            }
        } else {
            self.samples.push_back((now, cumulative));
        }
        // Keep exactly one sample at or before the window start as the anchor.
        if let Some(start) = now.checked_sub(self.window) {
            while self.samples.len() > 2 && self.samples.get(1).is_some_and(|&(at, _)| at <= start)
            {
                self.samples.pop_front();
            }
        }
        self.rate()
    }

    /// The counter's growth per second between the oldest kept sample (the last one at or before
    /// the window start, or the first one after a reset) and the newest; `None` until two samples
    /// at different times exist. Never negative.
    pub fn rate(&self) -> Option<f64> {
        let (first_at, first) = *self.samples.front()?;
        let (last_at, last) = *self.samples.back()?;
        let elapsed = last_at.checked_duration_since(first_at)?;
        if elapsed.is_zero() {
            return None;
        }
        Some(last.saturating_sub(first) as f64 / elapsed.as_secs_f64())
    }

    /// Forgets every sample.
    pub fn reset(&mut self) {
        self.samples.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[tokio::test(start_paused = true)]
    async fn rate_over_the_window() {
        let mut r = RateWindow::new(secs(60));
        let t0 = Instant::now();
        assert_eq!(r.observe(t0, 0), None);
        assert_eq!(r.observe(t0, 5), None, "same instant: no elapsed time");
        assert_eq!(r.observe(t0 + secs(10), 100), Some(10.0));
        assert_eq!(r.observe(t0 + secs(20), 300), Some(15.0));
        assert_eq!(r.rate(), Some(15.0));
    }

    #[tokio::test(start_paused = true)]
    async fn old_samples_leave_the_window() {
        let mut r = RateWindow::new(secs(10));
        let t0 = Instant::now();
        // 100/s for 10 s, then idle.
        for i in 0..=10 {
            r.observe(t0 + secs(i), i * 100);
        }
        assert_eq!(r.rate(), Some(100.0));
        for i in 11..=30 {
            r.observe(t0 + secs(i), 1_000);
        }
        assert_eq!(r.rate(), Some(0.0), "idle for longer than the window");
        assert!(r.samples.len() <= MAX_SAMPLES as usize + 2);
    }

    #[tokio::test(start_paused = true)]
    async fn counter_reset_is_a_new_baseline_never_negative() {
        let mut r = RateWindow::new(secs(60));
        let t0 = Instant::now();
        r.observe(t0, 10_000);
        assert_eq!(r.observe(t0 + secs(1), 10_100), Some(100.0));
        // Broker restarted: counter back near zero.
        assert_eq!(r.observe(t0 + secs(2), 3), None);
        let after = r.observe(t0 + secs(4), 43).unwrap();
        assert_eq!(after, 20.0);
        assert!(after >= 0.0);
        // Time going backwards (a different clock) is also a new baseline.
        assert_eq!(r.observe(t0, 50), None);
    }

    #[tokio::test(start_paused = true)]
    async fn memory_stays_bounded_under_frequent_samples() {
        let mut r = RateWindow::new(secs(60));
        let t0 = Instant::now();
        for i in 0..100_000u64 {
            r.observe(t0 + Duration::from_millis(i), i);
        }
        assert!(
            r.samples.len() <= MAX_SAMPLES as usize + 2,
            "{}",
            r.samples.len()
        );
        let rate = r.rate().unwrap();
        assert!((rate - 1000.0).abs() < 1.0, "{rate}");
        r.reset();
        assert_eq!(r.rate(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_window_does_not_panic() {
        let mut r = RateWindow::new(Duration::ZERO);
        let t0 = Instant::now();
        r.observe(t0, 0);
        assert_eq!(r.observe(t0 + secs(1), 7), Some(7.0));
        assert_eq!(r.window(), Duration::from_millis(1));
    }
}
