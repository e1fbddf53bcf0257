use std::time::Duration;

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use crate::{eventually, timed};

pub(crate) async fn connect(url: &str) -> lapin::Result<Connection> {
    Connection::connect(url, ConnectionProperties::default()).await
}

async fn declare(channel: &Channel, queue: &str, passive: bool) -> lapin::Result<lapin::Queue> {
    let options = QueueDeclareOptions {
        durable: true,
        passive,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.into(), options, FieldTable::default())
        .await
}

/// Publishes one persistent message to `queue` through the default exchange and waits for
/// the broker's confirm, so the message is on disk before the broker stops.
pub(crate) async fn publish_persistent(channel: &Channel, queue: &str, body: &[u8]) {
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let properties = BasicProperties::default().with_delivery_mode(2);
    let confirm = channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            body,
            properties,
        )
        .await
        .unwrap();
    assert!(confirm.await.unwrap().is_ack());
}

#[tokio::test]
async fn private_rabbitmq_survives_app_and_server_restarts() {
    let broker = timed("rabbitmq start (private)", testkit::RabbitMq::start())
        .await
        .unwrap();
    assert_eq!(
        broker.amqp_url(),
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", broker.port())
    );
    assert_eq!(
        broker.management_url(),
        None,
        "start() runs without the management plugin"
    );
    let url = timed("rabbitmq fresh_vhost", broker.fresh_vhost())
        .await
        .unwrap();
    let connection = connect(&url).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    declare(&channel, "kept", false).await.unwrap();
    publish_persistent(&channel, "kept", b"survives").await;

    // Quick outage: the application stops, the node keeps running.
    timed("rabbitmq stop_app", broker.stop_app()).await.unwrap();
    assert!(
        connect(&url).await.is_err(),
        "a stopped app must refuse AMQP"
    );
    timed("rabbitmq start_app", broker.start_app())
        .await
        .unwrap();
    connect(&url).await.unwrap();

    // Full restart of the server process: the durable queue and its message survive.
    timed("rabbitmq stop", broker.stop()).await.unwrap();
    assert!(
        connect(&url).await.is_err(),
        "a stopped server must refuse AMQP"
    );
    timed("rabbitmq start_again", broker.start_again())
        .await
        .unwrap();
    let connection = connect(&url).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let queue = declare(&channel, "kept", true).await.unwrap();
    assert_eq!(
        queue.message_count(),
        1,
        "the persistent message must survive the restart"
    );
    let message = channel
        .basic_get("kept".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap();
    assert_eq!(message.map(|m| m.delivery.data), Some(b"survives".to_vec()));
}

#[tokio::test]
async fn fresh_vhosts_are_isolated() {
    let broker = timed(
        "rabbitmq shared (first use starts it)",
        testkit::RabbitMq::shared(),
    )
    .await
    .unwrap();
    let first = broker.fresh_vhost().await.unwrap();
    let second = broker.fresh_vhost().await.unwrap();
    assert_ne!(first, second);

    let channel = connect(&first)
        .await
        .unwrap()
        .create_channel()
        .await
        .unwrap();
    declare(&channel, "only-here", false).await.unwrap();
    let channel = connect(&second)
        .await
        .unwrap()
        .create_channel()
        .await
        .unwrap();
    assert!(
        declare(&channel, "only-here", true).await.is_err(),
        "a queue of one fresh vhost must not appear in another"
    );
}

#[tokio::test]
async fn management_plugin_answers_when_asked_for() {
    let broker = timed(
        "rabbitmq start_with_management",
        testkit::RabbitMq::start_with_management(),
    )
    .await
    .unwrap();
    let url = broker.management_url().expect("management runs");
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    // The HTTP listener is checked at start-up; a plain TCP connect must succeed now.
    eventually(Duration::from_secs(5), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await
    })
    .await;
    connect(&broker.amqp_url()).await.unwrap();
}
