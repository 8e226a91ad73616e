//! How far ahead a worker takes work: from the recent run time of its
//! executions, what its slots will begin within a window. Short actions are
//! claimed (and marked running) ahead in batches so no slot waits for a
//! write or a request; second-long ones are never hoarded.
//!
//! The embedded worker and `attune worker` pace themselves with the same
//! formula.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How much claimed-ahead work the worker may hold: what it expects to start
/// within this window.
pub const AHEAD_WINDOW: Duration = Duration::from_millis(10);

/// For short actions, executions are marked running about this long before
/// a slot begins them (then one write starts a batch, and the slots do not
/// wait for it); the recorded start is corrected when the result is.
pub const PIPELINE_WINDOW: Duration = Duration::from_millis(1);

/// Most executions marked running ahead of the slots.
const MAX_PIPELINE: usize = 64;

/// Most executions claimed ahead, whatever the pace.
const MAX_AHEAD: usize = 256;

/// Recent run time of the worker's executions (moving average, µs; 0 before
/// the first run).
#[derive(Default)]
pub struct Pace(AtomicU64);

impl Pace {
    pub fn record(&self, took: Duration) {
        let us = (took.as_micros() as u64).max(1);
        let old = self.0.load(Ordering::Relaxed);
        let new = if old == 0 { us } else { (old * 7 + us) / 8 };
        self.0.store(new, Ordering::Relaxed);
    }

    /// Executions to mark running beyond the idle slots: about what
    /// `slots` begin within [`PIPELINE_WINDOW`].
    pub fn pipeline(&self, slots: usize) -> usize {
        self.within(PIPELINE_WINDOW, slots).min(MAX_PIPELINE)
    }

    /// Executions to claim beyond the free slots: about what `slots` begin
    /// within [`AHEAD_WINDOW`].
    pub fn ahead(&self, slots: usize) -> usize {
        self.within(AHEAD_WINDOW, slots).min(MAX_AHEAD)
    }

    /// `slots` run in parallel, so about `slots × window / run time` begin
    /// within `window`; none before the first run is measured.
    fn within(&self, window: Duration, slots: usize) -> usize {
        match self.0.load(Ordering::Relaxed) {
            0 => 0,
            us => (slots as u64 * window.as_micros() as u64 / us) as usize,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_AHEAD, MAX_PIPELINE, Pace};
    use std::time::Duration;

    #[test]
    fn claims_ahead_only_what_starts_within_the_window() {
        let pace = Pace::default();
        assert_eq!(pace.ahead(2), 0, "nothing measured: no claim ahead");
        assert_eq!(
            pace.pipeline(2),
            0,
            "nothing measured: nothing started ahead"
        );
        pace.record(Duration::from_micros(100));
        // Two slots, 100 µs a run: 200 begin within 10 ms, 20 within 1 ms.
        assert_eq!(pace.ahead(2), 200);
        assert_eq!(pace.pipeline(2), 20);
        pace.record(Duration::from_nanos(10));
        assert!(pace.ahead(2) <= MAX_AHEAD);
        assert!(pace.pipeline(2) <= MAX_PIPELINE);
        let slow = Pace::default();
        slow.record(Duration::from_secs(1));
        assert_eq!(slow.ahead(16), 0, "second-long actions are not hoarded");
        assert_eq!(slow.pipeline(16), 0);
        // The average follows recent runs.
        for _ in 0..200 {
            slow.record(Duration::from_millis(1));
        }
        assert_eq!(slow.ahead(2), 20);
    }
}
