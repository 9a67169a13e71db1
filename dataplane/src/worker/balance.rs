//! Backend selection: smooth weighted round-robin and least-connections, honouring per-backend and
//! per-cluster limits.
//!
//! Selection state is per worker (no cross-core traffic); each worker's sequence honours the weights
//! exactly, so the sum over workers does too. A pick also takes the [`Lease`], because "has room" and
//! "took the room" must be one step when several cores race for the last slot.

use ringway_shared::Balance;

use crate::routing::{ClusterRoute, Lease};

/// At most this many backends are tried for one connection (first choice plus retries).
pub const MAX_CONNECT_ATTEMPTS: usize = 3;

/// Backends already tried for one connection.
#[derive(Debug, Default, Clone)]
pub struct Tried {
    indices: [usize; MAX_CONNECT_ATTEMPTS],
    len: usize,
}

impl Tried {
    pub fn contains(&self, index: usize) -> bool {
        self.indices[..self.len].contains(&index)
    }

    pub fn push(&mut self, index: usize) {
        debug_assert!(
            self.len < MAX_CONNECT_ATTEMPTS,
            "more attempts than allowed"
        );
        if self.len < MAX_CONNECT_ATTEMPTS {
            self.indices[self.len] = index;
            self.len += 1;
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Outcome of a selection.
#[derive(Debug)]
pub enum Pick {
    /// A backend with a lease already taken on it.
    Backend { index: usize, lease: Lease },
    /// Candidates exist but every one is at its limit (or the cluster is): wait in the queue.
    Full,
    /// No backend is left to try: none accepts connections, or all were tried.
    Exhausted,
}

/// Per-worker selection state of one cluster.
#[derive(Debug, Clone)]
pub struct Balancer {
    /// Smooth weighted round-robin "current weight" per backend.
    current: Vec<i64>,
    /// Rotates the starting point of least-conn ties so equal backends share the load.
    rotation: usize,
}

impl Balancer {
    pub fn new(backends: usize) -> Self {
        Self {
            current: vec![0; backends],
            rotation: 0,
        }
    }

    /// Chooses a backend of `route` not in `tried` and takes a lease on it.
    pub fn pick(&mut self, route: &ClusterRoute, tried: &Tried) -> Pick {
        self.pick_with(route, tried, route.balance)
    }

    fn pick_with(&mut self, route: &ClusterRoute, tried: &Tried, policy: Balance) -> Pick {
        debug_assert_eq!(
            self.current.len(),
            route.backends.len(),
            "balancer built for another table"
        );
        let mut excluded = Excluded::default();
        loop {
            let mut any_candidate = false;
            let mut best: Option<usize> = None;
            let start = match policy {
                Balance::LeastConn => self.rotation % route.backends.len().max(1),
                // Ties in round-robin go to the first backend, as in nginx's smooth algorithm.
                Balance::RoundRobin => 0,
            };
            for offset in 0..route.backends.len() {
                let i = (start + offset) % route.backends.len();
                let backend = &route.backends[i];
                if !backend.accepting || tried.contains(i) {
                    continue;
                }
                any_candidate = true;
                if excluded.contains(i) || !backend.slot.has_room() {
                    continue;
                }
                best = Some(match (policy, best) {
                    (_, None) => i,
                    (Balance::RoundRobin, Some(b)) => {
                        let (ci, cb) = (
                            self.current[i] + backend.weight as i64,
                            self.current[b] + route.backends[b].weight as i64,
                        );
                        if ci > cb { i } else { b }
                    }
                    (Balance::LeastConn, Some(b)) => {
                        if less_loaded(route, i, b) {
                            i
                        } else {
                            b
                        }
                    }
                });
            }
            if !any_candidate {
                return Pick::Exhausted;
            }
            let Some(chosen) = best else {
                return Pick::Full;
            };
            match Lease::acquire(&route.slot, &route.backends[chosen].slot) {
                Some(lease) => {
                    self.commit(route, policy, chosen, tried, &excluded);
                    return Pick::Backend {
                        index: chosen,
                        lease,
                    };
                }
                // The cluster-wide bound is what stopped us: no other backend can do better.
                None if route.slot.is_full() => return Pick::Full,
                // Another core took the last slot between the check and the take: try the others.
                None => excluded.insert(chosen),
            }
        }
    }

    /// Advances the round-robin state for a pick, over the same candidate set the pick considered.
    fn commit(
        &mut self,
        route: &ClusterRoute,
        policy: Balance,
        chosen: usize,
        tried: &Tried,
        excluded: &Excluded,
    ) {
        self.rotation = self.rotation.wrapping_add(1);
        if policy != Balance::RoundRobin {
            return;
        }
        let mut total = 0i64;
        for (i, backend) in route.backends.iter().enumerate() {
            if backend.accepting
                && !tried.contains(i)
                && !excluded.contains(i)
                && (i == chosen || backend.slot.has_room())
            {
                self.current[i] += backend.weight as i64;
                total += backend.weight as i64;
            }
        }
        self.current[chosen] -= total;
    }
}

/// A worker that picks for a connection routed by an older table has no balancer for it: it falls back to
/// least-connections, which needs no per-worker state.
pub fn pick_stateless(route: &ClusterRoute, tried: &Tried) -> Pick {
    Balancer::new(route.backends.len()).pick_with(route, tried, Balance::LeastConn)
}

fn less_loaded(route: &ClusterRoute, a: usize, b: usize) -> bool {
    // active_a / weight_a < active_b / weight_b, without division.
    let (ba, bb) = (&route.backends[a], &route.backends[b]);
    (ba.slot.active() as u64) * (bb.weight as u64) < (bb.slot.active() as u64) * (ba.weight as u64)
}

/// Backends that lost a race for their last slot during one pick.
#[derive(Debug, Default)]
struct Excluded(Vec<usize>);

impl Excluded {
    fn contains(&self, i: usize) -> bool {
        self.0.contains(&i)
    }
    fn insert(&mut self, i: usize) {
        self.0.push(i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::{BackendSlot, ClusterSlot, RouteBackend, Wakers};
    use ringway_shared::Timeouts;
    use std::sync::Arc;

    fn route(
        balance: Balance,
        weights: &[u16],
        limits: &[Option<u32>],
        cluster_limit: u32,
    ) -> ClusterRoute {
        ClusterRoute {
            name: "t".into(),
            balance,
            timeouts: Timeouts::default(),
            slot: Arc::new(ClusterSlot::new(
                "t".into(),
                cluster_limit,
                Arc::new(Wakers::new(0).unwrap()),
            )),
            pool: Default::default(),
            backends: weights
                .iter()
                .zip(limits)
                .enumerate()
                .map(|(i, (&weight, &limit))| RouteBackend {
                    slot: Arc::new(BackendSlot::new(
                        format!("127.0.0.1:{}", 1000 + i).parse().unwrap(),
                        limit,
                    )),
                    weight,
                    accepting: true,
                })
                .collect(),
        }
    }

    fn counts(route: &ClusterRoute, picks: usize) -> Vec<usize> {
        let mut balancer = Balancer::new(route.backends.len());
        let mut counts = vec![0; route.backends.len()];
        for _ in 0..picks {
            match balancer.pick(route, &Tried::default()) {
                Pick::Backend { index, lease } => {
                    counts[index] += 1;
                    drop(lease);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        counts
    }

    #[test]
    fn smooth_round_robin_honours_weights_exactly() {
        let r = route(Balance::RoundRobin, &[100, 200, 700], &[None; 3], 1000);
        assert_eq!(counts(&r, 1000), vec![100, 200, 700]);
    }

    #[test]
    fn smooth_round_robin_interleaves_instead_of_bursting() {
        let r = route(Balance::RoundRobin, &[5, 1, 1], &[None; 3], 1000);
        let mut balancer = Balancer::new(3);
        let order: Vec<usize> = (0..7)
            .map(|_| match balancer.pick(&r, &Tried::default()) {
                Pick::Backend { index, .. } => index,
                other => panic!("{other:?}"),
            })
            .collect();
        // nginx's documented sequence for weights 5,1,1: a a b a c a a.
        assert_eq!(order, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn least_conn_prefers_the_idle_backend() {
        let r = route(Balance::LeastConn, &[500, 500, 500], &[None; 3], 1000);
        let mut balancer = Balancer::new(3);
        let busy = Lease::acquire(&r.slot, &r.backends[0].slot).unwrap();
        let busy2 = Lease::acquire(&r.slot, &r.backends[1].slot).unwrap();
        for _ in 0..5 {
            match balancer.pick(&r, &Tried::default()) {
                Pick::Backend { index, lease } => {
                    assert_eq!(index, 2);
                    drop(lease);
                }
                other => panic!("{other:?}"),
            }
        }
        drop((busy, busy2));
    }

    #[test]
    fn full_backends_queue_and_tried_backends_are_skipped() {
        let r = route(Balance::RoundRobin, &[500, 500], &[Some(1), Some(1)], 1000);
        let mut balancer = Balancer::new(2);
        let Pick::Backend { lease: a, .. } = balancer.pick(&r, &Tried::default()) else {
            panic!()
        };
        let Pick::Backend { lease: b, .. } = balancer.pick(&r, &Tried::default()) else {
            panic!()
        };
        assert!(matches!(balancer.pick(&r, &Tried::default()), Pick::Full));
        drop(a);
        let mut tried = Tried::default();
        tried.push(0);
        tried.push(1);
        assert!(matches!(balancer.pick(&r, &tried), Pick::Exhausted));
        drop(b);
    }

    #[test]
    fn cluster_limit_queues_even_when_backends_have_room() {
        let r = route(Balance::LeastConn, &[500, 500], &[None, None], 1);
        let mut balancer = Balancer::new(2);
        let Pick::Backend { lease, .. } = balancer.pick(&r, &Tried::default()) else {
            panic!()
        };
        assert!(matches!(balancer.pick(&r, &Tried::default()), Pick::Full));
        drop(lease);
    }

    #[test]
    fn draining_backends_get_nothing() {
        let mut r = route(Balance::RoundRobin, &[500, 500], &[None, None], 1000);
        r.backends[0].accepting = false;
        assert_eq!(counts(&r, 10), vec![0, 10]);
        r.backends[1].accepting = false;
        assert!(matches!(
            Balancer::new(2).pick(&r, &Tried::default()),
            Pick::Exhausted
        ));
    }
}
