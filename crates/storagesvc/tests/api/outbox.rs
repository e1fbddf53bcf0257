//! `outbox::enqueue`, `outbox::stats` and pruning, against a real PostgreSQL.

use std::time::Duration;

use events::BookChanged;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use storagesvc::outbox::{self, NOTIFY_CHANNEL, OutboxStats};
use storagesvc::relay::OutboxRelay;

use crate::relay::support::{book_event, enqueue_each, migrated_database, relay_settings};

async fn stored_payloads(pool: &PgPool) -> anyhow::Result<Vec<(uuid::Uuid, String, Vec<u8>)>> {
    Ok(
        sqlx::query_as("SELECT event_id, routing_key, payload FROM outbox ORDER BY id")
            .fetch_all(pool)
            .await?,
    )
}

#[tokio::test]
async fn enqueue_stores_the_exact_event_bytes_with_its_id_and_routing_key() -> anyhow::Result<()> {
    let pool = migrated_database().await?;
    let event = book_event(7, 3);

    enqueue_each(&pool, std::slice::from_ref(&event)).await?;

    let rows = stored_payloads(&pool).await?;
    assert_eq!(rows.len(), 1);
    let (event_id, routing_key, payload) = &rows[0];
    assert_eq!(Some(*event_id), event.event_id);
    assert_eq!(routing_key, "book.updated");
    assert_eq!(payload, &event.to_json());
    Ok(())
}

#[tokio::test]
async fn enqueue_gives_an_event_without_an_id_one_and_puts_it_in_the_body() -> anyhow::Result<()> {
    let pool = migrated_database().await?;
    let event = BookChanged {
        event_id: None,
        ..book_event(1, 1)
    };

    enqueue_each(&pool, &[event]).await?;

    let rows = stored_payloads(&pool).await?;
    let (event_id, _, payload) = &rows[0];
    testkit::event_schema::validate(payload)?;
    let published = BookChanged::parse(payload)?;
    assert_eq!(published.event_id, Some(*event_id));
    Ok(())
}

#[tokio::test]
async fn a_rolled_back_write_leaves_no_event_and_wakes_nobody() -> anyhow::Result<()> {
    let pool = migrated_database().await?;
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.listen(NOTIFY_CHANNEL).await?;

    let mut tx = pool.begin().await?;
    outbox::enqueue(&mut tx, &book_event(1, 1)).await?;
    tx.rollback().await?;

    let woken = tokio::time::timeout(Duration::from_millis(500), listener.recv()).await;
    assert!(woken.is_err(), "a rollback must not notify: {woken:?}");
    assert_eq!(outbox::stats(&pool).await?.backlog, 0);
    Ok(())
}

#[tokio::test]
async fn a_committed_write_notifies_the_relay_channel() -> anyhow::Result<()> {
    let pool = migrated_database().await?;
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.listen(NOTIFY_CHANNEL).await?;

    enqueue_each(&pool, &[book_event(1, 1)]).await?;

    let notification = tokio::time::timeout(Duration::from_secs(5), listener.recv()).await??;
    assert_eq!(notification.channel(), NOTIFY_CHANNEL);
    Ok(())
}

#[tokio::test]
async fn stats_reports_the_backlog_and_the_age_of_its_oldest_event() -> anyhow::Result<()> {
    let pool = migrated_database().await?;
    let empty = outbox::stats(&pool).await?;
    assert_eq!(
        empty,
        OutboxStats {
            backlog: 0,
            oldest_age: None
        }
    );

    enqueue_each(
        &pool,
        &[book_event(1, 1), book_event(2, 1), book_event(1, 2)],
    )
    .await?;
    // Age the first event by 90 s; sent rows must not count, whatever their age.
    sqlx::query("UPDATE outbox SET created_at = now() - interval '90 seconds' WHERE id = (SELECT min(id) FROM outbox)")
        .execute(&pool)
        .await?;
    sqlx::query("UPDATE outbox SET created_at = now() - interval '1 hour', sent_at = now() WHERE id = (SELECT max(id) FROM outbox)")
        .execute(&pool)
        .await?;

    let stats = outbox::stats(&pool).await?;
    assert_eq!(stats.backlog, 2);
    let age = stats.oldest_age.expect("a backlog has an oldest event");
    assert!(
        age >= Duration::from_secs(90) && age < Duration::from_secs(120),
        "{age:?}"
    );
    Ok(())
}

#[tokio::test]
async fn pruning_deletes_sent_rows_past_retention_and_never_unsent_ones() -> anyhow::Result<()> {
    let pool = migrated_database().await?;
    let relay = OutboxRelay::new(pool.clone(), relay_settings("amqp://unused"));
    let events: Vec<BookChanged> = (1..=6).map(|book| book_event(book, 1)).collect();
    enqueue_each(&pool, &events).await?;
    // Books 1-2: sent long ago. Books 3-4: sent just now. Books 5-6: unsent and very old.
    for (books, sent_at, created_at) in [
        (
            "{1,2}",
            "now() - interval '2 minutes'",
            "now() - interval '3 minutes'",
        ),
        ("{3,4}", "now()", "now()"),
        ("{5,6}", "NULL", "now() - interval '1 day'"),
    ] {
        let update = format!(
            "UPDATE outbox SET sent_at = {sent_at}, created_at = {created_at} WHERE book_id = ANY('{books}')"
        );
        sqlx::query(&update).execute(&pool).await?;
    }

    let deleted = relay.prune().await?;

    assert_eq!(deleted, 2);
    let left: Vec<i64> = sqlx::query_scalar("SELECT book_id FROM outbox ORDER BY book_id")
        .fetch_all(&pool)
        .await?;
    assert_eq!(left, vec![3, 4, 5, 6]);
    Ok(())
}

#[tokio::test]
async fn pruning_with_zero_retention_deletes_every_sent_row() -> anyhow::Result<()> {
    let pool = migrated_database().await?;
    let config = storagesvc::relay::RelaySettings {
        retention: Duration::ZERO,
        ..relay_settings("amqp://unused")
    };
    let relay = OutboxRelay::new(pool.clone(), config);
    enqueue_each(&pool, &[book_event(1, 1), book_event(2, 1)]).await?;
    sqlx::query("UPDATE outbox SET sent_at = now() WHERE book_id = 1")
        .execute(&pool)
        .await?;

    assert_eq!(relay.prune().await?, 1);
    assert_eq!(outbox::stats(&pool).await?.backlog, 1);
    Ok(())
}
