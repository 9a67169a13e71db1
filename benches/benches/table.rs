//! Building the dataplane's routing table from a design-scale snapshot (10,000 services / 100,000
//! backends): the part of applying a snapshot that grows with its size. The snapshot here has no
//! listeners (10,000 listeners × workers would exceed the fd limit of a test machine); listener sockets are
//! bound once and then reused, so they do not weigh on later applies.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use ringway_benches::{SERVICES, snapshot};
use ringway_dataplane::routing::{TableBuilder, Wakers};
use ringway_shared::Snapshot;

fn without_listeners(services: usize) -> Arc<Snapshot> {
    let s = snapshot(services);
    Arc::new(Snapshot::new(s.version, Vec::new(), s.clusters).unwrap())
}

fn table(c: &mut Criterion) {
    let snap = without_listeners(SERVICES);
    let wakers = Arc::new(Wakers::new(2).unwrap());
    let mut group = c.benchmark_group("table_10k_services");
    group.sample_size(10);
    group.bench_function("first_build", |b| {
        b.iter(|| {
            let mut builder = TableBuilder::new(2, Arc::clone(&wakers));
            black_box(builder.build(Arc::clone(&snap)).unwrap())
        })
    });
    let mut builder = TableBuilder::new(2, Arc::clone(&wakers));
    builder.build(Arc::clone(&snap)).unwrap();
    group.bench_function("rebuild_same_backends", |b| {
        b.iter(|| black_box(builder.build(Arc::clone(&snap)).unwrap()))
    });
    group.bench_function("validate", |b| b.iter(|| snap.validate().unwrap()));
    group.finish();
}

criterion_group!(benches, table);
criterion_main!(benches);
