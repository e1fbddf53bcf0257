//! Redis in a container (`redis:7-alpine` or its stand-in).

use anyhow::Context as _;
use testcontainers_modules::redis::Redis;
use testcontainers_modules::testcontainers::core::IntoContainerPort as _;
use testcontainers_modules::testcontainers::runners::AsyncRunner as _;
use testcontainers_modules::testcontainers::{ContainerAsync, ImageExt as _};

use super::{
    SESSION_LABEL, STARTUP_TIMEOUT, image_for, images, remove_on_drop, session, wait_until,
};
use crate::local::free_port;
use crate::probe::redis_answers;

#[derive(Debug)]
pub(crate) struct ContainerRedis {
    container: Option<ContainerAsync<Redis>>,
    port: u16,
}

impl ContainerRedis {
    pub(crate) async fn start() -> anyhow::Result<Self> {
        let port = free_port()?;
        let image = image_for(&images::REDIS).await?;
        let container = Redis::default()
            .with_name(image.name)
            .with_tag(image.tag)
            .with_mapped_port(port, 6379.tcp())
            .with_label(SESSION_LABEL, session())
            .with_startup_timeout(STARTUP_TIMEOUT)
            .start()
            .await
            .with_context(|| format!("start a redis container from {image}"))?;
        Ok(Self {
            container: Some(container),
            port,
        })
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// `docker stop`: Redis saves on SIGTERM (the image's default save points), so keys survive.
    pub(crate) async fn stop(&self) -> anyhow::Result<()> {
        self.container()?
            .stop_with_timeout(Some(30))
            .await
            .context("stop the redis container")
    }

    pub(crate) async fn start_again(&self) -> anyhow::Result<()> {
        self.container()?
            .start()
            .await
            .context("start the redis container")?;
        let port = self.port;
        wait_until("Redis container", move || redis_answers(port)).await
    }

    fn container(&self) -> anyhow::Result<&ContainerAsync<Redis>> {
        self.container
            .as_ref()
            .context("the redis container is gone")
    }
}

impl Drop for ContainerRedis {
    fn drop(&mut self) {
        if let Some(container) = self.container.take() {
            remove_on_drop(container);
        }
    }
}
