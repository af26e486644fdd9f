//! The store driven directly, on a database of its own: what one batched claim writes for
//! new, refused and already recorded challenges, and what batched attempt starts write; and,
//! as properties,
//! that hostile text in any field and whatever the parsers pass is stored, clean.

use crate::support::hostile;
use crate::support::scratch::ScratchDb;
use chrono::{Duration as Minutes, Utc};
use futures_util::future::BoxFuture;
use futures_util::future::join_all;
use otpd::domain::text::{MAX_DETAIL_CHARS, is_clean};
use otpd::domain::{DeliveryState, FailReason, Job, Outcome};
use otpd::limits::{Counter, Refusal};
use otpd::store::{
    Admit, Claim, Decide, NewDelivery, Owner, ReceiptOutcome, Rejected, Store, Verdict,
};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use std::sync::Arc;
use std::time::Duration;

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
            reason: FailReason::RateLimit,
            rule: Some("phone".into()),
            retry_after: Some(Duration::from_secs(60)),
            detail: "refused by the test".into(),
        })
    })
}

/// Claims challenge `id` for the owner with token 7, offering to take the counter
/// ("phone", `id`) if `decide` allows.
async fn claim(store: &Store, id: &str, decide: Decide) -> Claim {
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
    let admit = Admit {
        keys: vec![("phone".to_string(), id.to_string())],
        decide,
    };
    let lease = Duration::from_secs(30);
    store.claim(&new, lease, 7, Some(admit)).await.unwrap()
}

pub(crate) async fn scratch_store() -> (ScratchDb, Store) {
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
async fn a_batch_of_claims_admits_new_challenges_and_leaves_recorded_ones_alone() {
    let (db, store) = scratch_store().await;
    sqlx::query("INSERT INTO deliveries (challenge_id, state) VALUES ('old', 'sent')")
        .execute(&db.pool)
        .await
        .unwrap();

    // Submitted together, so that they share batches: whichever batch holds 'old' finds it
    // recorded, rolls back and is decided again without it; 'old' is then claimed as a
    // recorded challenge, and found finished.
    let claimed = join_all([
        claim(&store, "a", takes_one()),
        claim(&store, "old", takes_one()),
        claim(&store, "refused", refuses()),
        claim(&store, "b", takes_one()),
    ])
    .await;
    let answers: Vec<String> = claimed
        .iter()
        .map(|c| match c {
            Claim::New(Verdict::Admitted) => "admitted".to_string(),
            Claim::New(Verdict::Refused(r)) => format!("refused: {}", r.reason),
            Claim::Done { outcome, .. } => format!("done: {}", outcome.state),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        answers,
        ["admitted", "done: sent", "refused: rate_limit", "admitted"]
    );

    let rows: Vec<(String, String, i32, bool, bool)> = sqlx::query_as(
        "SELECT challenge_id, state, attempt, admitted, lease_token IS NOT NULL
           FROM deliveries ORDER BY challenge_id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let row =
        |id: &str, state: &str, admitted, leased| (id.into(), state.into(), 0, admitted, leased);
    assert_eq!(
        rows,
        [
            row("a", "sending", true, true),
            row("b", "sending", true, true),
            row("old", "sent", false, false),
            row("refused", "received", false, true),
        ]
    );

    // Only the admitted challenges took their counters.
    let counters: Vec<(String, i64)> =
        sqlx::query_as("SELECT key, hour_used FROM limit_counters ORDER BY key")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(counters, [("a".into(), 1), ("b".into(), 1)]);

    // One `received` event per new challenge; none for the recorded one.
    let events: Vec<(String, String)> =
        sqlx::query_as("SELECT challenge_id, state FROM delivery_events ORDER BY challenge_id, id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let event = |id: &str| (id.into(), "received".into());
    assert_eq!(events, [event("a"), event("b"), event("refused")]);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_attempt_starts_apply_only_to_challenges_their_owners_still_hold() {
    let (db, store) = scratch_store().await;
    for id in ["a", "b", "stolen"] {
        let claimed = claim(&store, id, takes_one()).await;
        assert_eq!(claimed, Claim::New(Verdict::Admitted), "{id}");
    }
    sqlx::query("INSERT INTO deliveries (challenge_id, state) VALUES ('old', 'sent')")
        .execute(&db.pool)
        .await
        .unwrap();

    // Submitted together, so that they share batches. 'stolen' is started under a token that
    // no longer owns it, and 'old' is finished. A start marks the call as under way and
    // renews the lease (the claims leased for 30 s).
    let lease = Duration::from_secs(120);
    let start = |id, token| store.start_attempt(Owner { id, token }, 1, "twilio", lease);
    let started = join_all([
        start("a", 7),
        start("stolen", 8),
        start("old", 7),
        start("b", 7),
    ])
    .await;
    let started: Vec<bool> = started.into_iter().map(Result::unwrap).collect();
    assert_eq!(started, [true, false, false, true]);

    let rows: Vec<(String, String, i32, bool, bool)> = sqlx::query_as(
        "SELECT challenge_id, state, attempt, call_started_at IS NOT NULL,
                coalesce(lease_until > now() + interval '60 seconds', false)
           FROM deliveries ORDER BY challenge_id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        [
            ("a".into(), "sending".into(), 1, true, true),
            ("b".into(), "sending".into(), 1, true, true),
            ("old".into(), "sent".into(), 0, false, false),
            ("stolen".into(), "sending".into(), 0, false, false),
        ]
    );
    store.close().await;
}

/// Cases per property: `PROPTEST_CASES` when set (to fuzz longer by hand), else `default`.
fn cases(default: u32) -> proptest::test_runner::Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default);
    proptest::test_runner::Config {
        cases,
        failure_persistence: None,
        ..Default::default()
    }
}

/// Runs `property` over `strategy` on the test's runtime: proptest drives, the store awaits.
fn check<S: Strategy>(
    config: proptest::test_runner::Config,
    strategy: S,
    property: impl Fn(S::Value) -> BoxFuture<'static, Result<(), TestCaseError>>,
) {
    let handle = tokio::runtime::Handle::current();
    let mut runner = TestRunner::new(config);
    let result = tokio::task::block_in_place(|| {
        runner.run(&strategy, |value| handle.block_on(property(value)))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

fn stored<T, E: std::fmt::Display>(r: Result<T, E>) -> Result<T, TestCaseError> {
    r.map_err(|e| TestCaseError::fail(format!("the store refused it: {e}")))
}

/// The fuzz harness: the job and `verified` parsers over hostile bodies. Neither panics, every
/// refusal's detail is clean and bounded, and whatever they accept, or refuse naming a
/// challenge, the store keeps (a refused write here would once have stalled the queue).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_parsers_take_hostile_bodies_and_the_store_keeps_whatever_they_pass() {
    let (_db, store) = scratch_store().await;
    let s = store.clone();
    check(cases(400), hostile::job_body(), move |body| {
        let store = s.clone();
        Box::pin(async move { job_round_trip(&store, &body).await })
    });
    check(cases(400), hostile::verified_body(), |body| {
        Box::pin(async move {
            if let Err(r) = otpd::domain::job::parse_verified(&body) {
                prop_assert!(is_clean(&r.detail, MAX_DETAIL_CHARS), "{:?}", r.detail);
            }
            Ok(())
        })
    });
}

async fn job_round_trip(store: &Store, body: &[u8]) -> Result<(), TestCaseError> {
    let job = match Job::parse(body) {
        Ok(job) => job,
        Err(r) => {
            prop_assert!(is_clean(&r.detail, MAX_DETAIL_CHARS), "{:?}", r.detail);
            if let Some(id) = &r.challenge_id {
                let rec = Rejected {
                    challenge_id: id,
                    reason: r.reason.code(),
                    detail: &r.detail,
                };
                stored(store.record_rejection(&rec).await)?;
            }
            return Ok(());
        }
    };
    let hmac = store.destination_hmac(job.to.expose());
    let masked = job.to.masked();
    let new = NewDelivery {
        challenge_id: job.challenge_id.as_str(),
        account_id: job.account_id.as_str(),
        channel: job.channel.as_str(),
        destination_masked: &masked,
        destination_hmac: &hmac,
        locale: job.locale.as_deref(),
        template: &job.template,
        expires_at: job.expires_at,
        country: None,
        prefix: None,
    };
    let token = rand_token();
    let lease = Duration::from_secs(30);
    if let Claim::New(_) = stored(store.claim(&new, lease, token, None).await)? {
        let owner = Owner {
            id: job.challenge_id.as_str(),
            token,
        };
        // The job's own texts, where a vendor would echo them back.
        let f = finish(Some(job.account_id.as_str()), Some(job.account_id.as_str()));
        prop_assert!(stored(store.finish(owner, &f).await)?);
    }
    Ok(())
}

/// A terminal `failed` with the given vendor message id and detail.
fn finish<'a>(message_id: Option<&'a str>, detail: Option<&'a str>) -> Outcome<'a> {
    // A closed enum: no text from outside can reach the reason column.
    let mut f = Outcome::ended(DeliveryState::Failed, 1, FailReason::ProviderPermanent, "");
    f.provider = Some("twilio".into());
    f.provider_message_id = message_id.map(Into::into);
    f.detail = detail.map(Into::into);
    f.response_status = Some(400);
    f.latency_ms = Some(1);
    f.rule = detail.map(Into::into);
    f
}

fn rand_token() -> i64 {
    i64::from_le_bytes(uuid::Uuid::new_v4().as_bytes()[..8].try_into().unwrap())
}

/// Every free text the store writes takes any Unicode, NULs, bidirectional marks and 10 KiB
/// runs included, and keeps it clean and bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_free_text_field_takes_any_text_and_keeps_it_clean() {
    let (db, store) = scratch_store().await;
    let s = store.clone();
    let texts = (hostile::text(), hostile::text(), hostile::text());
    check(cases(48), texts, move |(a, b, c)| {
        let store = s.clone();
        Box::pin(async move { every_field(&store, &a, &b, &c).await })
    });
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT row_to_json(d)::text FROM deliveries d UNION ALL SELECT row_to_json(e)::text FROM delivery_events e",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(rows.len() > 48 * 4, "rows were written");
    for row in rows {
        let v: serde_json::Value = serde_json::from_str(&row).unwrap();
        for (k, field) in v.as_object().unwrap() {
            if let Some(text) = field.as_str() {
                assert!(is_clean(text, MAX_DETAIL_CHARS), "{k} kept as {text:?}");
            }
        }
    }
}

async fn every_field(store: &Store, a: &str, b: &str, c: &str) -> Result<(), TestCaseError> {
    let id = format!("prop-{}", uuid::Uuid::new_v4().simple());
    let challenge_id = otpd::domain::ChallengeId::parse(&id).unwrap();
    stored(
        store
            .record_rejection(&Rejected {
                challenge_id: &challenge_id,
                reason: "malformed_json",
                detail: a,
            })
            .await,
    )?;
    let id = format!("prop-{}", uuid::Uuid::new_v4().simple());
    prop_assert_eq!(
        claim(store, &id, takes_one()).await,
        Claim::New(Verdict::Admitted)
    );
    let owner = Owner { id: &id, token: 7 };
    prop_assert!(stored(
        store
            .start_attempt(owner, 1, "twilio", Duration::from_secs(30))
            .await
    )?);
    stored(store.record_in_doubt(&id, 1, Some("twilio"), b).await)?;
    let failed = finish(None, Some(c));
    prop_assert!(stored(
        store
            .record_failed_attempt(owner, &failed, Duration::from_secs(30))
            .await
    )?);
    let mut sent = finish(Some(a), Some(b));
    sent.state = DeliveryState::Sent;
    prop_assert!(stored(store.finish(owner, &sent).await)?);
    let providers = ["twilio".to_string()];
    stored(
        store
            .apply_receipt(&providers, a, DeliveryState::Undelivered, Some(c))
            .await,
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_moves_only_the_message_its_own_provider_sent() {
    let (db, store) = scratch_store().await;
    // Two vendors gave their messages the same id, as short numeric SMSC ids do.
    for (id, provider) in [("via-a", "smsc_a"), ("via-b", "smsc_b")] {
        sqlx::query(
            "INSERT INTO deliveries (challenge_id, state, provider, provider_message_id)
             VALUES ($1, 'sent', $2, '1001')",
        )
        .bind(id)
        .bind(provider)
        .execute(&db.pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO provider_messages (provider_message_id, challenge_id) VALUES ('1001', $1)",
        )
        .bind(id)
        .execute(&db.pool)
        .await
        .unwrap();
    }
    let heard_by = ["smsc_b".to_string()];
    let outcome = store
        .apply_receipt(&heard_by, "1001", DeliveryState::Undelivered, Some("err 1"))
        .await
        .unwrap();
    assert!(matches!(outcome, ReceiptOutcome::Applied(row) if row.challenge_id == "via-b"));
    let states: Vec<(String, String)> =
        sqlx::query_as("SELECT challenge_id, state FROM deliveries ORDER BY challenge_id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        states,
        [
            ("via-a".to_string(), "sent".to_string()),
            ("via-b".to_string(), "undelivered".to_string())
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_feedback_counts_only_for_a_code_sent_and_not_long_expired() {
    let (db, store) = scratch_store().await;
    for (id, state, expired_mins_ago) in [
        ("sent-fresh", "sent", -5),
        ("delivered-just-expired", "delivered", 1),
        ("sent-long-expired", "sent", 60),
        ("rate-limited", "rate_limited", -5),
        ("rejected", "rejected", -5),
    ] {
        sqlx::query(
            "INSERT INTO deliveries (challenge_id, state, expires_at)
             VALUES ($1, $2, now() - make_interval(mins => $3))",
        )
        .bind(id)
        .bind(state)
        .bind(expired_mins_ago)
        .execute(&db.pool)
        .await
        .unwrap();
    }
    let late = Duration::from_secs(600);
    let mut counted = Vec::new();
    for id in [
        "sent-fresh",
        "delivered-just-expired",
        "sent-long-expired",
        "rate-limited",
        "rejected",
        "unknown",
    ] {
        if store.record_verified(id, late).await.unwrap() {
            counted.push(id);
        }
    }
    assert_eq!(counted, ["sent-fresh", "delivered-just-expired"]);
}
