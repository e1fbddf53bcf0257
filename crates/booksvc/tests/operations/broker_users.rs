//! Least privilege on the broker, for real: a private broker gets exactly the users of
//! `deploy/rabbitmq/setup-users.sh` (the script itself runs against its management API, as
//! docker compose runs it), then storagesvc and booksvc run as those users and a write must
//! flow into booksvc's cache — and each user must be refused what it has no business doing.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, ensure};
use booksvc::redrive::redrive_from_url;
use e2e::in_process::{Booksvc, Storagesvc};
use events::lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use events::lapin::types::{FieldTable, ShortString};
use events::lapin::{BasicProperties, Channel, Connection};
use events::{BINDING_KEY, DLQ, EXCHANGE, QUEUE};

use crate::support::{SOON, consumer_running, eventually, repo_root, serves_from_cache};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

/// The two service users on a private broker, created by the deployment's own script.
struct BrokerUsers {
    rabbit: testkit::RabbitMq,
    storagesvc_url: String,
    booksvc_url: String,
}

impl BrokerUsers {
    async fn start() -> anyhow::Result<BrokerUsers> {
        testkit::init_test_logging();
        let rabbit = testkit::RabbitMq::start_with_management().await?;
        let storagesvc_pass = format!("s-{:016x}", rand::random::<u64>());
        let booksvc_pass = format!("b-{:016x}", rand::random::<u64>());
        run_setup_script(&rabbit, &storagesvc_pass, &booksvc_pass).await?;
        let url = |user: &str, pass: &str| {
            format!("amqp://{user}:{pass}@127.0.0.1:{}/%2f", rabbit.port())
        };
        Ok(BrokerUsers {
            storagesvc_url: url("storagesvc", &storagesvc_pass),
            booksvc_url: url("booksvc", &booksvc_pass),
            rabbit,
        })
    }
}

/// `sh deploy/rabbitmq/setup-users.sh` with the broker's default administrator.
async fn run_setup_script(
    rabbit: &testkit::RabbitMq,
    storagesvc_pass: &str,
    booksvc_pass: &str,
) -> anyhow::Result<()> {
    let script = SetupScript {
        admin: ("guest", "guest"),
        storagesvc: ("storagesvc", storagesvc_pass),
        booksvc: ("booksvc", booksvc_pass),
        path_first: None,
    };
    let output = script.run(rabbit).await?;
    ensure!(
        output.status.success(),
        "setup-users.sh failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    Ok(())
}

/// One run of the script: the administrator it logs in as, the two service users (name,
/// password), and a directory to put first on `PATH` (to stand a recording `curl` in).
struct SetupScript<'a> {
    admin: (&'a str, &'a str),
    storagesvc: (&'a str, &'a str),
    booksvc: (&'a str, &'a str),
    path_first: Option<&'a Path>,
}

impl SetupScript<'_> {
    async fn run(&self, rabbit: &testkit::RabbitMq) -> anyhow::Result<std::process::Output> {
        let api = rabbit
            .management_url()
            .context("the broker runs the management API")?;
        let mut command = tokio::process::Command::new("sh");
        command
            .arg(repo_root().join("deploy/rabbitmq/setup-users.sh"))
            .env("RABBITMQ_API", api)
            .env("RABBITMQ_USER", self.admin.0)
            .env("RABBITMQ_PASS", self.admin.1)
            .env("STORAGESVC_AMQP_USER", self.storagesvc.0)
            .env("STORAGESVC_AMQP_PASS", self.storagesvc.1)
            .env("BOOKSVC_AMQP_USER", self.booksvc.0)
            .env("BOOKSVC_AMQP_PASS", self.booksvc.1)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some(dir) = self.path_first {
            let path = std::env::var("PATH").unwrap_or_default();
            command.env("PATH", format!("{}:{path}", dir.display()));
        }
        tokio::time::timeout(SCRIPT_TIMEOUT, command.output())
            .await
            .context("setup-users.sh did not finish")?
            .context("cannot run sh")
    }
}

#[tokio::test]
async fn the_services_work_as_their_least_privilege_users_and_nothing_more() -> anyhow::Result<()> {
    let users = BrokerUsers::start().await?;

    // storagesvc may declare only `books`, so it starts before booksvc has declared any
    // queue: events of a write made now would wait in its outbox until booksvc is up.
    let storage = Storagesvc::options()
        .amqp_url(&users.storagesvc_url)
        .spawn()
        .await?;
    let booksvc = Booksvc::options(&storage.address)
        .consumer(&users.booksvc_url)
        .spawn()
        .await?;
    assert!(
        consumer_running(&booksvc).await,
        "booksvc's consumer did not start as user booksvc"
    );
    // Its consumer and its local layer's subscription share one connection: three channels
    // (consuming, republishing, invalidations), not two connections.
    assert!(
        holds_one_connection(&users.rabbit, "booksvc", 3).await,
        "booksvc should hold one connection with three channels"
    );
    let id = storage.create("Least privilege").await?;
    assert!(
        serves_from_cache(&booksvc, id, "Least privilege").await,
        "the write's event did not reach booksvc's cache"
    );

    // A poison message (published by the administrator, as from the UI) goes to the DLQ, and
    // booksvc's own user can re-drive it (back through the default exchange).
    let (admin, admin_channel) = open(&users.rabbit.amqp_url()).await?;
    admin_channel
        .basic_publish(
            ShortString::from(EXCHANGE),
            ShortString::from("book.updated"),
            BasicPublishOptions::default(),
            b"not an event",
            BasicProperties::default(),
        )
        .await?;
    assert!(
        eventually(SOON, || depth(&admin_channel, DLQ, 1)).await,
        "the poison message did not reach the DLQ"
    );
    let report = redrive_from_url(&users.booksvc_url, None).await?;
    assert_eq!(report.moved, 1, "re-drive as user booksvc");
    let _ = admin.close(200, ShortString::from("bye")).await;

    // storagesvc's user may not read booksvc's queue, nor declare queues of its own.
    let (connection, channel) = open(&users.storagesvc_url).await?;
    let get = channel
        .basic_get(ShortString::from(QUEUE), BasicGetOptions { no_ack: true })
        .await;
    assert_refused(get.map(drop), "storagesvc reading booksvc's queue");
    let channel = connection.create_channel().await?;
    let declare = channel
        .queue_declare(
            ShortString::from("storagesvc.sneaky"),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await;
    assert_refused(declare.map(drop), "storagesvc declaring a queue");
    let _ = connection.close(200, ShortString::from("bye")).await;

    booksvc.stop().await?;
    storage.stop().await?;
    drop(users.rabbit);
    Ok(())
}

/// Whether `user` comes to hold exactly one connection, with `channels` channels on it, as
/// the management API reports them (its channel counts lag by a statistics interval).
async fn holds_one_connection(rabbit: &testkit::RabbitMq, user: &str, channels: u64) -> bool {
    let Some(api) = rabbit.management_url() else {
        return false;
    };
    let client = reqwest::Client::new();
    eventually(SOON, || async {
        let request = client
            .get(format!("{api}/api/connections"))
            .basic_auth("guest", Some("guest"));
        let Ok(response) = request.send().await else {
            return false;
        };
        let list: Vec<serde_json::Value> = response.json().await.unwrap_or_default();
        let mine: Vec<_> = list.iter().filter(|each| each["user"] == user).collect();
        mine.len() == 1 && mine[0]["channels"].as_u64() == Some(channels)
    })
    .await
}

/// booksvc's per-replica queue (server-named `amq.gen-…`, exclusive, auto-delete, bound to
/// `books`) is within its permissions; its user can neither forge events on `books` nor
/// declare or delete `books` (configure), only check that it exists.
#[tokio::test]
async fn booksvc_may_have_a_server_named_queue_on_books_but_not_publish_there() -> anyhow::Result<()>
{
    let users = BrokerUsers::start().await?;
    let (admin, admin_channel) = open(&users.rabbit.amqp_url()).await?;
    events::Topology::declare_exchange(&admin_channel).await?;
    let _ = admin.close(200, ShortString::from("bye")).await;

    let (connection, channel) = open(&users.booksvc_url).await?;
    let delete = channel
        .exchange_delete(
            ShortString::from(EXCHANGE),
            ExchangeDeleteOptions::default(),
        )
        .await;
    assert_refused(delete, "booksvc deleting books");
    let channel = connection.create_channel().await?;
    assert_refused(
        events::Topology::declare_exchange(&channel).await,
        "booksvc declaring books",
    );
    let channel = connection.create_channel().await?;
    events::Topology::check_exchange(&channel)
        .await
        .context("booksvc checking that books exists")?;

    let exclusive = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..QueueDeclareOptions::default()
    };
    let queue = channel
        .queue_declare(ShortString::from(""), exclusive, FieldTable::default())
        .await
        .context("booksvc declaring a server-named queue")?;
    let name = queue.name().to_string();
    assert!(name.starts_with("amq.gen-"), "server-named queue {name}");
    channel
        .queue_bind(
            ShortString::from(name.as_str()),
            ShortString::from(EXCHANGE),
            ShortString::from(BINDING_KEY),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .context("booksvc binding its server-named queue to books")?;
    channel
        .basic_consume(
            ShortString::from(name.as_str()),
            ShortString::from(""),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .context("booksvc consuming its server-named queue")?;

    // Publishing is asynchronous: a refusal arrives as the channel's closing, which a
    // confirmed publish on a channel of its own reports.
    let publisher = events::ConfirmPublisher::open(&connection).await?;
    let forged = events::Outgoing::event(&events::BookChanged::deleted(1, 9, chrono::Utc::now()));
    let report = publisher
        .publish_in_order(EXCHANGE, &[forged], 1, CONNECT_TIMEOUT)
        .await;
    let error = report
        .error
        .context("booksvc's user published to books: it must not be able to forge events")?;
    assert!(
        format!("{error:?}").contains("ACCESS") || format!("{error}").contains("ACCESS"),
        "publishing to books failed, but not for lack of permission: {error:?}"
    );
    let _ = connection.close(200, ShortString::from("bye")).await;
    drop(users.rabbit);
    Ok(())
}

async fn open(url: &str) -> anyhow::Result<(Connection, Channel)> {
    let connection = events::connect(url, "broker-users-test", CONNECT_TIMEOUT).await?;
    let channel = connection.create_channel().await?;
    Ok((connection, channel))
}

/// Whether `queue` holds `count` ready messages.
async fn depth(channel: &Channel, queue: &str, count: u32) -> bool {
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(ShortString::from(queue), passive, FieldTable::default())
        .await
        .is_ok_and(|queue| queue.message_count() == count)
}

fn assert_refused(result: Result<(), events::lapin::Error>, what: &str) {
    match result {
        Ok(()) => panic!("{what} was allowed"),
        Err(error) => assert!(
            events::is_access_refused(&error),
            "{what} failed, but not with ACCESS_REFUSED: {error}"
        ),
    }
}

/// The script keeps every secret off command lines (any local user can read them in
/// `/proc/*/cmdline`) and escapes what it puts in JSON: passwords with quotes, backslashes, a
/// tab and non-ASCII work, given to curl through its stdin. A `curl` first on `PATH` records
/// every command line it is given, then runs the real one.
#[tokio::test]
async fn setup_users_keeps_secrets_off_command_lines_and_escapes_them() -> anyhow::Result<()> {
    testkit::init_test_logging();
    let rabbit = testkit::RabbitMq::start_with_management().await?;
    let api = rabbit.management_url().context("management API")?;
    let tag = format!("{:016x}", rand::random::<u64>());
    let admin_pass = format!("adm \"quoted\" \\back {tag}");
    let storagesvc_pass = format!("s\"\\\ttab-{tag}");
    let booksvc_pass = format!("b-\u{e9}\\\"-{tag}");
    add_administrator(&api, "ops", &admin_pass).await?;

    let recorder = CurlRecorder::new()?;
    let output = SetupScript {
        admin: ("ops", &admin_pass),
        storagesvc: ("storagesvc", &storagesvc_pass),
        booksvc: ("booksvc", &booksvc_pass),
        path_first: Some(&recorder.dir),
    }
    .run(&rabbit)
    .await?;
    ensure!(
        output.status.success(),
        "setup-users.sh failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );

    let command_lines = recorder.command_lines()?;
    assert!(
        command_lines.contains("/api/users/"),
        "the recording curl was not used: {command_lines}"
    );
    for (what, secret) in [
        ("the administrator's password", &admin_pass),
        ("storagesvc's password", &storagesvc_pass),
        ("booksvc's password", &booksvc_pass),
    ] {
        assert!(
            !command_lines.contains(secret.as_str()) && !command_lines.contains(&tag),
            "{what} is on a curl command line: {command_lines}"
        );
    }

    // The passwords arrived intact: both users log in with them over AMQP.
    for (user, pass) in [("storagesvc", &storagesvc_pass), ("booksvc", &booksvc_pass)] {
        let url = format!(
            "amqp://{user}:{}@127.0.0.1:{}/%2f",
            percent_encode(pass),
            rabbit.port()
        );
        let (connection, _channel) = open(&url)
            .await
            .with_context(|| format!("{user} logging in with the password the script set"))?;
        let _ = connection.close(200, ShortString::from("bye")).await;
    }
    drop(rabbit);
    Ok(())
}

/// Creating a user sets its tags, so a service user named like the administrator would
/// silently demote it: the script refuses before changing anything.
#[tokio::test]
async fn setup_users_refuses_a_service_user_named_like_the_administrator() -> anyhow::Result<()> {
    testkit::init_test_logging();
    let rabbit = testkit::RabbitMq::start_with_management().await?;
    let output = SetupScript {
        admin: ("guest", "guest"),
        storagesvc: ("storagesvc", "s-pass"),
        booksvc: ("guest", "b-pass"),
        path_first: None,
    }
    .run(&rabbit)
    .await?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "the script accepted booksvc user = administrator"
    );
    assert!(stderr.contains("administrator"), "says why: {stderr}");
    let api = rabbit.management_url().context("management API")?;
    let guest: serde_json::Value = reqwest::Client::new()
        .get(format!("{api}/api/users/guest"))
        .basic_auth("guest", Some("guest"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert!(
        guest["tags"].to_string().contains("administrator"),
        "the administrator lost its tag: {guest}"
    );
    drop(rabbit);
    Ok(())
}

/// A second administrator, created as the broker's default one.
async fn add_administrator(api: &str, user: &str, password: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    client
        .put(format!("{api}/api/users/{user}"))
        .basic_auth("guest", Some("guest"))
        .json(&serde_json::json!({"password": password, "tags": "administrator"}))
        .send()
        .await?
        .error_for_status()?;
    client
        .put(format!("{api}/api/permissions/%2F/{user}"))
        .basic_auth("guest", Some("guest"))
        .json(&serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"}))
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

/// A directory holding a `curl` that appends its command line to a file, then runs curl.
struct CurlRecorder {
    dir: PathBuf,
    log: PathBuf,
}

impl CurlRecorder {
    fn new() -> anyhow::Result<CurlRecorder> {
        use std::os::unix::fs::PermissionsExt as _;
        let real = std::process::Command::new("sh")
            .args(["-c", "command -v curl"])
            .output()
            .context("looking for curl")?;
        let real = String::from_utf8(real.stdout)?.trim().to_owned();
        ensure!(!real.is_empty(), "curl is not installed");
        let dir =
            std::env::temp_dir().join(format!("curl-recorder-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir)?;
        let log = dir.join("command-lines");
        let wrapper = dir.join("curl");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\nexec '{real}' \"$@\"\n",
                log.display()
            ),
        )?;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))?;
        Ok(CurlRecorder { dir, log })
    }

    fn command_lines(&self) -> anyhow::Result<String> {
        std::fs::read_to_string(&self.log).context("the recording curl never ran")
    }
}

impl Drop for CurlRecorder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Every byte but ASCII letters and digits as %XX, for a password inside an AMQP URL.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => (byte as char).to_string(),
            _ => format!("%{byte:02X}"),
        })
        .collect()
}
