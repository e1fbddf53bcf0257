//! Request coalescing (single flight): concurrent misses for one key make one storagesvc call.
//!
//! The first caller for a key starts a *flight*: its work runs in a spawned task, and later
//! callers for the same key join it and share its result. Running the work in its own task
//! is what keeps a leader whose client went away (its request future dropped) from failing
//! the followers: nobody's cancellation cancels the flight. The key is released when the
//! work ends (even by a panic), so the next miss after that starts a new flight.
//!
//! Without this, a popular key whose entry turns stale sends one storagesvc call per waiting
//! request at the same instant (a thundering herd), precisely when storagesvc may be
//! struggling.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio::time::Instant;
use tracing::Instrument;

/// A flight's result as every caller sees it; `None` if the work panicked.
pub type Flight<V> = Shared<BoxFuture<'static, Option<V>>>;

/// Whether a caller started the flight it waits on or joined one already in the air.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
}

/// A flight in the air and when it started.
struct InAir<V> {
    flight: Flight<V>,
    started: Instant,
}

/// The flights in the air, by key. Cheap to clone: clones share the flights.
pub struct Coalescer<K, V> {
    flights: Arc<Mutex<HashMap<K, InAir<V>>>>,
    /// `resource` label of `booksvc_coalesced_requests_total`.
    resource: &'static str,
}

impl<K, V> Clone for Coalescer<K, V> {
    fn clone(&self) -> Self {
        Coalescer {
            flights: Arc::clone(&self.flights),
            resource: self.resource,
        }
    }
}

impl<K, V> Coalescer<K, V>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub fn new(resource: &'static str) -> Coalescer<K, V> {
        Coalescer {
            flights: Arc::default(),
            resource,
        }
    }

    /// Joins the flight for `key`, or starts one running `work`. `work` is dropped unpolled
    /// when a flight is already in the air. Must be called inside a Tokio runtime.
    pub fn join<W>(&self, key: K, work: W) -> (Flight<V>, Role)
    where
        W: Future<Output = V> + Send + 'static,
    {
        let (flight, role, _started) = self.join_timed(key, work);
        (flight, role)
    }

    /// [`Coalescer::join`], also saying when the flight started: a reader that joins a
    /// flight already late waits for it no longer than one that started it (see
    /// `service::patience`).
    pub fn join_timed<W>(&self, key: K, work: W) -> (Flight<V>, Role, Instant)
    where
        W: Future<Output = V> + Send + 'static,
    {
        let mut flights = self.lock();
        if let Some(in_air) = flights.get(&key) {
            crate::metrics::record_coalesced(self.resource);
            return (in_air.flight.clone(), Role::Follower, in_air.started);
        }
        let release = Release {
            flights: Arc::clone(&self.flights),
            key: Some(key.clone()),
        };
        // The flight runs in the leader's span: its storagesvc call joins the leader's trace.
        let task = tokio::spawn(
            async move {
                // Dropped when the work ends, panics included: the key is free again.
                let _release = release;
                work.await
            }
            .instrument(tracing::Span::current()),
        );
        let flight = async move { task.await.ok() }.boxed().shared();
        let started = Instant::now();
        let in_air = InAir {
            flight: flight.clone(),
            started,
        };
        flights.insert(key, in_air);
        (flight, Role::Leader, started)
    }

    /// When the flight for `key` started, if one is in the air.
    pub fn started(&self, key: &K) -> Option<Instant> {
        self.lock().get(key).map(|in_air| in_air.started)
    }

    /// Flights in the air now.
    pub fn in_flight(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, InAir<V>>> {
        // Never held across an await; a panic while held cannot leave the map half-changed.
        self.flights.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Removes its key from the flights when dropped.
struct Release<K: Hash + Eq, V> {
    flights: Arc<Mutex<HashMap<K, InAir<V>>>>,
    key: Option<K>,
}

impl<K: Hash + Eq, V> Drop for Release<K, V> {
    fn drop(&mut self) {
        // The key is only ever inserted while absent, and only this guard removes it, so the
        // entry under the key is this flight's.
        if let Some(key) = self.key.take() {
            let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
            flights.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use super::*;

    fn counted_work(calls: &Arc<AtomicU32>, value: u32) -> impl Future<Output = u32> + use<> {
        let calls = Arc::clone(calls);
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            value
        }
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_for_one_key_share_one_call() {
        let coalescer = Coalescer::<i64, u32>::new("test");
        let calls = Arc::new(AtomicU32::new(0));
        let (leader, role) = coalescer.join(1, counted_work(&calls, 7));
        assert_eq!(role, Role::Leader);
        let followers: Vec<_> = (0..9)
            .map(|_| coalescer.join(1, counted_work(&calls, 99)))
            .collect();
        assert!(followers.iter().all(|(_, role)| *role == Role::Follower));

        assert_eq!(leader.await, Some(7));
        for (flight, _) in followers {
            assert_eq!(flight.await, Some(7), "followers get the leader's result");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one call for ten callers");
        assert_eq!(coalescer.in_flight(), 0, "the key is released");
    }

    #[tokio::test(start_paused = true)]
    async fn different_keys_fly_separately_and_a_later_miss_starts_a_new_flight() {
        let coalescer = Coalescer::<i64, u32>::new("test");
        let calls = Arc::new(AtomicU32::new(0));
        let (one, _) = coalescer.join(1, counted_work(&calls, 1));
        let (two, _) = coalescer.join(2, counted_work(&calls, 2));
        assert_eq!((one.await, two.await), (Some(1), Some(2)));
        let (again, role) = coalescer.join(1, counted_work(&calls, 3));
        assert_eq!(role, Role::Leader, "the first flight ended");
        assert_eq!(again.await, Some(3));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_that_goes_away_does_not_fail_its_followers() {
        let coalescer = Coalescer::<i64, u32>::new("test");
        let calls = Arc::new(AtomicU32::new(0));
        let (leader, _) = coalescer.join(1, counted_work(&calls, 7));
        let (follower, _) = coalescer.join(1, counted_work(&calls, 99));
        // The leader's client disconnects: its request future is dropped mid-flight.
        let leader_request = tokio::spawn(leader);
        tokio::time::sleep(Duration::from_millis(10)).await;
        leader_request.abort();

        assert_eq!(follower.await, Some(7));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_flight_every_caller_stopped_waiting_for_still_runs_to_the_end() {
        // Readers with a stale entry stop waiting after a soft timeout; the call must go on
        // and refill the cache without them.
        let coalescer = Coalescer::<i64, u32>::new("test");
        let finished = Arc::new(AtomicU32::new(0));
        let work = {
            let finished = Arc::clone(&finished);
            async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                finished.fetch_add(1, Ordering::SeqCst);
                7
            }
        };
        let (leader, _) = coalescer.join(1, work);
        let (follower, _) = coalescer.join(1, async { 99 });
        let soft = Duration::from_millis(10);
        assert!(tokio::time::timeout(soft, leader).await.is_err());
        assert!(tokio::time::timeout(soft, follower).await.is_err());

        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            finished.load(Ordering::SeqCst),
            1,
            "the work ran to its end"
        );
        assert_eq!(coalescer.in_flight(), 0, "and freed its key");
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_flight_answers_none_and_frees_its_key() {
        let coalescer = Coalescer::<i64, u32>::new("test");
        let (flight, _) = coalescer.join(1, async { panic!("bug in the work") });
        assert_eq!(flight.await, None);
        assert_eq!(coalescer.in_flight(), 0);
    }
}
