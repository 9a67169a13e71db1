//! HTTP request counters per service (cluster) and per backend, shared by every worker: requests by
//! status class, the proxy's own error answers by status, and a request-duration histogram.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::http::session::CloseReason as HttpCloseReason;
use crate::http::status::{self, ErrorStatus};

/// Upper bounds (milliseconds) of the request-duration histogram's buckets; `+Inf` is implied.
pub const DURATION_BUCKETS_MS: [u64; 10] = [1, 5, 10, 25, 50, 100, 250, 1_000, 5_000, 30_000];

/// Requests of one service or backend.
#[derive(Debug, Default)]
pub struct HttpCounts {
    /// Final statuses 1xx..5xx (index 0..5); a response cut short before its status is not counted.
    classes: [AtomicU64; 5],
    /// The proxy's own answers, in [`status::ALL`]'s order.
    errors: [AtomicU64; status::ALL.len()],
    /// Requests whose duration is at most each bucket's bound (not cumulative; the last is `+Inf`).
    durations: [AtomicU64; DURATION_BUCKETS_MS.len() + 1],
    duration_sum_ms: AtomicU64,
}

impl HttpCounts {
    /// Counts one finished exchange.
    pub fn count(&self, status: u16, error: Option<ErrorStatus>, duration_ms: u64) {
        if (100..600).contains(&status) {
            self.classes[usize::from(status / 100) - 1].fetch_add(1, Ordering::Relaxed);
        }
        if let Some(error) = error
            && let Some(i) = status::ALL.iter().position(|e| *e == error)
        {
            self.errors[i].fetch_add(1, Ordering::Relaxed);
        }
        let bucket = DURATION_BUCKETS_MS
            .iter()
            .position(|bound| duration_ms <= *bound)
            .unwrap_or(DURATION_BUCKETS_MS.len());
        self.durations[bucket].fetch_add(1, Ordering::Relaxed);
        self.duration_sum_ms
            .fetch_add(duration_ms, Ordering::Relaxed);
    }

    /// Requests per status class, `[1xx, 2xx, 3xx, 4xx, 5xx]`.
    pub fn classes(&self) -> [u64; 5] {
        std::array::from_fn(|i| self.classes[i].load(Ordering::Relaxed))
    }

    /// The proxy's own answers by status (only those counted at least once).
    pub fn errors(&self) -> impl Iterator<Item = (ErrorStatus, u64)> + '_ {
        status::ALL
            .iter()
            .zip(&self.errors)
            .map(|(e, n)| (*e, n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
    }

    /// Requests counted, whatever their outcome.
    pub fn total(&self) -> u64 {
        self.durations
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .sum()
    }

    /// Cumulative histogram `(bound, count)`, `None` for `+Inf`, and the sum in milliseconds.
    pub fn histogram(&self) -> (Vec<(Option<u64>, u64)>, u64) {
        let mut cumulative = 0;
        let buckets = self
            .durations
            .iter()
            .enumerate()
            .map(|(i, n)| {
                cumulative += n.load(Ordering::Relaxed);
                (DURATION_BUCKETS_MS.get(i).copied(), cumulative)
            })
            .collect();
        (buckets, self.duration_sum_ms.load(Ordering::Relaxed))
    }
}

/// Every HTTP session close reason's name, in counter order.
pub const CLOSE_NAMES: [&str; 8] = [
    "client_closed",
    "client_aborted",
    "keepalive_timeout",
    "request_head_timeout",
    "rejected",
    "done",
    "backend_aborted",
    "early_response",
];

/// HTTP client sessions ended per reason (a worker's).
#[derive(Debug, Default)]
pub struct HttpCloseCounts([AtomicU64; CLOSE_NAMES.len()]);

impl HttpCloseCounts {
    pub fn count(&self, reason: HttpCloseReason) {
        let i = match reason {
            HttpCloseReason::ClientClosed => 0,
            HttpCloseReason::ClientAborted => 1,
            HttpCloseReason::KeepAliveTimeout => 2,
            HttpCloseReason::RequestHeadTimeout => 3,
            HttpCloseReason::Rejected(_) => 4,
            HttpCloseReason::Done => 5,
            HttpCloseReason::BackendAborted => 6,
            HttpCloseReason::EarlyResponse => 7,
        };
        self.0[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn all(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        CLOSE_NAMES
            .iter()
            .zip(&self.0)
            .map(|(name, n)| (*name, n.load(Ordering::Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_classes_errors_and_durations() {
        let counts = HttpCounts::default();
        counts.count(200, None, 3);
        counts.count(404, Some(ErrorStatus::NotFound), 0);
        counts.count(502, Some(ErrorStatus::BadGateway), 40_000);
        counts.count(0, None, 7);
        assert_eq!(counts.classes(), [0, 1, 0, 1, 1]);
        let errors: Vec<_> = counts.errors().collect();
        assert_eq!(
            errors,
            vec![(ErrorStatus::NotFound, 1), (ErrorStatus::BadGateway, 1)]
        );
        assert_eq!(counts.total(), 4);
        let (buckets, sum) = counts.histogram();
        assert_eq!(buckets[0], (Some(1), 1));
        assert_eq!(buckets[1], (Some(5), 2));
        assert_eq!(buckets[2], (Some(10), 3));
        assert_eq!(buckets.last(), Some(&(None, 4)));
        assert_eq!(sum, 40_010);
    }
}
