//! [`Postgres`]: a real PostgreSQL server for tests, with a fresh database per test.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use sqlx::Connection as _;

use crate::backend::{self, Backend};
use crate::containers::postgres::ContainerPostgres;
use crate::local::postgres::LocalPostgres;
use crate::{containers, local, worker};

/// A running PostgreSQL server. Dropping a private one (from [`Postgres::start`]) stops it
/// and deletes its data.
#[derive(Debug)]
pub struct Postgres {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Local(Arc<LocalPostgres>),
    Containers(Arc<ContainerPostgres>),
}

impl Postgres {
    /// A private server for this test alone (use it when the test stops/starts the server).
    pub async fn start() -> anyhow::Result<Postgres> {
        worker::run_blocking(start_blocking).await
    }

    /// One server shared by all tests of this test binary (started on first use; lives
    /// until the process exits).
    pub async fn shared() -> anyhow::Result<&'static Postgres> {
        static SHARED: OnceLock<Result<Postgres, String>> = OnceLock::new();
        worker::run_blocking(|| {
            // A failed start is remembered: every test then reports the same cause at once.
            SHARED
                .get_or_init(|| start_blocking().map_err(|e| format!("{e:#}")))
                .as_ref()
                .map_err(|e| anyhow::anyhow!("shared PostgreSQL failed to start: {e}"))
        })
        .await
    }

    /// Creates a new, empty database with a unique name and returns its URL
    /// (`postgres://postgres@127.0.0.1:PORT/NAME`). Each test calls this for isolation.
    pub async fn fresh_database(&self) -> anyhow::Result<String> {
        self.create_database(&format!("testkit_{}", uuid::Uuid::new_v4().simple()))
            .await
    }

    /// Creates the database `name` (letters, digits and `_` only) and returns its URL.
    pub async fn create_database(&self, name: &str) -> anyhow::Result<String> {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            anyhow::bail!("database name {name:?}: use letters, digits and `_` only");
        }
        let create = async {
            let mut admin = sqlx::PgConnection::connect(&self.url_for("postgres")).await?;
            sqlx::query(&format!("CREATE DATABASE \"{name}\""))
                .execute(&mut admin)
                .await?;
            admin.close().await
        };
        // The server is local and answers in milliseconds; a hang means it is stopped or stuck.
        tokio::time::timeout(Duration::from_secs(30), create)
            .await
            .context("timed out")
            .and_then(|created| created.map_err(anyhow::Error::from))
            .with_context(|| format!("create database {name} on port {}", self.port()))?;
        Ok(self.url_for(name))
    }

    /// The server's pid while it runs; `None` when it is stopped, or for a container.
    pub fn pid(&self) -> Option<u32> {
        match &self.inner {
            Inner::Local(local) => local.pid(),
            Inner::Containers(_) => None,
        }
    }

    /// Where a local server keeps its data; `None` for a container.
    pub fn data_dir(&self) -> Option<PathBuf> {
        match &self.inner {
            Inner::Local(local) => Some(local.data_dir()),
            Inner::Containers(_) => None,
        }
    }

    /// Kills a local server as a crash would (SIGKILL to its process group); `start_again`
    /// brings it back on the same port and data. Containers: use `stop`.
    pub async fn kill(&self) -> anyhow::Result<()> {
        match &self.inner {
            Inner::Local(local) => {
                let local = Arc::clone(local);
                worker::run_blocking(move || {
                    local.kill();
                    Ok(())
                })
                .await
            }
            Inner::Containers(_) => {
                anyhow::bail!("kill is offered for local servers only; stop the container instead")
            }
        }
    }

    pub fn port(&self) -> u16 {
        match &self.inner {
            Inner::Local(local) => local.port(),
            Inner::Containers(container) => container.port(),
        }
    }

    /// Fast stop (`pg_ctl -m fast` / container stop); [`Postgres::start_again`] brings it
    /// back on the same port with the same data.
    pub async fn stop(&self) -> anyhow::Result<()> {
        match &self.inner {
            Inner::Local(local) => {
                let local = Arc::clone(local);
                worker::run_blocking(move || local.stop()).await
            }
            Inner::Containers(container) => {
                let container = Arc::clone(container);
                containers::run(async move { container.stop().await }).await
            }
        }
    }

    /// Starts the stopped server again and waits until it accepts connections.
    pub async fn start_again(&self) -> anyhow::Result<()> {
        match &self.inner {
            Inner::Local(local) => {
                let local = Arc::clone(local);
                worker::run_blocking(move || local.start_again()).await
            }
            Inner::Containers(container) => {
                let container = Arc::clone(container);
                containers::run(async move { container.start_again().await }).await
            }
        }
    }

    fn url_for(&self, database: &str) -> String {
        let credentials = match &self.inner {
            Inner::Local(_) => "postgres",
            Inner::Containers(_) => ContainerPostgres::CREDENTIALS,
        };
        format!(
            "postgres://{credentials}@127.0.0.1:{}/{database}",
            self.port()
        )
    }
}

fn start_blocking() -> anyhow::Result<Postgres> {
    let inner = match backend::selected()? {
        Backend::Local => Inner::Local(Arc::new(LocalPostgres::start()?)),
        Backend::Containers => {
            local::refuse_root(local::postgres::ROOT_VAR)?;
            Inner::Containers(Arc::new(containers::block_on(ContainerPostgres::start())?))
        }
    };
    Ok(Postgres { inner })
}
