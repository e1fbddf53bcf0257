//! A silent network partition between storagesvc and PostgreSQL: answers stop arriving
//! while the connections stay open (no reset, no error), the case TCP alone never notices.
//! `testkit::TcpProxy` plays the network: a huge latency on the answers is silence.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use sqlx::{Connection, PgConnection};
use testkit::{Direction, TcpProxy};

use crate::helpers::{TestApp, book_body, eventually};

/// How long the partition lasts, for the connections that were open when it began.
const SILENCE: Duration = Duration::from_secs(3600);

/// While a write and the relay wait on PostgreSQL, their answers are lost. Neither may hang for
/// ever: once the network is back, writes succeed again (no pool connection was leaked) and
/// the relay publishes what was written (no relay lane hangs).
#[tokio::test]
async fn a_silent_partition_neither_hangs_the_relay_nor_leaks_pool_connections()
-> anyhow::Result<()> {
    let database_url = testkit::Postgres::shared().await?.fresh_database().await?;
    let mut url = reqwest::Url::parse(&database_url)?;
    let upstream = format!(
        "{}:{}",
        url.host_str().unwrap_or("127.0.0.1"),
        url.port().unwrap_or(5432)
    );
    let proxy = TcpProxy::start(&upstream).await?;
    url.set_port(Some(proxy.address().port()))
        .map_err(|()| anyhow::anyhow!("cannot set the port"))?;
    let app = TestApp::spawn_with(|settings| {
        settings.database_url = storagesvc::config::Secret::new(url.as_str());
        // Three connections: the relay's, housekeeping's and one request's. A leak of any
        // of them shows at once.
        settings.db_pool_size = 3;
        // Longer than it takes all three to start waiting on the lock (housekeeping runs
        // every 2 s), so none gives up before the partition begins.
        settings.db_statement_timeout = Duration::from_secs(4);
        settings.outbox_poll_interval = Duration::from_millis(100);
        settings.outbox_reconnect_max = Duration::from_secs(1);
    })
    .await?;
    // The test's own connections go straight to PostgreSQL, around the proxy.
    let mut direct = PgConnection::connect(&database_url).await?;
    let db = sqlx::PgPool::connect(&database_url).await?;

    // Hold the outbox so the relay's claim and a write's enqueue both wait inside PostgreSQL.
    let mut lock = direct.begin().await?;
    sqlx::query("LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await?;
    let write = {
        let request = app.authorized(Method::PUT, "/books/1").json(&book_body(
            "Renamed",
            "A. Author",
            "during the partition",
        ));
        tokio::spawn(async move { request.send().await })
    };
    let all_waiting = eventually(Duration::from_secs(20), || async {
        waiting_on_locks(&db).await.unwrap_or_default() >= 3
    })
    .await;
    assert!(
        all_waiting,
        "the relay, housekeeping and the write never all waited on the outbox lock"
    );

    // The partition: from now on no answer reaches storagesvc. Then PostgreSQL answers all.
    proxy.set_latency(Direction::Downstream, SILENCE);
    lock.rollback().await?;
    let answer = tokio::time::timeout(Duration::from_secs(30), write).await;
    let status = match answer {
        Ok(Ok(Ok(response))) => Some(response.status()),
        _ => None,
    };
    assert_eq!(
        status,
        Some(StatusCode::SERVICE_UNAVAILABLE),
        "the write waiting on a silent database gets a 503 within its bound"
    );

    // The network is back (new connections are fine; the old ones stay silent).
    proxy.restore()?;
    let writes_again = eventually(Duration::from_secs(30), || async {
        app.create_book(&book_body("After", "the partition", "ok"))
            .await
            .is_ok_and(|response| response.status() == StatusCode::CREATED)
    })
    .await;
    assert!(
        writes_again,
        "writes never succeeded again: pool connections leaked"
    );
    let relayed = eventually(Duration::from_secs(30), || async {
        unsent(&db).await.is_ok_and(|rows| rows == 0)
    })
    .await;
    assert!(relayed, "the relay never published again: a lane hangs");
    app.stop().await
}

/// Sessions of storagesvc waiting on a lock right now.
async fn waiting_on_locks(db: &sqlx::PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE application_name = 'storagesvc' AND wait_event_type = 'Lock' \
           AND datname = current_database()",
    )
    .fetch_one(db)
    .await?)
}

async fn unsent(db: &sqlx::PgPool) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
            .fetch_one(db)
            .await?,
    )
}
