//! RabbitMQ in a container (`rabbitmq:4-management-alpine`).
//!
//! The image always runs the management plugin, so the management port is always mapped.
//! `rabbitmqctl` runs inside the container through `docker exec`; the official image lets
//! `guest` connect from outside (it sets `loopback_users.guest = false`).

use anyhow::Context as _;
use testcontainers_modules::testcontainers::core::{
    CmdWaitFor, ExecCommand, IntoContainerPort as _, WaitFor,
};
use testcontainers_modules::testcontainers::runners::AsyncRunner as _;
use testcontainers_modules::testcontainers::{ContainerAsync, GenericImage, ImageExt as _};

use super::{READY_TIMEOUT, SESSION_LABEL, STARTUP_TIMEOUT, remove_on_drop, session, wait_until};
use crate::local::free_port;
use crate::probe::amqp_answers;

const IMAGE: &str = "rabbitmq";
const TAG: &str = "4-management-alpine";

#[derive(Debug)]
pub(crate) struct ContainerRabbitMq {
    container: Option<ContainerAsync<GenericImage>>,
    port: u16,
    management_port: u16,
}

impl ContainerRabbitMq {
    /// `_management` is accepted for symmetry with the local backend: the image has it anyway.
    pub(crate) async fn start(_management: bool) -> anyhow::Result<Self> {
        let (port, management_port) = (free_port()?, free_port()?);
        let container = GenericImage::new(IMAGE, TAG)
            // Printed once boot is complete, whatever the number of plugins.
            .with_wait_for(WaitFor::message_on_stdout("Server startup complete"))
            .with_mapped_port(port, 5672.tcp())
            .with_mapped_port(management_port, 15672.tcp())
            .with_label(SESSION_LABEL, session())
            .with_startup_timeout(STARTUP_TIMEOUT)
            .start()
            .await
            .context("start a rabbitmq container")?;
        let this = Self {
            container: Some(container),
            port,
            management_port,
        };
        this.wait_for_amqp().await?;
        Ok(this)
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn management_port(&self) -> Option<u16> {
        Some(self.management_port)
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

    /// `docker stop`: the image's entrypoint stops RabbitMQ gracefully on SIGTERM, so durable
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
        let command = ExecCommand::new(std::iter::once("rabbitmqctl").chain(args.iter().copied()))
            // testcontainers waits for the exit and turns another code into an error.
            .with_cmd_ready_condition(CmdWaitFor::exit_code(0));
        let description = format!("rabbitmqctl {}", args.join(" "));
        let run = async {
            // The result holds output streams that are not `Sync`: drop it without awaiting.
            drop(self.container()?.exec(command).await?);
            anyhow::Ok(())
        };
        tokio::time::timeout(READY_TIMEOUT, run)
            .await
            .with_context(|| format!("{description} timed out"))?
            .with_context(|| format!("{description} failed"))
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
