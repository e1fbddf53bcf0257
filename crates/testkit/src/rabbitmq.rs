//! [`RabbitMq`]: a real RabbitMQ broker for tests, with a fresh vhost per test.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use crate::backend::{self, Backend};
use crate::containers::rabbitmq::ContainerRabbitMq;
use crate::local::rabbitmq::LocalRabbitMq;
use crate::{containers, local, worker};

/// A running RabbitMQ broker. Dropping a private one (from [`RabbitMq::start`]) stops it
/// and deletes its data.
#[derive(Debug)]
pub struct RabbitMq {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Local(Arc<LocalRabbitMq>),
    Containers(Arc<ContainerRabbitMq>),
}

/// Runs `$call` on the backend of `$self` off the caller's runtime: local work on a worker
/// thread, container work on the containers runtime.
macro_rules! on_backend {
    ($self:expr, |$server:ident| $call:expr) => {
        match &$self.inner {
            Inner::Local(local) => {
                let $server = Arc::clone(local);
                worker::run_blocking(move || $call).await
            }
            Inner::Containers(container) => {
                let $server = Arc::clone(container);
                containers::run(async move { $call.await }).await
            }
        }
    };
}

impl RabbitMq {
    /// A private broker for this test alone (slow: 5-8 s locally); for outage tests.
    pub async fn start() -> anyhow::Result<RabbitMq> {
        worker::run_blocking(|| start_blocking(false)).await
    }

    /// A private broker with the management plugin (HTTP API and UI at
    /// [`RabbitMq::management_url`]).
    pub async fn start_with_management() -> anyhow::Result<RabbitMq> {
        worker::run_blocking(|| start_blocking(true)).await
    }

    /// One broker shared by all tests of this test binary (started on first use; lives until
    /// the process exits). It runs without the management plugin, which adds start-up time
    /// every test binary would pay.
    pub async fn shared() -> anyhow::Result<&'static RabbitMq> {
        static SHARED: OnceLock<Result<RabbitMq, String>> = OnceLock::new();
        worker::run_blocking(|| {
            SHARED
                .get_or_init(|| start_blocking(false).map_err(|e| format!("{e:#}")))
                .as_ref()
                .map_err(|e| anyhow::anyhow!("shared RabbitMQ failed to start: {e}"))
        })
        .await
    }

    /// Creates a unique vhost with full permissions for `guest` and returns its URL:
    /// `amqp://guest:guest@127.0.0.1:PORT/<vhost>`. Tests isolate by vhost.
    pub async fn fresh_vhost(&self) -> anyhow::Result<String> {
        // Only [a-z0-9-]: nothing to escape in the URL, the CLI or an Erlang binary literal.
        let vhost = format!("testkit-{}", uuid::Uuid::new_v4().simple());
        let name = vhost.clone();
        on_backend!(self, |server| server.add_vhost(&name))?;
        Ok(format!(
            "amqp://guest:guest@127.0.0.1:{}/{vhost}",
            self.port()
        ))
    }

    /// The default vhost `/`: `amqp://guest:guest@127.0.0.1:PORT/%2f`.
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port())
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

    /// `http://127.0.0.1:MGMT_PORT` when the management plugin runs.
    pub fn management_url(&self) -> Option<String> {
        let port = match &self.inner {
            Inner::Local(local) => local.management_port(),
            Inner::Containers(container) => container.management_port(),
        };
        port.map(|port| format!("http://127.0.0.1:{port}"))
    }

    /// Quick outage: `rabbitmqctl stop_app`. Connections drop; the process keeps running.
    pub async fn stop_app(&self) -> anyhow::Result<()> {
        on_backend!(self, |server| server.stop_app())
    }

    /// `rabbitmqctl start_app`; waits until AMQP accepts connections (~1-2 s).
    pub async fn start_app(&self) -> anyhow::Result<()> {
        on_backend!(self, |server| server.start_app())
    }

    /// Full stop of the server (process or container); ports and data are kept, so durable
    /// queues and persistent messages survive [`RabbitMq::start_again`].
    pub async fn stop(&self) -> anyhow::Result<()> {
        on_backend!(self, |server| server.stop())
    }

    /// Starts the stopped server again and waits until AMQP accepts connections.
    pub async fn start_again(&self) -> anyhow::Result<()> {
        on_backend!(self, |server| server.start_again())
    }
}

fn start_blocking(management: bool) -> anyhow::Result<RabbitMq> {
    let inner = match backend::selected()? {
        Backend::Local => Inner::Local(Arc::new(LocalRabbitMq::start(management)?)),
        Backend::Containers => {
            local::refuse_root(local::rabbitmq::ROOT_VAR)?;
            Inner::Containers(Arc::new(containers::block_on(ContainerRabbitMq::start(
                management,
            ))?))
        }
    };
    Ok(RabbitMq { inner })
}
