//! The audit trail's integrity and retention through the `otpd` commands: a purge removes old
//! records and is itself recorded, `otpd audit verify` still passes after it, and it fails on
//! an edited, a deleted or a removed newest event.

use crate::support::*;
use otpd::audit::chain;
use otpd::audit::{SEAL_PATIENCE, Trail};
use otpd::store::Store;

async fn exec(app: &TestApp, sql: &str) {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&app.db)
        .await
        .unwrap();
}

#[tokio::test]
async fn purges_are_audited_and_verify_catches_edited_and_deleted_events() {
    // The daemon seals only at start-up here, so the test can backdate events before they are
    // chained (a real backdating afterwards is exactly what verify must catch).
    let mut app = TestApp::spawn(|s| s.audit.seal_interval_ms = 3_600_000).await;
    let jobs: Vec<_> = (0..4)
        .map(|i| job("sms", &format!("+44740012345{i}"), "482913"))
        .collect();
    for j in &jobs {
        app.publish(j).await;
        app.event_where(|k, e| k == "delivery.sent" && e["challenge_id"] == id(j))
            .await;
    }
    let old = format!("'{}', '{}'", id(&jobs[0]), id(&jobs[1]));
    exec(&app, &format!("UPDATE deliveries SET created_at = created_at - interval '40 days' WHERE challenge_id IN ({old})")).await;
    exec(
        &app,
        &format!(
            "UPDATE delivery_events SET at = at - interval '40 days' WHERE challenge_id IN ({old})"
        ),
    )
    .await;

    // The log provider returns no message ids; give every delivery one as Twilio's would get.
    exec(
        &app,
        "UPDATE deliveries SET provider_message_id = 'SM' || challenge_id",
    )
    .await;
    exec(
        &app,
        "INSERT INTO provider_messages SELECT provider_message_id, challenge_id FROM deliveries",
    )
    .await;

    let (status, out) = cli(&app.suffix, &["purge", "--older-than", "30d"]).await;
    assert!(status.success(), "{out}");
    assert!(
        out.contains("purged 2 deliveries and 6 audit events"),
        "{out}"
    );
    let purge: (String, i64, i64) =
        sqlx::query_as("SELECT trigger, events_deleted, deliveries_deleted FROM audit_purges")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(purge, ("command".to_string(), 6, 2));
    let left: (i64,) = sqlx::query_as("SELECT count(*) FROM deliveries")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(left.0, 2);
    // Receipts find a delivery by its provider message id; the purged ones' ids go with them.
    let ids: (i64,) = sqlx::query_as(
        "SELECT count(*) FROM provider_messages m JOIN deliveries d USING (challenge_id)
          WHERE d.provider_message_id = m.provider_message_id",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    let all: (i64,) = sqlx::query_as("SELECT count(*) FROM provider_messages")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!((ids.0, all.0), (2, 2));

    let (status, out) = cli(&app.suffix, &["audit", "verify"]).await;
    assert!(status.success(), "{out}");
    assert!(
        out.contains("checked 6 events") && out.contains("intact"),
        "{out}"
    );
    // A chain that cannot be read is not a broken one: a script must tell the two apart.
    let (status, out) = cli("nosuchdatabase", &["audit", "verify"]).await;
    assert_eq!(status.code(), Some(2), "{out}");

    let (first,): (i64,) = sqlx::query_as("SELECT min(seq) FROM audit_seals")
        .fetch_one(&app.db)
        .await
        .unwrap();
    let edited = first + 1;
    exec(
        &app,
        &format!(
            "UPDATE delivery_events SET detail = 'nothing to see' WHERE id = {}",
            event_at(edited)
        ),
    )
    .await;
    let (status, out) = cli(&app.suffix, &["audit", "verify"]).await;
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(
        out.contains(&format!("event {edited} ")) && out.contains("edited"),
        "{out}"
    );
    exec(
        &app,
        &format!(
            "UPDATE delivery_events SET detail = NULL WHERE id = {}",
            event_at(edited)
        ),
    )
    .await;
    let (status, _) = cli(&app.suffix, &["audit", "verify"]).await;
    assert!(status.success(), "undoing the edit restores the chain");

    // One event from the middle, and the newest together with its seal.
    exec(
        &app,
        &format!(
            "DELETE FROM delivery_events WHERE id = {}",
            event_at(first + 2)
        ),
    )
    .await;
    exec(
        &app,
        "WITH s AS (DELETE FROM audit_seals WHERE seq = (SELECT max(seq) FROM audit_seals) RETURNING event_id)
         DELETE FROM delivery_events WHERE id IN (SELECT event_id FROM s)",
    )
    .await;
    let (status, out) = cli(&app.suffix, &["audit", "verify"]).await;
    assert_eq!(status.code(), Some(1));
    assert!(
        out.contains(&format!(
            "events {} to {} are missing",
            first + 2,
            first + 2
        )),
        "{out}"
    );
    assert!(out.contains("newest events were deleted"), "{out}");
}

/// The event sealed at `seq`.
fn event_at(seq: i64) -> String {
    format!("(SELECT event_id FROM audit_seals WHERE seq = {seq})")
}

/// Every event has a seal.
const ALL_SEALED: &str = "SELECT NOT EXISTS (SELECT 1 FROM delivery_events e
                           WHERE NOT EXISTS (SELECT 1 FROM audit_seals s WHERE s.event_id = e.id))";

/// Waits (polling the database, bounded) until `sql` returns true.
async fn until(app: &TestApp, sql: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (done,): (bool,) = sqlx::query_as(sqlx::AssertSqlSafe(sql.to_string()))
            .fetch_one(&app.db)
            .await
            .unwrap();
        if done {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "in time: {sql}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_daemon_seals_new_events_and_purges_on_its_schedule() {
    let mut app = TestApp::spawn(|s| {
        s.audit.seal_interval_ms = 50;
        s.audit.retention_days = 30;
    })
    .await;
    // Two deliveries from 40 days ago (one transaction: a purge may run at any moment), then
    // a fresh one; the chain holds them in that order.
    sqlx::raw_sql(
        "INSERT INTO deliveries (challenge_id, state, created_at) VALUES
           ('old-1', 'sent', now() - interval '40 days'), ('old-2', 'failed', now() - interval '40 days');
         INSERT INTO delivery_events (challenge_id, kind, state, at) VALUES
           ('old-1', 'state', 'sent', now() - interval '40 days'),
           ('old-2', 'state', 'failed', now() - interval '40 days');",
    )
    .execute(&app.db)
    .await
    .unwrap();
    until(&app, ALL_SEALED).await;
    let fresh = job("sms", "+447400123456", "482913");
    app.publish(&fresh).await;
    app.event_where(|k, e| k == "delivery.sent" && e["challenge_id"] == id(&fresh))
        .await;
    until(&app, ALL_SEALED).await;

    // A purge is scheduled at every start and then every purge_interval_secs.
    app.stop().await;
    app.start_again().await;
    until(
        &app,
        "SELECT EXISTS (SELECT 1 FROM audit_purges WHERE trigger = 'scheduled')",
    )
    .await;
    let purged: (i64, i64) = sqlx::query_as(
        "SELECT sum(events_deleted)::bigint, sum(deliveries_deleted)::bigint FROM audit_purges",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(purged, (2, 2));
    let (status, out) = cli(&app.suffix, &["audit", "verify"]).await;
    assert!(
        status.success() && out.contains("checked 3 events"),
        "{out}"
    );
}

#[tokio::test]
async fn an_event_committed_late_is_sealed_once_without_a_gap() {
    // The daemon seals at start only and never purges (a purge seals too).
    let mut app = TestApp::spawn(|s| {
        s.audit.seal_interval_ms = 3_600_000;
        s.audit.retention_days = 0;
    })
    .await;
    let settings = app.settings();
    let trail = Trail::new(
        &Store::connect(
            &settings.database,
            settings.store.destination_hmac_key.clone(),
        )
        .unwrap(),
    );
    // A writer that starts before a job and commits after it, with the larger event id.
    let mut late = app.db.begin().await.unwrap();
    sqlx::query("INSERT INTO deliveries (challenge_id, state) VALUES ('late', 'sent')")
        .execute(&mut *late)
        .await
        .unwrap();
    let j = job("sms", "+447400123456", "482913");
    app.publish(&j).await;
    app.event_where(|k, e| k == "delivery.sent" && e["challenge_id"] == id(&j))
        .await;
    sqlx::query(
        "INSERT INTO delivery_events (challenge_id, kind, state) VALUES ('late', 'state', 'sent')",
    )
    .execute(&mut *late)
    .await
    .unwrap();

    // The job's events are committed but not final: a transaction older than theirs may still
    // add events that must come first.
    assert_eq!(trail.seal().await.unwrap(), 0);
    late.commit().await.unwrap();
    let (events,): (i64,) = sqlx::query_as("SELECT count(*) FROM delivery_events")
        .fetch_one(&app.db)
        .await
        .unwrap();
    trail.seal_all(SEAL_PATIENCE).await.unwrap();
    assert_eq!(trail.seal().await.unwrap(), 0, "nothing is sealed twice");

    // Chained in commit order: the late writer's event first, though its id is the newest.
    let order: (Vec<String>, Vec<i64>) = sqlx::query_as(
        "SELECT array_agg(e.challenge_id ORDER BY s.seq), array_agg(s.seq ORDER BY s.seq)
           FROM audit_seals s JOIN delivery_events e ON e.id = s.event_id",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(order.0[0], "late");
    assert!(order.0[1..].iter().all(|c| *c == id(&j)), "{order:?}");
    assert_eq!(order.1, (1..=events).collect::<Vec<_>>());
    let (latest,): (i64,) = sqlx::query_as("SELECT max(id) FROM delivery_events")
        .fetch_one(&app.db)
        .await
        .unwrap();
    let (late_id,): (i64,) =
        sqlx::query_as("SELECT id FROM delivery_events WHERE challenge_id = 'late'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(late_id, latest);

    let (status, out) = cli(&app.suffix, &["audit", "verify"]).await;
    assert!(status.success(), "{out}");
    assert!(
        out.contains(&format!("checked {events} events")) && out.contains("; 0 unsealed"),
        "{out}"
    );
}

#[tokio::test]
async fn upgrading_keeps_the_chain_and_seals_what_was_left_unsealed() {
    let db = scratch::ScratchDb::create().await;
    let migrator = sqlx::migrate!("./migrations");
    migrator.run_to(20261125000001, &db.pool).await.unwrap();
    // Before the upgrade: three events chained in the event rows, one not sealed yet.
    sqlx::raw_sql(
        "INSERT INTO deliveries (challenge_id, state) VALUES ('a', 'sent'), ('b', 'received');
         INSERT INTO delivery_events (challenge_id, kind, state) VALUES
           ('a', 'state', 'received'), ('a', 'state', 'sending'), ('a', 'state', 'sent');",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let sql = format!("SELECT {} FROM delivery_events ORDER BY id", chain::COLUMNS);
    let rows: Vec<chain::ChainedEvent> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_all(&db.pool)
        .await
        .unwrap();
    let mut prev = chain::GENESIS.to_vec();
    for (seq, row) in (1..).zip(&rows) {
        prev = chain::hash(&prev, seq, row).to_vec();
        sqlx::query("UPDATE delivery_events SET seq = $1, hash = $2 WHERE id = $3")
            .bind(seq)
            .bind(&prev)
            .bind(row.id)
            .execute(&db.pool)
            .await
            .unwrap();
    }
    sqlx::query("INSERT INTO audit_chain (seq, hash) VALUES (3, $1)")
        .bind(&prev)
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO delivery_events (challenge_id, kind, state) VALUES ('b', 'state', 'received')",
    )
    .execute(&db.pool)
    .await
    .unwrap();

    migrator.run(&db.pool).await.unwrap();
    let store = Store::connect(
        &db.settings.database,
        db.settings.store.destination_hmac_key.clone(),
    )
    .unwrap();
    let trail = Trail::new(&store);
    assert_eq!(trail.seal_all(SEAL_PATIENCE).await.unwrap(), 1);
    let v = trail.verify_chain().await.unwrap();
    assert!(v.problems.is_empty(), "{:?}", v.problems);
    assert_eq!((v.checked, v.head_seq, v.unsealed), (4, 4, 0));
    store.close().await;
}
