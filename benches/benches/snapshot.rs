//! Snapshot wire encoding at the design's scale (10,000 services / 100,000 backends): what the
//! controlplane pays once per publish, and the dataplane (plus validation) once per snapshot received.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringway_benches::{SERVICES, snapshot};
use ringway_shared::wire::{Message, decode_frame, encode_snapshot_frame};

fn wire(c: &mut Criterion) {
    let snap = snapshot(SERVICES);
    let frame = encode_snapshot_frame(&snap).unwrap();
    let mut group = c.benchmark_group("snapshot_10k_services");
    group.sample_size(20);
    group.throughput(Throughput::Bytes(frame.len() as u64));
    group.bench_function("encode_snapshot_frame", |b| {
        b.iter(|| encode_snapshot_frame(black_box(&snap)).unwrap())
    });
    group.bench_function("decode_frame", |b| {
        b.iter(|| decode_frame(black_box(&frame)).unwrap())
    });
    group.bench_function("decode_frame_and_validate", |b| {
        b.iter(|| match decode_frame(black_box(&frame)).unwrap() {
            Message::Snapshot(s) => s.validate().unwrap(),
            other => panic!("decoded {}", other.kind()),
        })
    });
    group.finish();
}

criterion_group!(benches, wire);
criterion_main!(benches);
