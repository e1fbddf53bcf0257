//! `events::session` against real brokers: a dead node in the list is skipped, the session
//! moves to another node when the one in use stops, and closing is bounded when the broker
//! stops answering.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Result, ensure};
use events::session::{self, BrokerClient, Link, SessionSettings, SetupError};
use events::{BrokerNode, BrokerNodes, QUEUE, SessionEnd, Topology};
use lapin::Channel;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::CONNECT_TIMEOUT;

/// Generous bound for anything that should happen "soon" on a loaded 2-core machine.
const SOON: Duration = Duration::from_secs(30);

/// A client that declares the whole topology, holds one channel and waits for the
/// connection to go, recording the nodes it was connected to.
#[derive(Default)]
struct Recorder {
    connected: Mutex<Vec<String>>,
}

impl Recorder {
    fn nodes(&self) -> Vec<String> {
        self.connected.lock().expect("not poisoned").clone()
    }
}

impl BrokerClient for Recorder {
    type Channels = Channel;

    async fn open(&self, link: &Link) -> Result<Channel, SetupError> {
        link.declare(&Topology::default()).await?;
        Ok(link.connection().create_channel().await?)
    }

    async fn run(
        &self,
        channel: &mut Channel,
        link: &Link,
        shutdown: &CancellationToken,
    ) -> SessionEnd {
        let mut watchdog = link.watchdog();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return SessionEnd::Shutdown,
                _ = watchdog.tick() => {
                    if let Err(reason) = link.check(&[channel]) {
                        return SessionEnd::Lost(reason);
                    }
                }
            }
        }
    }

    async fn close(&self, channel: Channel) {
        // An RPC the broker must answer: hangs for ever if it does not (the session bounds it).
        let _ = channel.close(200, "bye".into()).await;
    }

    fn connected(&self, node: &BrokerNode) {
        self.connected
            .lock()
            .expect("not poisoned")
            .push(node.address().to_owned());
    }
}

/// `session::run` in the background.
struct Running {
    client: std::sync::Arc<Recorder>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    fn spawn(nodes: &str, rpc_timeout: Duration) -> Result<Running> {
        let nodes = BrokerNodes::parse(nodes).map_err(anyhow::Error::msg)?;
        let settings = SessionSettings {
            connect_timeout: CONNECT_TIMEOUT,
            rpc_timeout,
            reconnect_max: Duration::from_secs(1),
            watchdog_interval: Duration::from_millis(200),
            ..SessionSettings::new(nodes, "events-session-tests")
        };
        let client = std::sync::Arc::new(Recorder::default());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let client = client.clone();
            let shutdown = shutdown.clone();
            async move { session::run(&settings, &*client, &shutdown).await }
        });
        Ok(Running {
            client,
            shutdown,
            task,
        })
    }

    /// Waits until the session has been open on `count` nodes (counting reconnects).
    async fn opened(&self, count: usize) -> Result<Vec<String>> {
        let deadline = tokio::time::Instant::now() + SOON;
        loop {
            let nodes = self.client.nodes();
            if nodes.len() >= count {
                return Ok(nodes);
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "only {nodes:?} after {SOON:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(self, within: Duration) -> Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(within, self.task)
            .await
            .map_err(|_| anyhow::anyhow!("the session loop did not stop within {within:?}"))??;
        Ok(())
    }
}

fn closed_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Whether `url`'s vhost holds the main queue (declared by the session's client).
async fn has_main_queue(url: &str) -> Result<bool> {
    let connection = events::connect(url, "events-session-check", CONNECT_TIMEOUT).await?;
    let channel = connection.create_channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let found = channel
        .queue_declare(QUEUE.into(), passive, FieldTable::default())
        .await
        .is_ok();
    let _ = connection.close(200, "bye".into()).await;
    Ok(found)
}

#[tokio::test]
async fn a_list_whose_first_node_is_dead_connects_to_a_live_one() -> Result<()> {
    testkit::init_test_logging();
    let live = testkit::RabbitMq::shared().await?.fresh_vhost().await?;
    let dead = format!("amqp://guest:guest@127.0.0.1:{}/%2f", closed_port()?);
    let list = format!("{dead},{live}");
    let live_address = BrokerNodes::parse(&live)
        .map_err(anyhow::Error::msg)?
        .first()
        .address()
        .to_owned();

    // The one-off helper tries the nodes in the listed order.
    let nodes = BrokerNodes::parse(&list).map_err(anyhow::Error::msg)?;
    let (connection, node) = events::connect_any(&nodes, "events-tests", CONNECT_TIMEOUT).await?;
    assert_eq!(node.address(), live_address);
    connection.close(200, "bye".into()).await?;

    // The session loop, wherever it starts in the list, ends up on the live node.
    let running = Running::spawn(&list, Duration::from_secs(5))?;
    let opened = running.opened(1).await?;
    assert_eq!(opened, vec![live_address]);
    assert!(has_main_queue(&live).await?, "the topology was declared");
    running.stop(SOON).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_node_in_use_stops_the_session_moves_to_the_other() -> Result<()> {
    testkit::init_test_logging();
    // Two separate brokers stand in for two nodes: the connection logic is the same.
    let (first, second) = tokio::try_join!(testkit::RabbitMq::start(), testkit::RabbitMq::start())?;
    let brokers = [first, second];
    let urls: Vec<String> = brokers.iter().map(testkit::RabbitMq::amqp_url).collect();
    let running = Running::spawn(&urls.join(","), Duration::from_secs(5))?;
    let opened = running.opened(1).await?;
    let in_use = urls
        .iter()
        .position(|url| url.contains(&opened[0]))
        .expect("the node in use is one of the list");
    let other = 1 - in_use;

    brokers[in_use].stop_app().await?;
    let opened = running.opened(2).await?;
    assert!(
        urls[other].contains(&opened[1]),
        "moved to {} rather than the other node ({})",
        opened[1],
        urls[other]
    );
    assert!(
        has_main_queue(&urls[other]).await?,
        "the topology was declared on the new node"
    );
    running.stop(SOON).await?;
    brokers[in_use].start_app().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_bounded_while_the_broker_does_not_answer() -> Result<()> {
    testkit::init_test_logging();
    let broker = testkit::RabbitMq::shared().await?;
    let url = broker.fresh_vhost().await?;
    let proxy = testkit::TcpProxy::start(&format!("127.0.0.1:{}", broker.port())).await?;
    let through_proxy = url.replace(
        &format!("127.0.0.1:{}", broker.port()),
        &proxy.address().to_string(),
    );
    let running = Running::spawn(&through_proxy, Duration::from_millis(500))?;
    running.opened(1).await?;

    // Like a broker that blocked the connection (disk or memory alarm): nothing answers.
    proxy.set_latency(testkit::Direction::Downstream, Duration::from_secs(3600));
    // The channel close and the connection close each wait at most the 500 ms RPC bound.
    running.stop(Duration::from_secs(10)).await
}

/// One of two clients sharing a session ([`session::Both`]): holds a channel, counts its
/// sessions and how they ended, and loses its session when told to.
#[derive(Default)]
struct Part {
    /// The `Link` of each session opened, by address: the same for both parts of a session.
    links: Mutex<Vec<usize>>,
    /// Sessions this part ended on its stop token: the other part was lost, or shutdown.
    stopped: AtomicUsize,
    lose: tokio::sync::Notify,
}

impl BrokerClient for Part {
    type Channels = Channel;

    async fn open(&self, link: &Link) -> Result<Channel, SetupError> {
        let channel = link.connection().create_channel().await?;
        let address = std::ptr::from_ref(link) as usize;
        self.links.lock().expect("not poisoned").push(address);
        Ok(channel)
    }

    async fn run(&self, _: &mut Channel, _: &Link, shutdown: &CancellationToken) -> SessionEnd {
        tokio::select! {
            () = shutdown.cancelled() => {
                self.stopped.fetch_add(1, Ordering::SeqCst);
                SessionEnd::Shutdown
            }
            () = self.lose.notified() => SessionEnd::Lost("told to".to_owned()),
        }
    }
}

impl Part {
    fn links(&self) -> Vec<usize> {
        self.links.lock().expect("not poisoned").clone()
    }

    fn stopped(&self) -> usize {
        self.stopped.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn two_clients_on_one_connection_reconnect_together_when_either_is_lost() -> Result<()> {
    testkit::init_test_logging();
    let url = testkit::RabbitMq::shared().await?.fresh_vhost().await?;
    let settings = SessionSettings {
        connect_timeout: CONNECT_TIMEOUT,
        reconnect_max: Duration::from_millis(200),
        ..SessionSettings::new(
            BrokerNodes::parse(&url).map_err(anyhow::Error::msg)?,
            "events-both-tests",
        )
    };
    let parts = (Part::default(), Part::default());
    let (first, second) = (&parts.0, &parts.1);
    let both = session::Both(first, second);
    let shutdown = CancellationToken::new();
    let session = session::run(&settings, &both, &shutdown);
    let scenario = async {
        let sessions = |count: usize| async move {
            let deadline = tokio::time::Instant::now() + SOON;
            while first.links().len() < count || second.links().len() < count {
                ensure!(
                    tokio::time::Instant::now() < deadline,
                    "fewer than {count} sessions"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(())
        };
        sessions(1).await?;
        assert_eq!(first.links(), second.links(), "both opened on one link");

        // The second is lost: the first is stopped, and both open again, together.
        second.lose.notify_one();
        sessions(2).await?;
        assert_eq!(
            first.links(),
            second.links(),
            "both opened on one link again"
        );
        assert_eq!((first.stopped(), second.stopped()), (1, 0));

        // And the other way round.
        first.lose.notify_one();
        sessions(3).await?;
        assert_eq!((first.stopped(), second.stopped()), (1, 1));

        Ok::<_, anyhow::Error>(())
    };
    // Shutdown (also after a failed step) stops both, and the loop returns.
    let test = async {
        let result = scenario.await;
        shutdown.cancel();
        result
    };
    let (result, ()) = tokio::time::timeout(SOON * 4, async { tokio::join!(test, session) })
        .await
        .map_err(|_| anyhow::anyhow!("the session loop did not stop"))?;
    result?;
    assert_eq!((first.stopped(), second.stopped()), (2, 2));
    Ok(())
}
