use sqlx::Connection as _;
use sqlx::PgConnection;

use crate::timed;

#[tokio::test]
async fn private_postgres_keeps_data_across_stop_and_start_again() {
    testkit::init_test_logging();
    let server = timed("postgres start (private)", testkit::Postgres::start())
        .await
        .unwrap();
    let url = timed("postgres fresh_database", server.fresh_database())
        .await
        .unwrap();
    // Local servers trust local connections; the images want the password they were given.
    let user = match testkit::backend() {
        testkit::Backend::Local => "postgres",
        testkit::Backend::Containers => "postgres:postgres",
    };
    assert!(
        url.starts_with(&format!("postgres://{user}@127.0.0.1:{}/", server.port())),
        "{url}"
    );
    let mut conn = PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)")
        .execute(&mut conn)
        .await
        .unwrap();

    timed("postgres stop", server.stop()).await.unwrap();
    assert!(conn.ping().await.is_err(), "the old connection must be cut");
    assert!(
        PgConnection::connect(&url).await.is_err(),
        "a stopped server must refuse connections"
    );

    timed("postgres start_again", server.start_again())
        .await
        .unwrap();
    let mut conn = PgConnection::connect(&url).await.unwrap();
    let kept: i32 = sqlx::query_scalar("SELECT v FROM kept")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(kept, 42, "the table must survive the restart");
}

#[tokio::test]
async fn fresh_databases_are_isolated() {
    let server = timed(
        "postgres shared (first use starts it)",
        testkit::Postgres::shared(),
    )
    .await
    .unwrap();
    let first = server.fresh_database().await.unwrap();
    let second = server.fresh_database().await.unwrap();
    assert_ne!(first, second);

    let mut conn = PgConnection::connect(&first).await.unwrap();
    sqlx::query("CREATE TABLE only_here (v int)")
        .execute(&mut conn)
        .await
        .unwrap();
    let mut conn = PgConnection::connect(&second).await.unwrap();
    let visible: Option<String> = sqlx::query_scalar("SELECT to_regclass('only_here')::text")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        visible, None,
        "a table of one fresh database must not appear in another"
    );
}

/// Each `#[tokio::test]` has its own runtime; the shared server must outlive the runtime of
/// the test that started it. Two tests race for it here, and both must get the same server.
#[tokio::test]
async fn shared_postgres_serves_tests_on_different_runtimes() {
    let server = testkit::Postgres::shared().await.unwrap();
    let again = testkit::Postgres::shared().await.unwrap();
    assert!(std::ptr::eq(server, again));
    let mut conn = PgConnection::connect(&server.fresh_database().await.unwrap())
        .await
        .unwrap();
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(one, 1);
}
