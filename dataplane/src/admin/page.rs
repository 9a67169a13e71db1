//! `/`: an HTML status page in the spirit of HAProxy's stats page. Server-rendered, no scripts, no external
//! assets (it must work on a host with no internet), refreshing itself.

use std::fmt::Write as _;

use super::view::{BackendView, RouteView, ServiceView, StatsView};

/// How often the page reloads itself.
pub const REFRESH_SECONDS: u32 = 2;

const STYLE: &str = "
body { font-family: sans-serif; font-size: 13px; margin: 1em; color: #222; }
h1 { font-size: 18px; margin: 0 0 .3em 0; }
h2 { font-size: 15px; margin: 1.2em 0 .3em 0; }
table { border-collapse: collapse; margin-bottom: .5em; }
th, td { border: 1px solid #999; padding: 2px 8px; text-align: right; }
th { background: #20407a; color: #fff; }
td.name { text-align: left; font-family: monospace; }
tr.active td { background: #c8f0c8; }
tr.draining td { background: #f0e6a0; }
tr.removed td { background: #f0c8a0; }
tr.full td.cur { background: #f0a0a0; }
.status-serving { color: #17701b; } .status-draining, .status-initializing { color: #a01010; }
.meta { color: #555; }
";

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Bytes in a short human form (KiB, MiB, GiB).
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn backend_row(out: &mut String, b: &BackendView) {
    let full = b.limit.is_some_and(|l| b.connections >= l);
    let limit = b.limit.map_or("-".to_string(), |l| l.to_string());
    let weight = b.weight.map_or("-".to_string(), |w| w.to_string());
    let _ = write!(
        out,
        "<tr class=\"{}{}\"><td class=\"name\">{}</td><td>{}</td><td>{}</td><td class=\"cur\">{}</td><td>{}</td>\
         <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        b.state,
        if full { " full" } else { "" },
        escape(&b.address),
        b.state,
        weight,
        b.connections,
        limit,
        b.total,
        b.connect_failures,
        human_bytes(b.bytes_in),
        human_bytes(b.bytes_out),
    );
}

fn service_table(out: &mut String, s: &ServiceView, listen: &[String]) {
    let _ = write!(
        out,
        "<h2 id=\"svc-{name}\">{name}</h2><p class=\"meta\">listens on {listen} · {balance} · {conns} of {max} connections · {queued} queued</p>",
        name = escape(&s.name),
        listen = if listen.is_empty() {
            "nothing".to_string()
        } else {
            escape(&listen.join(", "))
        },
        balance = s.balance,
        conns = s.connections,
        max = s.max_connections,
        queued = s.queued,
    );
    route_table(out, &s.routes);
    out.push_str(
        "<table><tr><th>backend</th><th>state</th><th>weight</th><th>cur</th><th>max</th><th>total</th>\
         <th>failed connects</th><th>bytes in</th><th>bytes out</th></tr>",
    );
    if s.backends.is_empty() {
        out.push_str("<tr><td class=\"name\" colspan=\"9\">no backends</td></tr>");
    }
    for b in &s.backends {
        backend_row(out, b);
    }
    out.push_str("</table>");
    let ended: Vec<String> = s
        .closes
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(reason, n)| format!("{reason} {n}"))
        .collect();
    if !ended.is_empty() {
        let _ = write!(
            out,
            "<p class=\"meta\">ended: {}</p>",
            escape(&ended.join(" · "))
        );
    }
}

/// The hosts and paths an HTTP service answers, one row per route.
fn route_table(out: &mut String, routes: &[RouteView]) {
    if routes.is_empty() {
        return;
    }
    out.push_str(
        "<table><tr><th>route</th><th>listener</th><th>hosts</th><th>paths</th><th>match</th></tr>",
    );
    for r in routes {
        let hosts = if r.hosts.is_empty() {
            "any host".to_string()
        } else {
            r.hosts.join(", ")
        };
        let mut paths = if r.paths.is_empty() {
            "every path".to_string()
        } else {
            r.paths.join(" ")
        };
        if let Some(header) = &r.header {
            paths.push_str(" · header ");
            paths.push_str(header);
        }
        let _ = write!(
            out,
            "<tr><td class=\"name\">{}</td><td class=\"name\">{}</td><td class=\"name\">{}</td>\
             <td class=\"name\">{}</td><td>{}</td></tr>",
            escape(&r.name),
            escape(&r.listener),
            escape(&hosts),
            escape(&paths),
            r.path_match,
        );
    }
    out.push_str("</table>");
}

/// Renders the whole page.
pub fn render(view: &StatsView) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\
         <title>Ringway dataplane</title><style>{STYLE}</style></head><body>\
         <h1>Ringway dataplane · <span class=\"status-{status}\">{status}</span></h1>\
         <p class=\"meta\">snapshot version {version} (hash {hash}) · {services} services · refreshes every {REFRESH_SECONDS} s</p>",
        status = view.status,
        version = view.snapshot.version,
        hash = escape(&view.snapshot.hash),
        services = view.services.len(),
    );
    let l = &view.limits;
    let _ = write!(
        out,
        "<p class=\"meta\">{conns} of {max} connections{paused} · {pipes} of {max_pipes} pipes · descriptor limit {fds}</p>",
        conns = l.connections,
        max = l.max_connections,
        paused = if l.accepting {
            ""
        } else {
            " (at the cap: accepting paused)"
        },
        pipes = l.pipes,
        max_pipes = l.max_pipes,
        fds = l.fd_limit,
    );
    for service in &view.services {
        let mut listen: Vec<String> = view
            .listeners
            .iter()
            .filter(|l| l.service == service.name)
            .map(|l| match &l.error {
                Some(error) => format!("{} (not open: {error}; retrying)", l.address),
                None => l.address.clone(),
            })
            .collect();
        for route in &service.routes {
            if !listen.contains(&route.listener) {
                listen.push(route.listener.clone());
            }
        }
        service_table(&mut out, service, &listen);
    }
    out.push_str(
        "<h2>Workers</h2><table><tr><th>worker</th><th>version</th><th>connections</th><th>queued</th><th>accepted</th>\
         <th>connect failures</th><th>resets</th><th>bytes in</th><th>bytes out</th></tr>",
    );
    for w in &view.workers {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            w.index,
            w.applied_version,
            w.connections,
            w.queued,
            w.accepted,
            w.connect_failures + w.connect_timeouts,
            w.resets,
            human_bytes(w.bytes_in),
            human_bytes(w.bytes_out),
        );
    }
    out.push_str("</table></body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_and_sizes_humane() {
        assert_eq!(escape("<a href='x'>&"), "&lt;a href=&#39;x&#39;&gt;&amp;");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.0 MiB");
    }
}
