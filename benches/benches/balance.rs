//! Backend selection per policy, as a worker does it for every new connection: pick (which takes the
//! lease) and release.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ringway_benches::route;
use ringway_dataplane::worker::balance::{Balancer, Pick, Tried};
use ringway_shared::Balance;

fn pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick_and_release");
    for (name, policy) in [
        ("round_robin", Balance::RoundRobin),
        ("least_conn", Balance::LeastConn),
    ] {
        for backends in [10usize, 100] {
            let r = route(policy, backends, None, u32::MAX);
            let mut balancer = Balancer::new(backends);
            let tried = Tried::default();
            group.bench_with_input(BenchmarkId::new(name, backends), &backends, |b, _| {
                b.iter(|| match balancer.pick(black_box(&r), &tried) {
                    Pick::Backend { index, lease } => {
                        drop(lease);
                        index
                    }
                    other => panic!("unexpected {other:?}"),
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, pick);
criterion_main!(benches);
