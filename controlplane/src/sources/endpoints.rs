//! Several URLs of one cluster (Marathon's replicas, etcd's members), tried in turn: the one that answered
//! last first, then the others in the order given. Which one answers is logged when it changes.

use std::fmt::Display;

use tracing::{debug, info};

/// Base URLs (`https://host:port`, no trailing slash) and the one to try first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    source: &'static str,
    urls: Vec<String>,
    preferred: usize,
}

impl Endpoints {
    /// `urls` in the operator's order; `source` names them in logs.
    pub fn new(source: &'static str, urls: Vec<String>) -> Self {
        Self {
            source,
            urls: urls
                .into_iter()
                .map(|u| u.trim().trim_end_matches('/').to_string())
                .collect(),
            preferred: 0,
        }
    }

    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }

    /// The one that answered last.
    pub fn preferred(&self) -> &str {
        &self.urls[self.preferred]
    }

    /// Indexes in the order to try them: the preferred one, then the rest.
    pub fn order(&self) -> impl Iterator<Item = usize> + use<> {
        let (len, first) = (self.urls.len(), self.preferred);
        (0..len).map(move |step| (first + step) % len)
    }

    /// Index and URL in the order to try them, owned, so the caller can release its lock while it tries.
    pub fn attempts(&self) -> Vec<(usize, String)> {
        self.order().map(|i| (i, self.urls[i].clone())).collect()
    }

    /// `index` answered: it is tried first from now on.
    pub fn answered(&mut self, index: usize) {
        if index != self.preferred {
            info!(
                source = self.source,
                endpoint = %self.urls[index],
                "{} endpoint answers; trying it first from now on",
                self.source
            );
            self.preferred = index;
        }
    }
}

/// Tries `attempt` on each of `attempts` (from [`Endpoints::attempts`]) in turn until one answers: an
/// error `fails_over` accepts (a connect error, a timeout, a 5xx) moves on to the next endpoint, any other
/// is the cluster's answer and is returned at once. Returns the index that answered (for
/// [`Endpoints::answered`]) with its result; when every endpoint failed over, `all_failed` of their
/// errors, in the order tried.
pub async fn first_answer<T, E, Fut>(
    attempts: Vec<(usize, String)>,
    mut attempt: impl FnMut(usize, String) -> Fut,
    fails_over: impl Fn(&E) -> bool,
    all_failed: impl FnOnce(String) -> E,
) -> Result<(usize, T), E>
where
    E: Display,
    Fut: Future<Output = Result<T, E>>,
{
    let mut errors = Vec::new();
    for (index, url) in attempts {
        match attempt(index, url).await {
            Ok(answer) => return Ok((index, answer)),
            Err(e) if fails_over(&e) => {
                debug!("endpoint failed, trying the next: {e}");
                errors.push(e.to_string());
            }
            Err(e) => return Err(e),
        }
    }
    Err(all_failed(errors.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_that_answered_is_tried_first() {
        let mut e = Endpoints::new(
            "etcd",
            vec![
                "https://a:2379/".into(),
                "https://b:2379".into(),
                "https://c:2379".into(),
            ],
        );
        assert_eq!(e.order().collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(e.preferred(), "https://a:2379");
        e.answered(2);
        assert_eq!(e.order().collect::<Vec<_>>(), vec![2, 0, 1]);
        assert_eq!(e.preferred(), "https://c:2379");
    }
}
