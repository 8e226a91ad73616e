//! What one execution cost, measured by the host: CPU time spent in the
//! guest (the thread's CPU clock read around each poll of the guest, so a
//! guest waiting on a host call or a timer costs nothing meanwhile), its
//! peak linear memory, instances, outbound requests and output kept.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

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
}

/// The calling thread's CPU time in microseconds (`CLOCK_THREAD_CPUTIME_ID`).
pub fn thread_cpu_us() -> u64 {
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
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

/// A future whose CPU time across its polls is added to `spent`.
pub struct Metered<'a, F> {
    inner: Pin<&'a mut F>,
    spent: &'a mut u64,
}

impl<'a, F> Metered<'a, F> {
    /// Meters `inner`, adding to `spent`.
    pub fn new(inner: Pin<&'a mut F>, spent: &'a mut u64) -> Self {
        Self { inner, spent }
    }
}

impl<F: Future> Future for Metered<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let before = thread_cpu_us();
        let polled = self.inner.as_mut().poll(cx);
        let after = thread_cpu_us();
        *self.spent += after.saturating_sub(before);
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_cpu_spent_in_polls_not_time_spent_waiting() {
        let mut spent = 0;
        let work = async {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let mut x = 0u64;
            let until = std::time::Instant::now() + std::time::Duration::from_millis(100);
            while std::time::Instant::now() < until {
                x = x.wrapping_add(std::hint::black_box(1));
            }
            x
        };
        let mut work = std::pin::pin!(work);
        Metered::new(work.as_mut(), &mut spent).await;
        assert!((60_000..200_000).contains(&spent), "{spent} µs");
    }
}
