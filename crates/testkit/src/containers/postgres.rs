//! PostgreSQL in a container (`postgres:17-alpine` or its stand-in, fsync off).

use anyhow::Context as _;
use testcontainers_modules::postgres::Postgres;
use testcontainers_modules::testcontainers::core::IntoContainerPort as _;
use testcontainers_modules::testcontainers::runners::AsyncRunner as _;
use testcontainers_modules::testcontainers::{ContainerAsync, ImageExt as _};

use super::{
    SESSION_LABEL, STARTUP_TIMEOUT, exec_ok, image_for, images, remove_on_drop, session, wait_until,
};
use crate::local::free_port;
use crate::probe::tcp_accepts;

#[derive(Debug)]
pub(crate) struct ContainerPostgres {
    container: Option<ContainerAsync<Postgres>>,
    port: u16,
}

impl ContainerPostgres {
    /// `user:password` of the image's superuser, as the module configures it.
    pub(crate) const CREDENTIALS: &'static str = "postgres:postgres";

    pub(crate) async fn start() -> anyhow::Result<Self> {
        let port = free_port()?;
        let image = image_for(&images::POSTGRES).await?;
        // The module's variables and readiness messages; the stand-in honours both.
        let container = Postgres::default()
            .with_name(image.name)
            .with_tag(image.tag)
            .with_mapped_port(port, 5432.tcp())
            .with_label(SESSION_LABEL, session())
            // Many tests share one server, each with its own pool.
            .with_cmd(["-c", "fsync=off", "-c", "max_connections=300"])
            .with_startup_timeout(STARTUP_TIMEOUT)
            .start()
            .await
            .with_context(|| format!("start a postgres container from {image}"))?;
        Ok(Self {
            container: Some(container),
            port,
        })
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// `docker stop` (SIGINT first, PostgreSQL's fast shutdown in the official image).
    pub(crate) async fn stop(&self) -> anyhow::Result<()> {
        self.container()?
            .stop_with_timeout(Some(30))
            .await
            .context("stop the postgres container")
    }

    pub(crate) async fn start_again(&self) -> anyhow::Result<()> {
        self.container()?
            .start()
            .await
            .context("start the postgres container")?;
        let port = self.port;
        wait_until("PostgreSQL container", move || tcp_accepts(port)).await?;
        // The port accepts while the server still refuses with "starting up": wait for
        // `pg_isready` inside the container to agree.
        exec_ok(
            self.container()?,
            &[
                "sh",
                "-c",
                "until pg_isready -q -h 127.0.0.1 -U postgres; do sleep 0.1; done",
            ],
        )
        .await
    }

    fn container(&self) -> anyhow::Result<&ContainerAsync<Postgres>> {
        self.container
            .as_ref()
            .context("the postgres container is gone")
    }
}

impl Drop for ContainerPostgres {
    fn drop(&mut self) {
        if let Some(container) = self.container.take() {
            remove_on_drop(container);
        }
    }
}
