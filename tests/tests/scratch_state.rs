use ringway_shared::wire::{Message, encode_frame};
use ringway_shared::{
    Backend, BackendState, Balance, Cluster, Listener, Protocol, Snapshot, Timeouts,
};

#[test]
fn write_state() {
    let Ok(spec) = std::env::var("SCRATCH_ROUTES") else {
        return;
    };
    // listen_port:backend_port,...
    let mut listeners = vec![];
    let mut clusters = vec![];
    for (i, pair) in spec.split(',').enumerate() {
        let (l, b) = pair.split_once(':').unwrap();
        let name = format!("s{i}");
        listeners.push(Listener {
            name: name.clone(),
            address: format!("127.0.0.1:{l}").parse().unwrap(),
            protocol: Protocol::Tcp,
            cluster: name.clone(),
        });
        clusters.push(Cluster {
            name,
            balance: Balance::RoundRobin,
            timeouts: Timeouts::default(),
            max_connections: 100000,
            backends: vec![Backend {
                address: format!("127.0.0.1:{b}").parse().unwrap(),
                weight: 500,
                max_connections: None,
                state: BackendState::Active,
            }],
        });
    }
    let s = Snapshot::new(1, listeners, clusters).unwrap();
    std::fs::write(
        std::env::var("SCRATCH_OUT").unwrap(),
        encode_frame(&Message::Snapshot(Box::new(s))).unwrap(),
    )
    .unwrap();
}
