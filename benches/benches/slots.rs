//! Maxconn slot acquire/release (`Lease`): the only cross-core state on the data path. Measured alone, and
//! while another thread hammers the same backend and cluster counters (the cache line bounces between
//! cores), with a roomy limit and with a limit of 1 where the threads race for the last slot.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ringway_benches::route;
use ringway_dataplane::routing::{ClusterRoute, Lease};
use ringway_shared::Balance;

/// Acquires and releases one lease; true if the slot was free.
fn cycle(r: &ClusterRoute) -> bool {
    Lease::acquire(&r.slot, &r.backends[0].slot).is_some()
}

/// Runs `iters` cycles on this thread while `contenders` other threads cycle on the same slots.
fn timed(r: &Arc<ClusterRoute>, contenders: usize, iters: u64) -> Duration {
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..contenders)
        .map(|_| {
            let (r, stop) = (Arc::clone(r), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::hint::black_box(cycle(&r));
                }
            })
        })
        .collect();
    let started = Instant::now();
    for _ in 0..iters {
        std::hint::black_box(cycle(r));
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    elapsed
}

fn slots(c: &mut Criterion) {
    let mut group = c.benchmark_group("lease_acquire_release");
    for (name, limit) in [("limit_1000", Some(1000)), ("limit_1", Some(1))] {
        for contenders in [0usize, 1] {
            let r = Arc::new(route(Balance::LeastConn, 1, limit, 10_000));
            group.bench_with_input(
                BenchmarkId::new(name, format!("{}_threads", contenders + 1)),
                &contenders,
                |b, &n| b.iter_custom(|iters| timed(&r, n, iters)),
            );
        }
    }
    group.finish();
}

criterion_group!(benches, slots);
criterion_main!(benches);
