use redis::AsyncCommands as _;

use crate::timed;

#[tokio::test]
async fn private_redis_keeps_keys_across_stop_and_start_again() {
    let server = timed("redis start (private)", testkit::Redis::start())
        .await
        .unwrap();
    assert_eq!(server.url(), format!("redis://{}", server.addr()));
    assert_eq!(server.addr(), format!("127.0.0.1:{}", server.port()));
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = conn.set("book:1", "kept").await.unwrap();

    timed("redis stop", server.stop()).await.unwrap();
    assert!(
        client.get_multiplexed_async_connection().await.is_err(),
        "a stopped server must refuse"
    );

    timed("redis start_again", server.start_again())
        .await
        .unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let kept: String = conn.get("book:1").await.unwrap();
    assert_eq!(kept, "kept");
}

#[tokio::test]
async fn shared_redis_answers() {
    let server = timed("redis shared", testkit::Redis::shared())
        .await
        .unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");
}
