use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

/// What each name answers: its addresses, or an error.
type Answers = BTreeMap<String, Result<Vec<IpAddr>, String>>;

/// A scripted DNS: each name answers what `answers` holds for it at the time of the lookup, after `delay`.
#[derive(Clone, Default)]
struct Dns {
    answers: Arc<Mutex<Answers>>,
    lookups: Arc<AtomicUsize>,
    running: Arc<AtomicUsize>,
    most_at_once: Arc<AtomicUsize>,
}

impl Dns {
    fn set(&self, host: &str, answer: Result<&[&str], &str>) {
        let answer = answer
            .map(|ips| ips.iter().map(|ip| ip.parse().unwrap()).collect())
            .map_err(str::to_string);
        self.answers.lock().unwrap().insert(host.into(), answer);
    }

    fn lookup(&self, delay: Duration) -> Lookup {
        let dns = self.clone();
        Arc::new(move |host: String| {
            let dns = dns.clone();
            Box::pin(async move {
                dns.lookups.fetch_add(1, Ordering::SeqCst);
                let now = dns.running.fetch_add(1, Ordering::SeqCst) + 1;
                dns.most_at_once.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                dns.running.fetch_sub(1, Ordering::SeqCst);
                let answer = dns.answers.lock().unwrap().get(&host).cloned();
                match answer {
                    Some(Ok(ips)) => Ok(ips),
                    Some(Err(e)) if e == "hang" => std::future::pending().await,
                    Some(Err(e)) => Err(io::Error::other(e)),
                    None => Err(io::Error::other("NXDOMAIN")),
                }
            })
        })
    }
}

fn names(hosts: &[&str]) -> BTreeSet<String> {
    hosts.iter().map(|h| h.to_string()).collect()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[tokio::test]
async fn lookups_run_concurrently_with_a_short_timeout() {
    let dns = Dns::default();
    let hosts: Vec<String> = (0..20).map(|i| format!("agent{i}")).collect();
    for (i, h) in hosts.iter().enumerate() {
        dns.set(h, Ok(&[&format!("10.0.0.{i}")]));
    }
    dns.set("stuck", Err("hang"));
    let resolver = Resolver::with_lookup(
        "test",
        dns.lookup(Duration::from_millis(200)),
        Duration::from_millis(500),
        FRESH_FOR,
    );
    let mut asked: BTreeSet<String> = hosts.iter().cloned().collect();
    asked.insert("stuck".into());
    asked.insert("10.9.9.9".into());
    let started = std::time::Instant::now();
    let resolution = resolver.resolve(asked).await;
    // One after another this would take 20 × 200 ms + the stuck one's 500 ms.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(dns.most_at_once.load(Ordering::SeqCst) > 1);
    assert_eq!(resolution.hosts.len(), 21, "20 names and the IP");
    assert_eq!(resolution.hosts["10.9.9.9"], ip("10.9.9.9"));
    assert_eq!(resolution.degraded.len(), 1);
    assert!(resolution.degraded[0].starts_with("stuck does not resolve (no answer within"));
}

#[tokio::test]
async fn answers_are_cached_and_a_failure_keeps_the_last_known_address() {
    let dns = Dns::default();
    dns.set("agent1", Ok(&["10.0.0.1"]));
    let resolver = Resolver::with_lookup(
        "test",
        dns.lookup(Duration::ZERO),
        LOOKUP_TIMEOUT,
        Duration::from_millis(100),
    );
    let first = resolver.resolve(names(&["agent1"])).await;
    assert_eq!(first.hosts["agent1"], ip("10.0.0.1"));
    assert_eq!(first.degraded_reason(), None);
    resolver.resolve(names(&["agent1"])).await;
    assert_eq!(dns.lookups.load(Ordering::SeqCst), 1, "cached");

    // DNS breaks: the last known address stays, the source is degraded, and that is logged once.
    tokio::time::sleep(Duration::from_millis(150)).await;
    dns.set("agent1", Err("SERVFAIL"));
    let failing = resolver.resolve(names(&["agent1"])).await;
    assert_eq!(failing.hosts["agent1"], ip("10.0.0.1"));
    assert_eq!(
        failing.degraded_reason().unwrap(),
        "DNS: agent1 does not resolve (SERVFAIL), last known 10.0.0.1 used"
    );
    assert_eq!(failing.changes.len(), 1);
    let still = resolver.resolve(names(&["agent1"])).await;
    assert!(
        still.changes.is_empty(),
        "not logged again: {:?}",
        still.changes
    );
    assert!(still.degraded_reason().is_some(), "still degraded");
    assert_eq!(
        dns.lookups.load(Ordering::SeqCst),
        3,
        "a failing name is retried every read"
    );

    // Back: degraded no more, logged once.
    dns.set("agent1", Ok(&["10.0.0.1"]));
    let back = resolver.resolve(names(&["agent1"])).await;
    assert_eq!(back.degraded_reason(), None);
    assert_eq!(back.changes, vec!["agent1 resolves again, to 10.0.0.1"]);
}

#[tokio::test]
async fn a_name_that_never_resolved_skips_its_instances_and_says_so_once() {
    let dns = Dns::default();
    let resolver = Resolver::new_for_test(&dns);
    let first = resolver.resolve(names(&["ghost"])).await;
    assert!(first.hosts.is_empty());
    assert_eq!(
        first.degraded,
        vec!["ghost does not resolve (NXDOMAIN), its instances are skipped"]
    );
    assert_eq!(first.changes.len(), 1);
    assert!(resolver.resolve(names(&["ghost"])).await.changes.is_empty());
}

#[tokio::test]
async fn one_address_per_name_and_the_same_one_while_it_is_offered() {
    let dns = Dns::default();
    dns.set("multi", Ok(&["10.0.0.2", "10.0.0.1"]));
    let resolver = Resolver::with_lookup(
        "test",
        dns.lookup(Duration::ZERO),
        LOOKUP_TIMEOUT,
        Duration::ZERO,
    );
    assert_eq!(
        resolver.resolve(names(&["multi"])).await.hosts["multi"],
        ip("10.0.0.2")
    );
    // Round-robin DNS turns the list around: the address in use stays.
    dns.set("multi", Ok(&["10.0.0.1", "10.0.0.2"]));
    assert_eq!(
        resolver.resolve(names(&["multi"])).await.hosts["multi"],
        ip("10.0.0.2")
    );
    // It is gone from the answer: the first one offered.
    dns.set("multi", Ok(&["10.0.0.3", "10.0.0.1"]));
    assert_eq!(
        resolver.resolve(names(&["multi"])).await.hosts["multi"],
        ip("10.0.0.3")
    );
}

impl Resolver {
    fn new_for_test(dns: &Dns) -> Self {
        Self::with_lookup(
            "test",
            dns.lookup(Duration::ZERO),
            LOOKUP_TIMEOUT,
            FRESH_FOR,
        )
    }
}
