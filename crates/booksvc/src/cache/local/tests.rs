//! The local hit layer's unit tests: hits, tickets, floors, bypass and expiry.

use super::*;

const FRESH: Duration = Duration::from_secs(5);

fn live_layer() -> LocalCache {
    let layer = LocalCache::new(LocalCacheSettings {
        max_entries: 100,
        max_age: Duration::from_secs(60),
        fresh_ttl: FRESH,
    });
    layer.go_live();
    layer
}

fn body(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

fn store(layer: &LocalCache, id: i64, version: i64, text: &str) -> bool {
    let ticket = layer.ticket().expect("live");
    layer.store_book(id, ticket, version, body(text), Duration::ZERO)
}

fn served(layer: &LocalCache, id: i64) -> Option<Bytes> {
    layer.get(LocalKey::Book(id)).map(|hit| hit.body)
}

#[test]
fn a_stored_body_is_served_with_the_age_of_its_redis_entry() {
    let layer = live_layer();
    let ticket = layer.ticket().unwrap();
    let age = Duration::from_millis(1500);
    assert!(layer.store_book(1, ticket, 1, body("one"), age));
    let hit = layer.get(LocalKey::Book(1)).expect("a hit");
    assert_eq!(hit.body, body("one"));
    assert!(hit.age >= age && hit.age < FRESH, "{:?}", hit.age);
    assert_eq!(layer.get(LocalKey::Book(2)), None);
}

#[test]
fn a_read_that_raced_an_invalidation_stores_nothing() {
    let layer = live_layer();
    // The read takes its ticket, then reads Redis (the old version 1)…
    let ticket = layer.ticket().unwrap();
    // …meanwhile the event for version 2 arrives…
    layer.invalidate_book(1, EventType::Updated, 2);
    // …so the old value must not land, even though no floor would stop a newer one.
    assert!(!layer.store_book(1, ticket, 1, body("old"), Duration::ZERO));
    assert_eq!(served(&layer, 1), None);
    // The same race on another key is refused too: the epoch is global.
    assert!(!layer.store_book(7, ticket, 1, body("x"), Duration::ZERO));
    // A read started after the event stores the new version.
    assert!(store(&layer, 1, 2, "new"));
    assert_eq!(served(&layer, 1), Some(body("new")));
}

#[test]
fn an_event_ahead_of_redis_keeps_older_copies_out() {
    let layer = live_layer();
    assert!(store(&layer, 1, 1, "v1"));
    layer.invalidate_book(1, EventType::Updated, 2);
    assert_eq!(served(&layer, 1), None, "the event must evict version 1");
    // The consumer has not written version 2 to Redis yet: a read finds version 1.
    assert!(!store(&layer, 1, 1, "v1 again"));
    assert_eq!(served(&layer, 1), None);
    assert!(store(&layer, 1, 3, "v3"));
    assert_eq!(served(&layer, 1), Some(body("v3")));
}

#[test]
fn an_event_the_layer_already_reflects_keeps_the_body_and_never_goes_back() {
    let layer = live_layer();
    assert!(store(&layer, 1, 5, "v5"));
    layer.invalidate_book(1, EventType::Updated, 4); // late duplicate
    assert_eq!(served(&layer, 1), Some(body("v5")));
    layer.invalidate_book(1, EventType::Updated, 5); // this replica's read was quicker than the event
    assert_eq!(served(&layer, 1), Some(body("v5")));
    assert!(!store(&layer, 1, 4, "v4"), "a slower read must not go back");
    assert_eq!(served(&layer, 1), Some(body("v5")));
}

#[test]
fn bypassed_it_serves_and_stores_nothing_and_comes_back_empty() {
    let layer = live_layer();
    assert!(store(&layer, 1, 1, "v1"));
    let before_loss = layer.ticket().unwrap();
    layer.bypass("test");
    assert_eq!(layer.state(), LocalState::Bypassed);
    assert_eq!(served(&layer, 1), None);
    assert_eq!(layer.ticket(), None);
    assert!(!layer.store_book(2, before_loss, 1, body("x"), Duration::ZERO));
    layer.go_live();
    assert_eq!(layer.state(), LocalState::Live);
    assert_eq!(served(&layer, 1), None, "it must come back empty");
    // A read from before the loss must not land after the layer is live again.
    assert!(!layer.store_book(2, before_loss, 1, body("x"), Duration::ZERO));
    assert!(store(&layer, 2, 1, "v1"));
}

#[test]
fn freshness_follows_the_redis_entry_and_the_cap() {
    let fresh_ttl = Duration::from_secs(5);
    let layer = LocalCache::new(LocalCacheSettings {
        max_entries: 100,
        max_age: Duration::from_millis(300),
        fresh_ttl,
    });
    layer.go_live();
    // Already past CACHE_FRESH_TTL in Redis: kept as a stale copy, never a hit.
    let ticket = layer.ticket().unwrap();
    assert!(layer.store_book(1, ticket, 1, body("old"), fresh_ttl));
    assert_eq!(served(&layer, 1), None, "a stale entry served as a hit");
    let stale = layer.get_stale(LocalKey::Book(1)).expect("a stale copy");
    assert_eq!(stale.body, body("old"));
    assert!(stale.age >= fresh_ttl, "{:?}", stale.age);
    // Fresh for 100 ms more: a hit, then a stale copy, then gone at the cap.
    let ticket = layer.ticket().unwrap();
    let almost = fresh_ttl - Duration::from_millis(100);
    assert!(layer.store_book(2, ticket, 1, body("aging"), almost));
    assert!(served(&layer, 2).is_some());
    assert_eq!(
        layer.get_stale(LocalKey::Book(2)),
        None,
        "fresh is not stale"
    );
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(
        served(&layer, 2),
        None,
        "served as a hit past CACHE_FRESH_TTL"
    );
    assert!(layer.get_stale(LocalKey::Book(2)).is_some());
    std::thread::sleep(Duration::from_millis(250));
    assert_eq!(
        layer.get_stale(LocalKey::Book(1)),
        None,
        "kept past LOCAL_CACHE_TTL"
    );
    assert_eq!(
        layer.get_stale(LocalKey::Book(2)),
        None,
        "kept past LOCAL_CACHE_TTL"
    );
}

#[test]
fn a_stale_copy_follows_events_and_bypass_like_a_hit() {
    let layer = live_layer();
    let ticket = layer.ticket().unwrap();
    assert!(layer.store_book(1, ticket, 1, body("v1"), FRESH));
    layer.invalidate_book(1, EventType::Updated, 2);
    assert_eq!(
        layer.get_stale(LocalKey::Book(1)),
        None,
        "the event must drop it"
    );
    let ticket = layer.ticket().unwrap();
    assert!(
        !layer.store_book(1, ticket, 1, body("v1"), FRESH),
        "below the floor"
    );
    assert!(layer.store_book(3, ticket, 1, body("x"), FRESH));
    layer.bypass("test");
    assert_eq!(
        layer.get_stale(LocalKey::Book(3)),
        None,
        "bypassed serves nothing"
    );
}

#[test]
fn the_entry_count_is_bounded() {
    let layer = LocalCache::new(LocalCacheSettings {
        max_entries: 10,
        max_age: Duration::from_secs(60),
        fresh_ttl: FRESH,
    });
    layer.go_live();
    for id in 0..1000 {
        store(&layer, id, 1, "a body");
    }
    assert!(layer.len() <= 10, "{} slots", layer.len());
}

#[test]
fn zero_entries_or_zero_freshness_turn_it_off() {
    for (max_entries, fresh_ttl) in [(0, FRESH), (100, Duration::ZERO)] {
        let layer = LocalCache::new(LocalCacheSettings {
            max_entries,
            max_age: Duration::from_secs(1),
            fresh_ttl,
        });
        layer.go_live();
        assert_eq!(layer.state(), LocalState::Disabled);
        assert_eq!(layer.ticket(), None);
        assert_eq!(served(&layer, 1), None);
    }
}

#[test]
fn concurrent_reads_and_events_never_leave_an_older_version_behind() {
    // Readers store what "Redis" held when they took their ticket; an invalidator moves
    // the version on. Whatever the interleaving, once the last event is in, the layer
    // holds the last version or nothing.
    let layer = live_layer();
    let redis = Arc::new(AtomicU64::new(1));
    std::thread::scope(|scope| {
        for _ in 0..4 {
            let (layer, redis) = (layer.clone(), Arc::clone(&redis));
            scope.spawn(move || {
                for _ in 0..2000 {
                    let Some(ticket) = layer.ticket() else {
                        continue;
                    };
                    let version = redis.load(Ordering::Acquire) as i64;
                    std::thread::yield_now();
                    let text = version.to_string();
                    layer.store_book(1, ticket, version, body(&text), Duration::ZERO);
                }
            });
        }
        let (layer, redis) = (layer.clone(), Arc::clone(&redis));
        scope.spawn(move || {
            for version in 2..=200_u64 {
                // The consumer writes Redis, then the event reaches this replica.
                redis.store(version, Ordering::Release);
                layer.invalidate_book(1, EventType::Updated, version as i64);
                std::thread::yield_now();
            }
        });
    });
    if let Some(body) = served(&layer, 1) {
        assert_eq!(body, self::body("200"));
    }
}

#[test]
fn the_metric_labels_are_the_states() {
    assert_eq!(
        LocalState::ALL.map(LocalState::as_str),
        crate::metrics::LOCAL_STATES
    );
}
