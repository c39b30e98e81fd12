use super::*;

fn guess(i: u32) -> Secret {
    Secret::new(format!("guess-{i}"))
}

/// One attempt, refused.
fn fail(t: &Throttle, account: &str, password: &Secret, ip: IpAddr) {
    t.begin_local(account, password, ip, false)
        .expect("not locked")
        .fail_here(password);
}

#[tokio::test]
async fn locks_after_the_free_failures_and_clears_on_success() {
    let t = Throttle::default();
    let ip: IpAddr = "10.0.0.1".parse().unwrap();
    for i in 0..FREE_PER_ACCOUNT {
        fail(&t, "bob", &guess(i), ip);
    }
    t.begin_local("bob", &guess(99), ip, false)
        .expect("five typos lock nothing");
    fail(&t, "bob", &guess(100), ip);
    let wait = t
        .begin_local("bob", &guess(1000), ip, false)
        .err()
        .expect("locked");
    assert!(wait <= Duration::from_secs(1));
    // Another account from another address is not affected.
    assert!(t
        .begin_local("alice", &guess(0), "10.0.0.2".parse().unwrap(), false)
        .is_ok());
    t.entries
        .get(&account_key("bob"))
        .unwrap()
        .lock()
        .unwrap()
        .locked_until = None;
    fail(&t, "bob", &guess(101), ip);
    assert!(
        t.begin_local("bob", &guess(1000), ip, false).err().unwrap() > Duration::from_secs(1),
        "the lock doubles"
    );
    t.entries
        .get(&account_key("bob"))
        .unwrap()
        .lock()
        .unwrap()
        .locked_until = None;
    t.begin_local("bob", &guess(7), "10.0.0.3".parse().unwrap(), false)
        .unwrap()
        .succeeded()
        .await;
    assert!(t
        .begin_local("bob", &guess(8), "10.0.0.3".parse().unwrap(), false)
        .is_ok());
}

#[test]
fn an_address_spraying_many_accounts_is_locked() {
    let t = Throttle::default();
    let ip: IpAddr = "10.0.0.9".parse().unwrap();
    for i in 0..=FREE_PER_ADDRESS {
        fail(&t, &format!("user{i}"), &guess(0), ip);
    }
    assert!(t.begin_local("someone-else", &guess(1), ip, false).is_err());
    assert!(t
        .begin_local(
            "someone-else",
            &guess(1),
            "10.0.0.10".parse().unwrap(),
            false
        )
        .is_ok());
}

#[test]
fn the_same_wrong_password_again_is_not_another_guess() {
    let t = Throttle::default();
    let ip: IpAddr = "10.0.0.5".parse().unwrap();
    let stale = Secret::new("last-years-password");
    for _ in 0..50 {
        fail(&t, "ci", &stale, ip);
    }
    assert!(
        t.begin_local("ci", &guess(0), ip, false).is_ok(),
        "a retrying client locks nothing"
    );
    // The same password for another account is a guess there.
    fail(&t, "cj", &stale, ip);
    // Different passwords are guesses, each counted (the stale one counted once).
    for i in 0..FREE_PER_ACCOUNT {
        fail(&t, "ci", &guess(i), ip);
    }
    assert!(t.begin_local("ci", &guess(1000), ip, false).is_err());
}

/// 300 guesses begun at once from one address, before any verdict: only as many go
/// through as could fail before the address locks (20 free + the one that locks it);
/// the rest are told to wait. As each is settled, the count holds.
#[test]
fn concurrent_guesses_are_counted_when_they_start() {
    let t = Throttle::default();
    let ip: IpAddr = "10.0.0.7".parse().unwrap();
    let passwords: Vec<Secret> = (0..300).map(guess).collect();
    let started: Vec<Attempt<'_>> = (0..300)
        .filter_map(|i| {
            t.begin_local(&format!("user{i}"), &passwords[i as usize], ip, false)
                .ok()
        })
        .collect();
    assert_eq!(started.len() as u32, FREE_PER_ADDRESS + 1);
    for (i, attempt) in started.into_iter().enumerate() {
        attempt.fail_here(&passwords[i]);
    }
    let wait = t
        .begin_local("late", &guess(999), ip, false)
        .err()
        .expect("locked now");
    assert!(
        wait > IN_FLIGHT_WAIT,
        "the lock itself, not a wait for verdicts"
    );
    // One account: at most its 5 free + 1 at once.
    let t = Throttle::default();
    let at_once: Vec<_> = (0..50)
        .filter_map(|i| {
            t.begin_local("bob", &passwords[i], "10.0.0.8".parse().unwrap(), false)
                .ok()
        })
        .collect();
    assert_eq!(at_once.len() as u32, FREE_PER_ACCOUNT + 1);
}

#[test]
fn an_attempt_without_a_verdict_counts_nothing() {
    let t = Throttle::default();
    let ip: IpAddr = "10.0.0.11".parse().unwrap();
    for i in 0..100 {
        // Begun and dropped: the client went away, the directory did not answer.
        let attempt = t
            .begin_local("bob", &guess(i), ip, false)
            .expect("nothing counted");
        drop(attempt);
    }
    let e = t.entries.get(&account_key("bob")).unwrap();
    let e = e.lock().unwrap();
    assert_eq!((e.failures, e.in_flight), (0, 0));
}

/// Two replicas sharing one store (a `Local` stands in for Redis: same trait).
fn replicas() -> (Throttle, Throttle, Arc<crate::metrics::Metrics>) {
    let store: Arc<dyn Store> = Arc::new(crate::state::Local::memory());
    let metrics = Arc::new(crate::metrics::Metrics::default());
    (
        Throttle::shared(store.clone(), metrics.clone()),
        Throttle::shared(store, metrics.clone()),
        metrics,
    )
}

async fn fail_shared(t: &Throttle, account: &str, password: &Secret, ip: IpAddr) {
    t.begin(account, password, ip, false)
        .await
        .expect("not locked")
        .failed(password)
        .await;
}

#[tokio::test]
async fn replicas_sharing_a_store_count_as_one() {
    let (a, b, _) = replicas();
    let ip: IpAddr = "10.1.0.1".parse().unwrap();
    // Different wrong passwords spread over both: the sixth locks on both.
    for i in 0..=FREE_PER_ACCOUNT {
        let t = if i % 2 == 0 { &a } else { &b };
        fail_shared(t, "bob", &guess(i), ip).await;
    }
    assert!(a.begin("bob", &guess(50), ip, false).await.is_err());
    assert!(b.begin("bob", &guess(51), ip, false).await.is_err());
    // The same stale password on both counts once; a right one clears both.
    let (c, d, _) = replicas();
    let stale = Secret::new("last-years-password");
    for _ in 0..3 {
        fail_shared(&c, "ci", &stale, ip).await;
        fail_shared(&d, "ci", &stale, ip).await;
    }
    // The stale password counted once: four more guesses leave one free.
    for i in 0..FREE_PER_ACCOUNT - 1 {
        fail_shared(&c, "ci", &guess(i), ip).await;
    }
    d.begin("ci", &guess(99), ip, false)
        .await
        .expect("one free failure left")
        .succeeded()
        .await;
    // Cleared everywhere: five free failures again on the other replica.
    for i in 10..10 + FREE_PER_ACCOUNT {
        fail_shared(&c, "ci", &guess(i), ip).await;
    }
    assert!(c.begin("ci", &guess(100), ip, false).await.is_ok());
}

#[tokio::test]
async fn concurrent_guesses_on_two_replicas_are_bounded_together() {
    let (a, b, _) = replicas();
    let ip: IpAddr = "10.1.0.7".parse().unwrap();
    let passwords: Vec<Secret> = (0..100).map(guess).collect();
    let mut started = Vec::new();
    for (i, p) in passwords.iter().enumerate() {
        let t = if i % 2 == 0 { &a } else { &b };
        if let Ok(attempt) = t.begin(&format!("user{i}"), p, ip, false).await {
            started.push(attempt);
        }
    }
    assert_eq!(started.len() as u32, FREE_PER_ADDRESS + 1);
}

/// A store that is always down.
struct Down;
impl Store for Down {
    fn get<'a>(
        &'a self,
        _: &'a str,
    ) -> crate::auth::backend::BoxFuture<'a, Result<Option<Vec<u8>>, crate::state::StoreError>>
    {
        Box::pin(async { Err(crate::state::StoreError::Unavailable("down".into())) })
    }
    fn put<'a>(
        &'a self,
        _: &'a str,
        _: Vec<u8>,
        _: Option<Duration>,
    ) -> crate::auth::backend::BoxFuture<'a, Result<(), crate::state::StoreError>> {
        Box::pin(async { Err(crate::state::StoreError::Unavailable("down".into())) })
    }
    fn delete<'a>(
        &'a self,
        _: &'a str,
    ) -> crate::auth::backend::BoxFuture<'a, Result<(), crate::state::StoreError>> {
        Box::pin(async { Err(crate::state::StoreError::Unavailable("down".into())) })
    }
    fn add<'a>(
        &'a self,
        _: &'a str,
        _: i64,
        _: Duration,
    ) -> crate::auth::backend::BoxFuture<'a, Result<i64, crate::state::StoreError>> {
        Box::pin(async { Err(crate::state::StoreError::Unavailable("down".into())) })
    }
    fn put_new<'a>(
        &'a self,
        _: &'a str,
        _: Vec<u8>,
        _: Option<Duration>,
    ) -> crate::auth::backend::BoxFuture<'a, Result<bool, crate::state::StoreError>> {
        Box::pin(async { Err(crate::state::StoreError::Unavailable("down".into())) })
    }
    fn keys<'a>(
        &'a self,
        _: &'a str,
    ) -> crate::auth::backend::BoxFuture<'a, Result<Vec<String>, crate::state::StoreError>> {
        Box::pin(async { Err(crate::state::StoreError::Unavailable("down".into())) })
    }
}

#[tokio::test]
async fn with_the_shared_state_down_this_replica_counts_alone() {
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let t = Throttle::shared(Arc::new(Down), metrics.clone());
    let ip: IpAddr = "10.1.0.9".parse().unwrap();
    for i in 0..=FREE_PER_ACCOUNT {
        fail_shared(&t, "bob", &guess(i), ip).await;
    }
    assert!(
        t.begin("bob", &guess(99), ip, false).await.is_err(),
        "locked here"
    );
    assert_eq!(
        metrics.throttle_local_fallbacks.load(Relaxed),
        u64::from(FREE_PER_ACCOUNT) + 1
    );
}
