//! What one execution cost, measured by the host: CPU time spent in the
//! guest (the thread's CPU clock read around each poll of the guest, so a
//! guest waiting on a host call or a timer costs nothing meanwhile), its
//! peak linear memory, instances, outbound requests and bytes, host calls
//! by kind, and output kept.

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

/// A future whose CPU time across its polls is added to `spent`; it ends
/// with `None`, dropping nothing yet, once `spent` passes `limit`.
pub struct Metered<'a, F> {
    inner: Pin<&'a mut F>,
    spent: &'a mut u64,
    limit: Option<u64>,
}

impl<'a, F> Metered<'a, F> {
    /// Meters `inner`, adding to `spent`, stopping past `limit` µs.
    pub fn new(inner: Pin<&'a mut F>, spent: &'a mut u64, limit: Option<u64>) -> Self {
        Self {
            inner,
            spent,
            limit,
        }
    }
}

impl<F: Future> Future for Metered<'_, F> {
    type Output = Option<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<F::Output>> {
        let before = thread_cpu_us();
        let polled = self.inner.as_mut().poll(cx);
        let after = thread_cpu_us();
        *self.spent += after.saturating_sub(before);
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

    #[tokio::test]
    async fn counts_cpu_spent_in_polls_not_time_spent_waiting() {
        let mut spent = 0;
        let work = async {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            // 50 ms of this thread's CPU, however long a busy machine
            // takes to give it.
            let mut x = 0u64;
            let from = thread_cpu_us();
            while thread_cpu_us() - from < 50_000 {
                x = x.wrapping_add(std::hint::black_box(1));
            }
            x
        };
        let mut work = std::pin::pin!(work);
        Metered::new(work.as_mut(), &mut spent, None).await;
        // The loop's CPU, and not the 200 ms spent waiting.
        assert!((50_000..150_000).contains(&spent), "{spent} µs");
    }
}
