//! What one execution cost, measured by the host: CPU time spent in the
//! guest (measured around each poll of the guest, so a guest waiting on a
//! host call or a timer costs nothing meanwhile; see [`Metered`]), its
//! peak linear memory, instances, outbound requests and bytes, host calls
//! by kind, and output kept.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// What one execution used (as stored and sent by a standalone worker; a
/// figure left out is 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct Resources {
    /// CPU time spent polling the guest, in microseconds.
    pub cpu_us: u64,
    /// The largest its linear memory grew to, in bytes.
    pub peak_memory_bytes: u64,
    /// Component instances created for it.
    pub instances: u32,
    /// Outbound HTTP requests it sent (denied ones included).
    pub outbound_requests: u32,
    /// Bytes of stdout kept (after redaction and the cap).
    pub stdout_bytes: u64,
    /// Bytes of stderr kept (after redaction and the cap).
    pub stderr_bytes: u64,
    /// Bytes of request bodies its outbound requests sent.
    pub outbound_bytes_sent: u64,
    /// Bytes of response bodies its outbound requests received.
    pub outbound_bytes_received: u64,
    /// Its calls to the host, by kind.
    pub host_calls: crate::calls::HostCalls,
}

/// A pack's quotas on each of its executions: past one the execution
/// fails, its error naming the quota and the figure reached. `None`: the
/// server's own limit only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct Quotas {
    /// Bytes one linear memory may grow to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_memory: Option<usize>,
    /// CPU time spent in the guest (measured like [`Resources::cpu_us`]).
    #[serde(skip_serializing_if = "Option::is_none", with = "millis")]
    #[schema(value_type = Option<u64>)]
    pub max_cpu: Option<std::time::Duration>,
    /// Outbound HTTP requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_outbound_requests: Option<u32>,
}

impl Quotas {
    /// Whether it sets none.
    pub fn is_none(&self) -> bool {
        *self == Quotas::default()
    }
}

/// A duration as whole milliseconds on the wire.
mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_u64(d.as_millis() as u64),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

/// The calling thread's CPU time in nanoseconds (`CLOCK_THREAD_CPUTIME_ID`).
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a
    // constant every supported kernel has.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Polls of an execution shorter than this, up to its first longer one,
/// are timed on the monotonic clock. The thread's CPU clock is a system
/// call (0.6-1.6 µs a read on a loaded 2-core machine, where the
/// monotonic clock is a vDSO read of tens of nanoseconds); read twice
/// around every poll it cost more than a whole small action's poll. A
/// poll this short leaves the scheduler no room to give the thread's core
/// to others for long, so it counts at most this much time the thread did
/// not run; a guest that computes for longer is measured on its CPU clock
/// from its first long poll on (it yields at every epoch tick, so that
/// first poll is one tick at most).
pub const SHORT_POLL: Duration = Duration::from_micros(100);

/// A future whose CPU time across its polls is added to `spent` (in
/// microseconds); it ends with `None`, dropping nothing yet, once `spent`
/// passes `limit`.
///
/// Each poll is timed on the monotonic clock while the polls are shorter
/// than [`SHORT_POLL`]; from the first longer one on, on the thread's CPU
/// clock (`CLOCK_THREAD_CPUTIME_ID`), so a long-running guest's figure is
/// the CPU it was given, not the time it waited for a core.
pub struct Metered<'a, F> {
    inner: Pin<&'a mut F>,
    spent: &'a mut u64,
    limit: Option<u64>,
    /// Nanoseconds so far (short polls are summed unrounded).
    nanos: u64,
    /// Whether polls are timed on the thread's CPU clock.
    on_cpu_clock: bool,
}

impl<'a, F> Metered<'a, F> {
    /// Meters `inner`, adding to `spent`, stopping past `limit` µs.
    pub fn new(inner: Pin<&'a mut F>, spent: &'a mut u64, limit: Option<u64>) -> Self {
        Self {
            inner,
            nanos: spent.saturating_mul(1000),
            spent,
            limit,
            on_cpu_clock: false,
        }
    }
}

impl<F: Future> Future for Metered<'_, F> {
    type Output = Option<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<F::Output>> {
        let polled = if self.on_cpu_clock {
            let before = thread_cpu_ns();
            let polled = self.inner.as_mut().poll(cx);
            self.nanos += thread_cpu_ns().saturating_sub(before);
            polled
        } else {
            let began = Instant::now();
            let polled = self.inner.as_mut().poll(cx);
            let took = began.elapsed();
            self.nanos += u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
            self.on_cpu_clock = took >= SHORT_POLL;
            polled
        };
        *self.spent = self.nanos / 1000;
        match polled {
            Poll::Ready(out) => Poll::Ready(Some(out)),
            // A guest yields at every epoch tick, so this is looked at
            // every few milliseconds of its CPU.
            Poll::Pending if self.limit.is_some_and(|l| *self.spent > l) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spins on the thread's CPU clock for `micros` of CPU.
    fn burn(micros: u64) -> u64 {
        let mut x = 0u64;
        let from = thread_cpu_ns();
        while thread_cpu_ns() - from < micros * 1000 {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        x
    }

    #[tokio::test]
    async fn counts_cpu_spent_in_polls_not_time_spent_waiting() {
        let mut spent = 0;
        let work = async {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            // 50 ms of this thread's CPU, however long a busy machine
            // takes to give it.
            burn(50_000)
        };
        let mut work = std::pin::pin!(work);
        Metered::new(work.as_mut(), &mut spent, None).await;
        // The loop's CPU, and not the 200 ms spent waiting.
        assert!((50_000..150_000).contains(&spent), "{spent} µs");
    }

    #[tokio::test]
    async fn from_the_first_long_poll_on_a_poll_counts_cpu_not_time_off_the_core() {
        let mut spent = 0;
        let work = async {
            burn(2_000);
            tokio::task::yield_now().await;
            // Blocking the thread in a poll: 100 ms in which it does not run.
            std::thread::sleep(Duration::from_millis(100));
            tokio::task::yield_now().await;
            burn(1_000)
        };
        let mut work = std::pin::pin!(work);
        Metered::new(work.as_mut(), &mut spent, None).await;
        assert!((3_000..50_000).contains(&spent), "{spent} µs");
    }

    #[tokio::test]
    async fn short_polls_add_up_unrounded() {
        let mut spent = 0;
        let work = async {
            for _ in 0..2000 {
                // Under a microsecond a poll: each would count 0 if
                // rounded to microseconds one by one.
                let began = Instant::now();
                while began.elapsed() < Duration::from_nanos(600) {
                    std::hint::spin_loop();
                }
                tokio::task::yield_now().await;
            }
        };
        let mut work = std::pin::pin!(work);
        Metered::new(work.as_mut(), &mut spent, None).await;
        assert!(spent >= 800, "{spent} µs");
    }

    #[tokio::test]
    async fn stops_once_past_the_limit() {
        let mut spent = 0;
        let work = async {
            loop {
                burn(1_000);
                tokio::task::yield_now().await;
            }
        };
        let mut work = std::pin::pin!(work);
        let out = Metered::new(work.as_mut(), &mut spent, Some(5_000)).await;
        assert!(out.is_none());
        assert!((5_000..20_000).contains(&spent), "{spent} µs");
    }
}
