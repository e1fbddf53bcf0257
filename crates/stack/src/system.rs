//! The running system: the three dependencies (testkit's private servers) and the two
//! services, what each command does to them, and the status table.

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::broker_users::BrokerUsers;
use crate::commands::{Action, Command, HELP, Target};
use crate::control::Reply;
use crate::services::Service;

/// The database the services use (compose's is `crud` on its own server; here the server is
/// private, so the name only has to say what it holds).
const DATABASE: &str = "bookstore";
/// Development write token for storagesvc, unless `STORAGESVC_WRITE_TOKEN` says otherwise.
const DEV_TOKEN: &str = "dev-token";

/// Ports the user asked for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ports {
    pub(crate) booksvc: u16,
    pub(crate) storagesvc: u16,
}

#[derive(Debug)]
pub(crate) struct System {
    postgres: testkit::Postgres,
    redis: testkit::Redis,
    rabbitmq: testkit::RabbitMq,
    users: BrokerUsers,
    database_url: String,
    write_token: String,
    storagesvc: Service,
    booksvc: Service,
    /// How each dependency last went down through a command, while it is down.
    down: [Option<&'static str>; 3],
    http: reqwest::Client,
}

impl System {
    /// Starts everything; on failure whatever was started is stopped again (dropped).
    pub(crate) async fn start(ports: Ports) -> anyhow::Result<Self> {
        check_ports(ports)?;
        let users = BrokerUsers::from_env()?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .context("build an HTTP client")?;
        let (postgres, redis, rabbitmq) = start_dependencies().await?;
        let api = rabbitmq
            .management_url()
            .context("RabbitMQ runs without its management plugin")?;
        users
            .create(&api, &http)
            .await
            .context("create the broker users")?;
        let database_url = postgres
            .create_database(DATABASE)
            .await
            .context("create the database")?;
        let write_token =
            std::env::var("STORAGESVC_WRITE_TOKEN").unwrap_or_else(|_| DEV_TOKEN.to_owned());
        let storagesvc = Service::new(
            "storagesvc",
            ports.storagesvc,
            vec![
                ("HTTP_PORT", format!("127.0.0.1:{}", ports.storagesvc)),
                ("DATABASE_URL", database_url.clone()),
                ("AMQP_URL", users.storagesvc.amqp_url(rabbitmq.port())),
                ("STORAGESVC_WRITE_TOKEN", write_token.clone()),
            ],
        );
        let booksvc = Service::new(
            "booksvc",
            ports.booksvc,
            vec![
                ("HTTP_PORT", format!("127.0.0.1:{}", ports.booksvc)),
                ("REDIS_URL", redis.url()),
                ("STORAGESVC_URL", storagesvc.url()),
                ("AMQP_URL", users.booksvc.amqp_url(rabbitmq.port())),
            ],
        );
        let mut system = Self {
            postgres,
            redis,
            rabbitmq,
            users,
            database_url,
            write_token,
            storagesvc,
            booksvc,
            down: [None; 3],
            http,
        };
        eprintln!("stack: starting storagesvc, then booksvc…");
        // booksvc reads through storagesvc: start that first, as compose does.
        let line = system.storagesvc.start(&system.http).await?;
        eprintln!("stack: {line}");
        let line = system.booksvc.start(&system.http).await?;
        eprintln!("stack: {line}");
        Ok(system)
    }

    /// Runs one command; the reply says what happened or why not.
    pub(crate) async fn execute(&mut self, command: Command) -> Reply {
        match command {
            Command::Help => Reply::ok(HELP),
            Command::Status => Reply::ok(self.status()),
            Command::Act(action, target) => match self.act(action, target).await {
                Ok(text) => Reply::ok(text),
                Err(err) => Reply::error(format!("{err:#}")),
            },
        }
    }

    async fn act(&mut self, action: Action, target: Target) -> anyhow::Result<String> {
        let http = self.http.clone();
        let service = match target {
            Target::Storagesvc => Some(&mut self.storagesvc),
            Target::Booksvc => Some(&mut self.booksvc),
            Target::Postgres | Target::Redis | Target::Rabbitmq => None,
        };
        if let Some(service) = service {
            return match action {
                Action::Start => service.start(&http).await,
                Action::Stop => service.stop().await,
                Action::Kill => service.kill().await,
            };
        }
        let index = dependency_index(target);
        let pid = self.dependency_pid(target);
        let started = Instant::now();
        match (action, pid) {
            (Action::Start, Some(pid)) => bail!("{target} is already running (pid {pid})"),
            (Action::Stop | Action::Kill, None) => {
                bail!(
                    "{target} is not running ({})",
                    self.dependency_state(target)
                )
            }
            (Action::Start, None) => {
                match target {
                    Target::Postgres => self.postgres.start_again().await?,
                    Target::Redis => self.redis.start_again().await?,
                    _ => self.rabbitmq.start_again().await?,
                }
                self.down[index] = None;
                let pid = self.dependency_pid(target).unwrap_or_default();
                Ok(format!(
                    "{target} started: port {} (pid {pid}, {:.1}s)",
                    self.dependency_port(target),
                    started.elapsed().as_secs_f64()
                ))
            }
            (Action::Stop, Some(_)) => {
                match target {
                    Target::Postgres => self.postgres.stop().await?,
                    Target::Redis => self.redis.stop().await?,
                    _ => self.rabbitmq.stop().await?,
                }
                self.down[index] = Some("stopped");
                Ok(format!(
                    "{target} stopped (data kept; `start {target}` brings it back)"
                ))
            }
            (Action::Kill, Some(pid)) => {
                match target {
                    Target::Postgres => self.postgres.kill().await?,
                    Target::Redis => self.redis.kill().await?,
                    _ => self.rabbitmq.kill().await?,
                }
                self.down[index] = Some("killed");
                Ok(format!(
                    "{target} killed (SIGKILL to pid {pid} and its process group)"
                ))
            }
        }
    }

    /// Resolves when a service exits by itself; returns the line to show.
    pub(crate) async fn next_exit(&mut self) -> String {
        tokio::select! {
            status = self.storagesvc.exited() => self.storagesvc.note_exit(status),
            status = self.booksvc.exited() => self.booksvc.note_exit(status),
        }
    }

    /// The table `status` prints and the start-up banner shows.
    pub(crate) fn status(&self) -> String {
        let mut rows = vec![[
            "NAME".to_owned(),
            "STATE".to_owned(),
            "PID".to_owned(),
            "PORT".to_owned(),
            "URL".to_owned(),
            "DATA".to_owned(),
        ]];
        for target in Target::ALL {
            let (state, pid, port, url, data) = match target {
                Target::Storagesvc | Target::Booksvc => {
                    let service = if target == Target::Booksvc {
                        &self.booksvc
                    } else {
                        &self.storagesvc
                    };
                    (
                        service.state(),
                        service.pid(),
                        service.port(),
                        service.url(),
                        None,
                    )
                }
                _ => (
                    self.dependency_state(target),
                    self.dependency_pid(target),
                    self.dependency_port(target),
                    self.dependency_url(target),
                    self.dependency_data(target),
                ),
            };
            rows.push([
                target.name().to_owned(),
                state,
                pid.map_or_else(|| "-".to_owned(), |pid| pid.to_string()),
                port.to_string(),
                url,
                data.map_or_else(|| "-".to_owned(), |dir| dir.display().to_string()),
            ]);
        }
        let mut widths = [0; 6];
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut text = String::new();
        for row in &rows {
            let line: Vec<String> = row
                .iter()
                .zip(widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            text.push_str(line.join("  ").trim_end());
            text.push('\n');
        }
        let users = &self.users;
        if let Some(ui) = self.rabbitmq.management_url() {
            text.push_str(&format!(
                "RabbitMQ UI {ui}  login {} / {} (development password)\n",
                users.admin.user, users.admin.pass
            ));
        }
        text.push_str(&format!(
            "broker users: storagesvc connects as {}, booksvc as {} (deploy/rabbitmq/setup-users.sh)\n",
            users.storagesvc.user, users.booksvc.user
        ));
        text.push_str(&format!(
            "storagesvc write token: {} · database: {}",
            self.write_token, self.database_url
        ));
        text
    }

    /// booksvc first (it depends on storagesvc, not the other way round), then storagesvc;
    /// the private servers stop and their data is deleted when `self` drops.
    pub(crate) async fn shutdown(mut self) {
        for service in [&mut self.booksvc, &mut self.storagesvc] {
            if service.pid().is_none() {
                continue;
            }
            if let Ok(line) = service.stop().await {
                eprintln!("stack: {line}");
            }
        }
    }

    fn dependency_pid(&self, target: Target) -> Option<u32> {
        match target {
            Target::Postgres => self.postgres.pid(),
            Target::Redis => self.redis.pid(),
            _ => self.rabbitmq.pid(),
        }
    }

    fn dependency_port(&self, target: Target) -> u16 {
        match target {
            Target::Postgres => self.postgres.port(),
            Target::Redis => self.redis.port(),
            _ => self.rabbitmq.port(),
        }
    }

    /// Password-free: PostgreSQL trusts local connections; the broker's users are listed
    /// under the table.
    fn dependency_url(&self, target: Target) -> String {
        match target {
            Target::Postgres => self.database_url.clone(),
            Target::Redis => self.redis.url(),
            _ => format!("amqp://127.0.0.1:{}/%2f", self.rabbitmq.port()),
        }
    }

    fn dependency_data(&self, target: Target) -> Option<PathBuf> {
        match target {
            Target::Postgres => self.postgres.data_dir(),
            Target::Redis => self.redis.data_dir(),
            _ => self.rabbitmq.data_dir(),
        }
    }

    fn dependency_state(&self, target: Target) -> String {
        match (
            self.dependency_pid(target),
            self.down[dependency_index(target)],
        ) {
            (Some(_), _) => "running".to_owned(),
            (None, Some(down)) => down.to_owned(),
            // Down without a command: it died by itself.
            (None, None) => "dead".to_owned(),
        }
    }
}

fn dependency_index(target: Target) -> usize {
    match target {
        Target::Postgres => 0,
        Target::Redis => 1,
        _ => 2,
    }
}

/// The services' ports must be free before anything starts: a clash found after RabbitMQ's
/// ten seconds would waste them.
fn check_ports(ports: Ports) -> anyhow::Result<()> {
    if ports.booksvc == ports.storagesvc {
        bail!(
            "booksvc and storagesvc cannot share port {}; choose with --booksvc-port / --storagesvc-port",
            ports.booksvc
        );
    }
    for (name, port) in [("booksvc", ports.booksvc), ("storagesvc", ports.storagesvc)] {
        if let Err(err) = TcpListener::bind(("127.0.0.1", port)) {
            bail!("port {port} for {name} is not free ({err}); choose another with --{name}-port");
        }
    }
    Ok(())
}

/// RabbitMQ takes several seconds: start all three at once and say what is happening.
async fn start_dependencies()
-> anyhow::Result<(testkit::Postgres, testkit::Redis, testkit::RabbitMq)> {
    eprintln!("stack: starting PostgreSQL, Redis and RabbitMQ (RabbitMQ takes 5–10 s)…");
    let started = Instant::now();
    let ticker = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(3)).await;
            eprintln!("stack: … still starting ({}s)", started.elapsed().as_secs());
        }
    });
    // join, not try_join: when one fails, the others finish starting and are stopped again
    // here (dropped), rather than left to the watchdogs after we exit.
    let (postgres, redis, rabbitmq) = tokio::join!(
        announce("PostgreSQL", testkit::Postgres::start()),
        announce("Redis", testkit::Redis::start()),
        announce("RabbitMQ", testkit::RabbitMq::start_with_management()),
    );
    ticker.abort();
    Ok((postgres?, redis?, rabbitmq?))
}

async fn announce<T>(
    name: &str,
    start: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let started = Instant::now();
    let server = start
        .await
        .with_context(|| format!("cannot start {name}"))?;
    eprintln!(
        "stack: {name} is up ({:.1}s)",
        started.elapsed().as_secs_f64()
    );
    Ok(server)
}
