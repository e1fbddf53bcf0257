//! The servers the read benchmarks measure, each in a child process of its own: booksvc, the
//! release binary a user runs (`target/release/booksvc`, next to the bench's own directory),
//! so its RSS is booksvc's and not a copy of the bench with the harness linked in; and the
//! bench's binary run as `child <mode>` for a bare axum handler returning `BENCH_BODY` and an
//! axum handler doing one Redis `GET` of it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::Rss;

/// The Redis key the one-GET handler reads.
pub(crate) const REDIS_KEY: &str = "bench:book:1";

/// Runs the server `mode` if this process was started as `<bench> child <mode>`; `None`
/// when it is the parent.
pub(crate) async fn run_child_if_asked() -> Option<anyhow::Result<()>> {
    let args: Vec<String> = std::env::args().collect();
    match args.as_slice() {
        [_, child, mode] if child == "child" => Some(child::run(mode).await),
        _ => None,
    }
}

mod child {
    //! The servers under test. Each stops cleanly on SIGTERM, so a profiler running it
    //! writes its output.

    use anyhow::Context;
    use axum::Router;
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::header::CONTENT_TYPE;
    use axum::response::IntoResponse;
    use axum::routing::get;
    use redis::AsyncCommands;
    use redis::aio::ConnectionManager;
    use tokio_util::sync::CancellationToken;

    pub(super) async fn run(mode: &str) -> anyhow::Result<()> {
        match mode {
            "bare" => serve(bare_router(std::env::var("BENCH_BODY")?)).await,
            "redis" => serve(redis_router(&std::env::var("REDIS_URL")?).await?).await,
            other => anyhow::bail!("unknown child mode {other:?}"),
        }
    }

    fn bare_router(body: String) -> Router {
        let body = Bytes::from(body);
        Router::new().route(
            "/books/{id}",
            get(move || {
                let body = body.clone();
                async move { ([(CONTENT_TYPE, "application/json")], body) }
            }),
        )
    }

    async fn redis_router(url: &str) -> anyhow::Result<Router> {
        let conn = ConnectionManager::new(redis::Client::open(url)?).await?;
        Ok(Router::new()
            .route("/books/{id}", get(redis_get))
            .with_state(conn))
    }

    async fn redis_get(State(mut conn): State<ConnectionManager>) -> impl IntoResponse {
        let body: Vec<u8> = conn.get(super::REDIS_KEY).await.unwrap_or_default();
        ([(CONTENT_TYPE, "application/json")], body)
    }

    async fn serve(router: Router) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("{}", listener.local_addr()?.port());
        let shutdown = CancellationToken::new();
        tokio::spawn(booksvc::app::cancel_on_signal(shutdown.clone()));
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .context("serving")
    }
}

/// What a booksvc under test talks to.
pub(crate) struct Deps<'a> {
    pub(crate) storagesvc: &'a str,
    pub(crate) redis_url: &'a str,
    pub(crate) amqp_url: &'a str,
}

/// A server under test in a child process; killed when dropped.
pub(crate) struct Server {
    child: Child,
    port: u16,
    client: reqwest::Client,
}

impl Server {
    /// The booksvc binary talking to `deps`, with `extra` settings; `wrapper` runs it (a
    /// profiler). Returns once it answers its liveness probe (at most `within`).
    pub(crate) async fn booksvc(
        deps: &Deps<'_>,
        extra: &[(&str, &str)],
        wrapper: &[String],
        within: Duration,
    ) -> anyhow::Result<Server> {
        let port = free_port()?;
        let address = format!("127.0.0.1:{port}");
        let mut env = vec![
            ("HTTP_PORT", address.as_str()),
            ("STORAGESVC_URL", deps.storagesvc),
            ("REDIS_URL", deps.redis_url),
            ("AMQP_URL", deps.amqp_url),
        ];
        env.extend_from_slice(extra);
        let mut child = spawn(&booksvc_binary()?, &[], &env, wrapper)?;
        drain(child.stdout.take().context("child stdout")?);
        let server = Server {
            child,
            port,
            client: reqwest::Client::new(),
        };
        server.wait_live(within).await?;
        Ok(server)
    }

    /// This binary as `child <mode>` with `env`, under `wrapper` (a command and its
    /// arguments) when not empty; returns once it printed its port.
    pub(crate) async fn start(
        mode: &str,
        env: &[(&str, &str)],
        wrapper: &[String],
    ) -> anyhow::Result<Server> {
        let exe = std::env::current_exe()?;
        let mut child = spawn(&exe, &["child", mode], env, wrapper)?;
        let stdout = child.stdout.take().context("child stdout")?;
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line).await?;
        drain(reader);
        let port = line
            .trim()
            .parse()
            .with_context(|| format!("{mode}: port line {line:?}"))?;
        Ok(Server {
            child,
            port,
            client: reqwest::Client::new(),
        })
    }

    /// Waits (at most `within`) until `GET /healthz/live` answers 200.
    async fn wait_live(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let live = self.client.get(self.url("/healthz/live")).send().await;
            if live.is_ok_and(|response| response.status().is_success()) {
                return Ok(());
            }
            anyhow::ensure!(
                self.child_running(),
                "booksvc exited during start-up (its settings?)"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("booksvc did not answer /healthz/live within {within:?}")
    }

    fn child_running(&self) -> bool {
        self.child.id().is_some()
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Reads `path` until booksvc answers 200 with `X-Cache: expect` (at most `within`);
    /// returns the body.
    pub(crate) async fn warm(
        &self,
        path: &str,
        expect: &str,
        within: Duration,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let response = self.client.get(self.url(path)).send().await?;
            let ok = response.status().is_success();
            let x_cache = response.headers().get("x-cache").cloned();
            let body = response.text().await?;
            if ok && x_cache.is_some_and(|v| v == expect) {
                return Ok(body);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("{path} never answered 200 with X-Cache: {expect}")
    }

    /// Waits (at most `within`) until booksvc reports its local hit layer live.
    pub(crate) async fn wait_for_local_layer(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let response = self.client.get(self.url("/healthz/ready")).send().await?;
            let body: serde_json::Value = response.json().await?;
            if body["dependencies"]["local_cache"]["status"] == "live" {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("the local hit layer never went live")
    }

    pub(crate) fn pid(&self) -> anyhow::Result<u32> {
        self.child.id().context("the child has exited")
    }

    pub(crate) fn rss(&self) -> anyhow::Result<Rss> {
        Rss::of(self.pid()?)
    }

    /// SIGTERM, then waits (at most `within`) for it to exit.
    pub(crate) async fn stop(mut self, within: Duration) -> anyhow::Result<()> {
        let pid = self.pid()?;
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -TERM {pid}: {status}");
        tokio::time::timeout(within, self.child.wait())
            .await
            .context("the child did not stop after SIGTERM")??;
        Ok(())
    }
}

/// `program` with `args` and `env`, under `wrapper` when not empty, killed when dropped.
fn spawn(
    program: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    wrapper: &[String],
) -> anyhow::Result<Child> {
    let mut command = match wrapper.split_first() {
        Some((wrapper, wrapper_args)) => {
            let mut command = Command::new(wrapper);
            command.args(wrapper_args).arg(program);
            command
        }
        None => Command::new(program),
    };
    command
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))
}

/// Keeps reading a child's output: a child writing logs to a closed pipe would lose them.
fn drain(mut output: impl tokio::io::AsyncRead + Unpin + Send + 'static) {
    tokio::spawn(async move { tokio::io::copy(&mut output, &mut tokio::io::sink()).await });
}

/// The `booksvc` binary of this bench's profile (`target/release/booksvc` for
/// `target/release/examples/read_bench`).
fn booksvc_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the bench binary is not under target/<profile>/examples")?;
    let binary = profile_dir.join("booksvc");
    anyhow::ensure!(
        binary.is_file(),
        "{} is missing: build it with the bench (`cargo build --release -p booksvc --bin booksvc`)",
        binary.display()
    );
    Ok(binary)
}

/// A port nothing listens on now (the OS's choice).
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Stores `body` under [`REDIS_KEY`] for the one-GET handler.
pub(crate) async fn set_redis_body(url: &str, body: &str) -> anyhow::Result<()> {
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    redis::cmd("SET")
        .arg(REDIS_KEY)
        .arg(body)
        .query_async::<()>(&mut conn)
        .await?;
    Ok(())
}
