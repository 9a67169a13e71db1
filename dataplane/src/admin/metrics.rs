//! `/metrics`: the [`StatsView`] in the Prometheus text exposition format (0.0.4).
//!
//! Encoding is left to the `prometheus` crate (the maintained Rust client), so escaping, `HELP`/`TYPE`
//! lines and value formatting are right by construction; names follow Prometheus conventions (counters end
//! in `_total`, bytes in `_bytes_total`). The classic text format is used rather than OpenMetrics because it
//! is what every scraper and `promtool check metrics` accept. The registry is built per scrape from the same
//! view `/stats` serves, so the two always agree.

use prometheus::{Encoder, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

use super::view::StatsView;

/// Prefix of every metric name.
const NAMESPACE: &str = "ringway";

/// Registers the metric families of one scrape.
pub(super) struct Families {
    registry: Registry,
}

impl Families {
    pub(super) fn gauge(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        let family = IntGaugeVec::new(Opts::new(name, help).namespace(NAMESPACE), labels)
            .expect("metric names and labels are valid constants");
        self.registry
            .register(Box::new(family.clone()))
            .expect("each family is registered once");
        family
    }

    pub(super) fn counter(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        let family = IntCounterVec::new(Opts::new(name, help).namespace(NAMESPACE), labels)
            .expect("metric names and labels are valid constants");
        self.registry
            .register(Box::new(family.clone()))
            .expect("each family is registered once");
        family
    }
}

pub(super) fn set(family: &IntGaugeVec, labels: &[&str], value: u64) {
    family
        .with_label_values(labels)
        .set(value.min(i64::MAX as u64) as i64);
}

pub(super) fn count(family: &IntCounterVec, labels: &[&str], value: u64) {
    family.with_label_values(labels).inc_by(value);
}

/// Content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders `view` as Prometheus text.
pub fn render(view: &StatsView) -> String {
    let f = Families {
        registry: Registry::new(),
    };
    let status = f.gauge("status", "1 for the dataplane's current state", &["state"]);
    for state in ["initializing", "serving", "draining"] {
        set(&status, &[state], u64::from(view.status == state));
    }
    set(
        &f.gauge(
            "snapshot_version",
            "Version of the applied route snapshot",
            &[],
        ),
        &[],
        view.snapshot.version,
    );
    set(
        &f.gauge(
            "snapshot_applied_timestamp_seconds",
            "When the applied snapshot was applied (Unix time)",
            &[],
        ),
        &[],
        view.snapshot.applied_at_unix_ms / 1000,
    );

    let l = &view.limits;
    for (name, help, value) in [
        ("fd_limit", "RLIMIT_NOFILE in force", l.fd_limit),
        (
            "max_connections",
            "Connections the dataplane holds at most (--max-connections-total or derived)",
            u64::from(l.max_connections),
        ),
        (
            "connections",
            "Connections open now, all services",
            u64::from(l.connections),
        ),
        (
            "accepting",
            "0 while accepting is paused at the connection cap",
            u64::from(l.accepting),
        ),
        (
            "max_pipes",
            "Splice pipes the dataplane holds at most",
            u64::from(l.max_pipes),
        ),
        (
            "pipes",
            "Splice pipes open now (in use and idle)",
            u64::from(l.pipes),
        ),
    ] {
        set(&f.gauge(name, help, &[]), &[], value);
    }

    let listener_up = f.gauge(
        "listener_up",
        "1 if a listener of the snapshot is open, 0 if it could not be opened (retried with backoff)",
        &["listener", "address"],
    );
    for listener in &view.listeners {
        set(
            &listener_up,
            &[&listener.name, &listener.address],
            u64::from(listener.state == "listening"),
        );
    }

    let svc = ["service"];
    let svc_conns = f.gauge(
        "service_connections",
        "Open connections of a service, all backends",
        &svc,
    );
    let svc_max = f.gauge(
        "service_max_connections",
        "Service-wide connection bound on this dataplane",
        &svc,
    );
    let svc_queued = f.gauge(
        "service_queued_connections",
        "Connections waiting for a free backend slot",
        &svc,
    );
    let svc_closed = f.counter(
        "service_closed_connections_total",
        "Connections of a service that ended, by reason",
        &["service", "reason"],
    );
    let be = ["service", "backend"];
    let be_conns = f.gauge("backend_connections", "Open connections to a backend", &be);
    let be_limit = f.gauge(
        "backend_max_connections",
        "Per-backend limit after division by the group size",
        &be,
    );
    let be_weight = f.gauge("backend_weight", "Backend weight (1-1000)", &be);
    let be_state = f.gauge(
        "backend_state",
        "1 for the backend's state (active, draining, removed)",
        &["service", "backend", "state"],
    );
    let be_opened = f.counter(
        "backend_connections_opened_total",
        "Connections opened to a backend",
        &be,
    );
    let be_failures = f.counter(
        "backend_connect_failures_total",
        "Failed or timed-out connects to a backend",
        &be,
    );
    let be_sent = f.counter(
        "backend_sent_bytes_total",
        "Bytes from clients delivered to a backend",
        &be,
    );
    let be_received = f.counter(
        "backend_received_bytes_total",
        "Bytes from a backend delivered to clients",
        &be,
    );
    for service in &view.services {
        let name = service.name.as_str();
        set(&svc_conns, &[name], u64::from(service.connections));
        set(&svc_max, &[name], u64::from(service.max_connections));
        set(&svc_queued, &[name], u64::from(service.queued));
        for (reason, n) in &service.closes {
            count(&svc_closed, &[name, reason], *n);
        }
        for backend in &service.backends {
            let labels = [name, backend.address.as_str()];
            set(&be_conns, &labels, u64::from(backend.connections));
            if let Some(limit) = backend.limit {
                set(&be_limit, &labels, u64::from(limit));
            }
            if let Some(weight) = backend.weight {
                set(&be_weight, &labels, u64::from(weight));
            }
            for state in ["active", "draining", "removed"] {
                set(
                    &be_state,
                    &[name, &backend.address, state],
                    u64::from(backend.state == state),
                );
            }
            count(&be_opened, &labels, backend.total);
            count(&be_failures, &labels, backend.connect_failures);
            count(&be_sent, &labels, backend.bytes_in);
            count(&be_received, &labels, backend.bytes_out);
        }
    }

    let w = ["worker"];
    let w_conns = f.gauge("worker_connections", "Connections a worker holds", &w);
    let w_queued = f.gauge(
        "worker_queued_connections",
        "Connections waiting in a worker's queue",
        &w,
    );
    let w_accepted = f.counter(
        "worker_accepted_connections_total",
        "Connections accepted by a worker",
        &w,
    );
    let w_errors = f.counter(
        "worker_connection_errors_total",
        "Connections a worker ended early, by reason",
        &["worker", "reason"],
    );
    let w_pipes = f.gauge(
        "worker_idle_pipes",
        "Empty splice pipes a worker keeps for reuse",
        &w,
    );
    let w_copied = f.counter(
        "worker_copied_turns_total",
        "Splice turns that copied through a buffer because no pipe could be had",
        &w,
    );
    let w_bytes = f.counter(
        "worker_forwarded_bytes_total",
        "Bytes a worker delivered, by direction",
        &["worker", "direction"],
    );
    for worker in &view.workers {
        let index = worker.index.to_string();
        set(&w_conns, &[&index], worker.connections);
        set(&w_queued, &[&index], worker.queued);
        count(&w_accepted, &[&index], worker.accepted);
        for (reason, value) in [
            ("accept_error", worker.accept_errors),
            ("connect_failure", worker.connect_failures),
            ("connect_timeout", worker.connect_timeouts),
            ("no_backend", worker.no_backend),
            ("queue_timeout", worker.queue_timeouts),
            ("queue_full", worker.queue_full),
            ("idle_timeout", worker.idle_timeouts),
            ("reset", worker.resets),
        ] {
            count(&w_errors, &[&index, reason], value);
        }
        set(&w_pipes, &[&index], worker.pipes_idle);
        count(&w_copied, &[&index], worker.copied_turns);
        count(&w_bytes, &[&index, "in"], worker.bytes_in);
        count(&w_bytes, &[&index, "out"], worker.bytes_out);
    }

    super::metrics_http::render(&f, view);

    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&f.registry.gather(), &mut out)
        .expect("encoding to memory cannot fail");
    let mut text = String::from_utf8(out).expect("the text format is UTF-8");
    super::metrics_http::render_durations(&mut text, view);
    text
}
