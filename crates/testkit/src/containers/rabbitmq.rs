//! RabbitMQ in a container (`rabbitmq:4-management-alpine` or its stand-in).
//!
//! Both images always run the management plugin, so the management port is always mapped.
//! `rabbitmqctl` runs inside the container through `docker exec`; both images let `guest`
//! connect from outside (they set `loopback_users.guest = false`).

use anyhow::Context as _;
use testcontainers_modules::testcontainers::core::{IntoContainerPort as _, WaitFor};
use testcontainers_modules::testcontainers::runners::AsyncRunner as _;
use testcontainers_modules::testcontainers::{ContainerAsync, GenericImage, ImageExt as _};

use super::{
    SESSION_LABEL, STARTUP_TIMEOUT, exec_ok, image_for, images, remove_on_drop, session, wait_until,
};
use crate::local::free_port;
use crate::probe::amqp_answers;

#[derive(Debug)]
pub(crate) struct ContainerRabbitMq {
    container: Option<ContainerAsync<GenericImage>>,
    port: u16,
    management_port: u16,
    /// Whether the caller asked for the management plugin: the images run it anyway, but the
    /// handle answers like the local backend so tests see one behaviour.
    management: bool,
}

impl ContainerRabbitMq {
    pub(crate) async fn start(management: bool) -> anyhow::Result<Self> {
        let (port, management_port) = (free_port()?, free_port()?);
        let image = image_for(&images::RABBITMQ).await?;
        let container = GenericImage::new(image.name, image.tag)
            // Printed once boot is complete, whatever the number of plugins.
            .with_wait_for(WaitFor::message_on_stdout("Server startup complete"))
            .with_mapped_port(port, 5672.tcp())
            .with_mapped_port(management_port, 15672.tcp())
            .with_label(SESSION_LABEL, session())
            .with_startup_timeout(STARTUP_TIMEOUT)
            .start()
            .await
            .with_context(|| format!("start a rabbitmq container from {image}"))?;
        let this = Self {
            container: Some(container),
            port,
            management_port,
            management,
        };
        this.wait_for_amqp().await?;
        Ok(this)
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn management_port(&self) -> Option<u16> {
        self.management.then_some(self.management_port)
    }

    /// Two stable CLI commands (rather than an `eval`, whose internals change across majors).
    pub(crate) async fn add_vhost(&self, vhost: &str) -> anyhow::Result<()> {
        self.ctl(&["add_vhost", vhost]).await?;
        self.ctl(&["set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"])
            .await
    }

    pub(crate) async fn stop_app(&self) -> anyhow::Result<()> {
        self.ctl(&["stop_app"]).await
    }

    pub(crate) async fn start_app(&self) -> anyhow::Result<()> {
        self.ctl(&["start_app"]).await?;
        self.wait_for_amqp().await
    }

    /// `docker stop`: both images run RabbitMQ as PID 1, which stops gracefully on SIGTERM, so durable
    /// queues and persistent messages survive in the container's volume.
    pub(crate) async fn stop(&self) -> anyhow::Result<()> {
        self.container()?
            .stop_with_timeout(Some(60))
            .await
            .context("stop the rabbitmq container")
    }

    pub(crate) async fn start_again(&self) -> anyhow::Result<()> {
        self.container()?
            .start()
            .await
            .context("start the rabbitmq container")?;
        self.wait_for_amqp().await
    }

    async fn wait_for_amqp(&self) -> anyhow::Result<()> {
        let port = self.port;
        wait_until("RabbitMQ container", move || amqp_answers(port)).await
    }

    /// Runs `rabbitmqctl args...` in the container and fails unless it exits 0.
    async fn ctl(&self, args: &[&str]) -> anyhow::Result<()> {
        let command: Vec<&str> = std::iter::once("rabbitmqctl")
            .chain(args.iter().copied())
            .collect();
        exec_ok(self.container()?, &command).await
    }

    fn container(&self) -> anyhow::Result<&ContainerAsync<GenericImage>> {
        self.container
            .as_ref()
            .context("the rabbitmq container is gone")
    }
}

impl Drop for ContainerRabbitMq {
    fn drop(&mut self) {
        if let Some(container) = self.container.take() {
            remove_on_drop(container);
        }
    }
}
