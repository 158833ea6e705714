use std::net::Ipv4Addr;

use proptest::prelude::*;

use super::*;

fn peer(i: u32) -> Caller {
    Caller::peer(IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + i)))
}

fn limits(max_callers: usize) -> ReviewLimits {
    ReviewLimits::new(ThrottleConfig {
        burst: REVIEW_BURST,
        refill_per_sec: REVIEWS_PER_SECOND,
        max_delay: MAX_RETRY_AFTER,
        max_addresses: max_callers,
    })
}

/// Most reviews one caller can be admitted between two instants `elapsed` apart.
fn bound(elapsed: Duration) -> u64 {
    u64::from(REVIEW_BURST)
        + (elapsed.as_micros() * u128::from(REVIEWS_PER_SECOND) / 1_000_000) as u64
}

#[test]
fn a_burst_then_the_rate_and_retry_after_says_when() {
    let limits = limits(MAX_CALLERS);
    let t0 = Instant::now();
    for _ in 0..REVIEW_BURST {
        assert_eq!(limits.charge(peer(1), t0), Ok(()));
    }
    let refused = limits.charge(peer(1), t0).unwrap_err();
    assert_eq!(
        refused.retry_after,
        Duration::from_secs(1) / REVIEWS_PER_SECOND
    );
    // Another peer, or a user behind the same address, has its own budget.
    assert_eq!(limits.charge(peer(2), t0), Ok(()));
    assert_eq!(limits.charge(Caller::User("alice".into()), t0), Ok(()));
    // Waiting as told is enough.
    assert_eq!(limits.charge(peer(1), t0 + refused.retry_after * 2), Ok(()));
}

#[test]
fn a_caller_that_ignores_retry_after_gets_nothing_until_it_stops() {
    let limits = limits(MAX_CALLERS);
    let t0 = Instant::now();
    let mut admitted = 0;
    for ms in 0..20_000u64 {
        admitted += u32::from(
            limits
                .charge(peer(1), t0 + Duration::from_millis(ms))
                .is_ok(),
        );
    }
    assert_eq!(
        admitted, REVIEW_BURST,
        "hammering every millisecond for 20 s"
    );
    let refused = limits
        .charge(peer(1), t0 + Duration::from_millis(20_000))
        .unwrap_err();
    assert_eq!(refused.retry_after, MAX_RETRY_AFTER);
}

#[test]
fn a_flood_of_new_callers_cannot_forget_a_caller_in_debt() {
    let limits = limits(16);
    let t0 = Instant::now();
    for _ in 0..REVIEW_BURST * 2 {
        let _ = limits.charge(peer(0), t0);
    }
    for i in 1..10_000 {
        let _ = limits.charge(peer(i), t0);
    }
    assert!(limits.charge(peer(0), t0).is_err());
}

#[tokio::test(flavor = "current_thread")]
async fn reviews_wait_for_one_of_the_in_flight_slots() {
    let limits = limits(MAX_CALLERS);
    let held: Vec<_> =
        futures::future::join_all((0..REVIEWS_IN_FLIGHT as u32).map(|i| limits.admit(peer(i))))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    assert_eq!(limits.in_flight.available_permits(), 0);
    drop(held);
    assert!(limits.admit(peer(99)).await.is_ok());
}

#[test]
fn cached_answers_expire_and_the_cache_stays_bounded() {
    let mut cache: Cache<usize, bool> = Cache::new(4);
    let t0 = Instant::now();
    cache.put(1, true, t0);
    assert_eq!(cache.get(&1, t0 + CACHE_TTL / 2), Some(true));
    assert_eq!(cache.get(&1, t0 + CACHE_TTL), None);
    for i in 0..100 {
        cache.put(i, true, t0 + Duration::from_millis(i as u64));
        assert!(cache.len() <= 4);
    }
    // The newest four are kept: a full cache loses its oldest entry, never all of them.
    let now = t0 + Duration::from_millis(100);
    assert_eq!(
        (0..100)
            .filter(|i| cache.get(i, now).is_some())
            .collect::<Vec<_>>(),
        [96, 97, 98, 99]
    );
}

#[test]
fn the_newest_answer_wins_over_the_other_half() {
    let answers: Answers<u8, (), ()> = Answers::new(4);
    let t0 = Instant::now();
    answers.put(1, Ok(()), t0);
    answers.put(1, Err(()), t0);
    assert_eq!(answers.get(&1, t0), Some(Err(())));
    answers.put(1, Ok(()), t0);
    assert_eq!(answers.get(&1, t0), Some(Ok(())));
}

proptest! {
    /// Whatever the callers and their timing, one caller is admitted at most its burst plus
    /// the rate times the time between its first and last request.
    #[test]
    fn no_caller_exceeds_its_burst_plus_its_rate(
        requests in prop::collection::vec((0u32..4, 0u64..400), 1..600),
    ) {
        let limits = limits(MAX_CALLERS);
        let t0 = Instant::now();
        let mut now = t0;
        let mut seen: HashMap<u32, (Instant, Instant, u64)> = HashMap::new();
        for (caller, step_ms) in requests {
            now += Duration::from_millis(step_ms);
            let admitted = limits.charge(peer(caller), now).is_ok();
            let entry = seen.entry(caller).or_insert((now, now, 0));
            entry.1 = now;
            entry.2 += u64::from(admitted);
        }
        for (first, last, admitted) in seen.into_values() {
            prop_assert!(admitted <= bound(last - first), "{admitted} in {:?}", last - first);
        }
    }

    /// Other callers' requests, however many, change nothing for one caller while the table
    /// has room.
    #[test]
    fn callers_do_not_share_budgets(
        own in prop::collection::vec(0u64..300, 1..100),
        others in prop::collection::vec((1u32..1000, 0usize..100), 0..2000),
    ) {
        let alone = limits(MAX_CALLERS);
        let crowded = limits(MAX_CALLERS);
        let t0 = Instant::now();
        let mut now = t0;
        for (i, step_ms) in own.iter().enumerate() {
            now += Duration::from_millis(*step_ms);
            for (other, _) in others.iter().filter(|(_, at)| *at == i) {
                let _ = crowded.charge(peer(*other), now);
            }
            prop_assert_eq!(alone.charge(peer(0), now), crowded.charge(peer(0), now));
        }
    }

    /// Refused answers, however many, never displace an accepted one: the accepted half holds
    /// the same with and without them, and each half stays within its capacity.
    #[test]
    fn refused_answers_never_displace_accepted_ones(
        puts in prop::collection::vec((any::<bool>(), 0u16..1000), 1..3000),
    ) {
        let capacity = 64;
        let with: Answers<u16, (), ()> = Answers::new(capacity);
        let without: Answers<u16, (), ()> = Answers::new(capacity);
        let t0 = Instant::now();
        for (i, (ok, key)) in puts.into_iter().enumerate() {
            let now = t0 + Duration::from_micros(i as u64);
            if ok {
                with.put(key, Ok(()), now);
                without.put(key, Ok(()), now);
            } else {
                // Refused credentials: never one that was accepted.
                with.put(1000 + key, Err(()), now);
            }
        }
        let now = t0 + Duration::from_millis(5);
        for key in 0..1000 {
            prop_assert_eq!(with.get(&key, now), without.get(&key, now));
        }
        let halves = with.halves.lock().unwrap();
        prop_assert!(halves.0.len() <= capacity && halves.1.len() <= capacity);
    }
}
