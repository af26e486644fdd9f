//! The store's batched fast path driven directly, on a database of its own: what one
//! transaction writes for a batch of new, refused and already recorded challenges.

mod support;

use chrono::{Duration as Minutes, Utc};
use futures_util::future::join_all;
use otpd::domain::DeliveryState;
use otpd::limits::{Counter, Refusal};
use otpd::store::{Decide, FirstAttempt, NewDelivery, Opened, Owner, Store};
use std::sync::Arc;
use std::time::Duration;
use support::scratch::ScratchDb;

fn takes_one() -> Decide {
    Arc::new(|counters: &[Counter], now| {
        Ok(counters
            .iter()
            .map(|c| Counter {
                hour_start: Some(now),
                hour_used: c.hour_used + 1,
                ..c.clone()
            })
            .collect())
    })
}

fn refuses() -> Decide {
    Arc::new(|_: &[Counter], _| {
        Err(Refusal {
            state: DeliveryState::RateLimited,
            reason: "rate_limit",
            rule: Some("phone".into()),
            retry_after: Some(Duration::from_secs(60)),
            detail: "refused by the test".into(),
        })
    })
}

/// Opens challenge `id`, taking the counter ("phone", `id`) if `decide` allows, its call marked.
async fn open(store: &Store, id: &str, decide: Decide) -> Opened {
    open_marked(store, id, decide, true).await
}

async fn open_marked(store: &Store, id: &str, decide: Decide, marked: bool) -> Opened {
    let expires_at = Utc::now() + Minutes::minutes(5);
    let new = NewDelivery {
        challenge_id: id,
        account_id: "acct",
        channel: "sms",
        destination_masked: "+1415555****",
        destination_hmac: b"hmac",
        locale: None,
        template: "login",
        expires_at,
        country: Some("US"),
        prefix: Some("1415555"),
    };
    let first = FirstAttempt {
        provider: "twilio",
        keys: vec![("phone".to_string(), id.to_string())],
        decide,
        lease: Duration::from_secs(30),
        marked,
    };
    let owner = Owner { id, token: 7 };
    store.open(&new, owner, &first).await.unwrap()
}

async fn scratch_store() -> (ScratchDb, Store) {
    let db = ScratchDb::create().await;
    sqlx::migrate!("./migrations").run(&db.pool).await.unwrap();
    let store = Store::connect(
        &db.settings.database,
        db.settings.store.destination_hmac_key.clone(),
    )
    .unwrap();
    (db, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_opens_new_challenges_in_their_final_state_and_leaves_recorded_ones_alone() {
    let (db, store) = scratch_store().await;
    sqlx::query("INSERT INTO deliveries (challenge_id, state) VALUES ('old', 'sent')")
        .execute(&db.pool)
        .await
        .unwrap();

    // Submitted together, so that they share batches: whichever batch holds 'old' finds it
    // recorded, rolls back and is decided again without it.
    let opened = join_all([
        open(&store, "a", takes_one()),
        open(&store, "old", takes_one()),
        open(&store, "refused", refuses()),
        open(&store, "b", takes_one()),
    ])
    .await;
    let answers: Vec<String> = opened
        .iter()
        .map(|o| match o {
            Opened::Started => "started".to_string(),
            Opened::Exists => "exists".to_string(),
            Opened::Refused(r) => format!("refused: {}", r.reason),
        })
        .collect();
    assert_eq!(
        answers,
        ["started", "exists", "refused: rate_limit", "started"]
    );

    let rows: Vec<(String, String, i32, bool, Option<String>, bool)> = sqlx::query_as(
        "SELECT challenge_id, state, attempt, admitted, provider, call_started_at IS NOT NULL
           FROM deliveries ORDER BY challenge_id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let sending = |id: &str| {
        (
            id.into(),
            "sending".into(),
            1,
            true,
            Some("twilio".into()),
            true,
        )
    };
    assert_eq!(
        rows,
        [
            sending("a"),
            sending("b"),
            ("old".into(), "sent".into(), 0, false, None, false),
            ("refused".into(), "received".into(), 0, false, None, false),
        ]
    );

    // Only the started challenges took their counters.
    let counters: Vec<(String, i64)> =
        sqlx::query_as("SELECT key, hour_used FROM limit_counters ORDER BY key")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(counters, [("a".into(), 1), ("b".into(), 1)]);

    // The slow path's events, in order per challenge; none for the recorded one.
    let events: Vec<(String, String, Option<i32>)> = sqlx::query_as(
        "SELECT challenge_id, state, attempt FROM delivery_events ORDER BY challenge_id, id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let event = |id: &str, state: &str, attempt| (id.into(), state.into(), attempt);
    assert_eq!(
        events,
        [
            event("a", "received", None),
            event("a", "sending", Some(1)),
            event("b", "received", None),
            event("b", "sending", Some(1)),
            event("refused", "received", None),
        ]
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_call_marks_mark_only_the_attempts_their_owners_still_hold() {
    let (db, store) = scratch_store().await;
    for id in ["a", "b", "stolen"] {
        let opened = open_marked(&store, id, takes_one(), false).await;
        assert!(matches!(opened, Opened::Started), "{id}");
    }
    sqlx::query("INSERT INTO deliveries (challenge_id, state) VALUES ('old', 'sent')")
        .execute(&db.pool)
        .await
        .unwrap();
    let unmarked: i64 =
        sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE call_started_at IS NULL")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(unmarked, 4, "the openings leave their calls unmarked");

    // Submitted together, so that they share batches. 'stolen' is marked under a token that
    // no longer owns it, and 'old' has no attempt under way. A mark also renews the lease
    // (the openings leased for 30 s).
    let lease = Duration::from_secs(120);
    let mark = |id, token| store.mark_call_started(Owner { id, token }, lease);
    let marked = join_all([
        mark("a", 7),
        mark("stolen", 8),
        mark("old", 7),
        mark("b", 7),
    ])
    .await;
    let marked: Vec<bool> = marked.into_iter().map(Result::unwrap).collect();
    assert_eq!(marked, [true, false, false, true]);

    let rows: Vec<(String, bool, bool)> = sqlx::query_as(
        "SELECT challenge_id, call_started_at IS NOT NULL,
                coalesce(lease_until > now() + interval '60 seconds', false)
           FROM deliveries ORDER BY challenge_id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        [
            ("a".into(), true, true),
            ("b".into(), true, true),
            ("old".into(), false, false),
            ("stolen".into(), false, false),
        ]
    );
    store.close().await;
}
