//! The HTTP families of `/metrics`: requests per service and backend by status class, the proxy's
//! own answers, sessions and the backend pool per worker, and the request-duration histogram.
//!
//! The histogram's buckets are counted on the data path (one relaxed add per request, see
//! [`HttpCounts`](crate::routing::http_counts::HttpCounts)) and only rendered here, so it is written
//! in the text format directly rather than observed sample by sample into a `prometheus` histogram.

use std::fmt::Write;

use super::metrics::{Families, count, set};
use super::view::{HttpView, StatsView};

pub(super) fn render(f: &Families, view: &StatsView) {
    let svc_requests = f.counter(
        "service_http_requests_total",
        "HTTP requests routed to a service, by the final status's class",
        &["service", "class"],
    );
    let svc_errors = f.counter(
        "service_http_proxy_errors_total",
        "HTTP answers the proxy gave by itself for a service's requests (502, 503, 504, ...)",
        &["service", "error"],
    );
    let be_requests = f.counter(
        "backend_http_requests_total",
        "HTTP requests a backend answered, by status class",
        &["service", "backend", "class"],
    );
    for service in &view.services {
        let name = service.name.as_str();
        if let Some(http) = &service.http {
            for (class, n) in &http.status {
                count(&svc_requests, &[name, class], *n);
            }
            for (error, n) in &http.errors {
                count(&svc_errors, &[name, error], *n);
            }
        }
        for backend in &service.backends {
            if let Some(http) = &backend.http {
                for (class, n) in &http.status {
                    count(&be_requests, &[name, &backend.address, class], *n);
                }
            }
        }
    }

    let w_sessions = f.gauge(
        "worker_http_sessions",
        "HTTP client connections a worker holds",
        &["worker"],
    );
    let w_pooled = f.gauge(
        "worker_http_pooled_connections",
        "Idle backend connections in a worker's HTTP pool",
        &["worker"],
    );
    let w_reused = f.counter(
        "worker_http_reused_connections_total",
        "HTTP requests sent on a pooled backend connection",
        &["worker"],
    );
    let w_closes = f.counter(
        "worker_http_sessions_closed_total",
        "HTTP client connections that ended, by reason",
        &["worker", "reason"],
    );
    let w_unrouted = f.counter(
        "worker_http_unrouted_errors_total",
        "HTTP requests answered without a route (404) or refused before routing",
        &["worker", "error"],
    );
    for worker in &view.workers {
        let index = worker.index.to_string();
        set(&w_sessions, &[&index], worker.http_sessions);
        set(&w_pooled, &[&index], worker.http_pooled);
        count(&w_reused, &[&index], worker.http_reused);
        for (reason, n) in &worker.http_closes {
            count(&w_closes, &[&index, reason], *n);
        }
        for (error, n) in &worker.http_unrouted.errors {
            count(&w_unrouted, &[&index, error], *n);
        }
    }
}

/// Appends `ringway_http_request_duration_seconds`, per service, to the text exposition.
pub(super) fn render_durations(out: &mut String, view: &StatsView) {
    let services: Vec<(&str, &HttpView)> = view
        .services
        .iter()
        .filter_map(|s| s.http.as_ref().map(|h| (s.name.as_str(), h)))
        .collect();
    if services.is_empty() {
        return;
    }
    let name = "ringway_http_request_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time from a request's first byte to the end of its response"
    );
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (service, http) in services {
        let service = escape(service);
        let (buckets, sum_ms) = &http.durations;
        for (bound, n) in buckets {
            let le = bound.map_or_else(|| "+Inf".to_string(), seconds);
            let _ = writeln!(
                out,
                "{name}_bucket{{service=\"{service}\",le=\"{le}\"}} {n}"
            );
        }
        let total = buckets.last().map_or(0, |(_, n)| *n);
        let _ = writeln!(
            out,
            "{name}_sum{{service=\"{service}\"}} {}",
            seconds(*sum_ms)
        );
        let _ = writeln!(out, "{name}_count{{service=\"{service}\"}} {total}");
    }
}

fn seconds(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// A label value in the text format: backslash, quote and newline escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
