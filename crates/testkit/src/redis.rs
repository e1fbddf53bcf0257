//! [`Redis`]: a real Redis server for tests.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use crate::backend::{self, Backend};
use crate::containers::redis::ContainerRedis;
use crate::local::redis::LocalRedis;
use crate::{containers, worker};

/// A running Redis server. Dropping a private one (from [`Redis::start`]) stops it.
#[derive(Debug)]
pub struct Redis {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Local(Arc<LocalRedis>),
    Containers(Arc<ContainerRedis>),
}

impl Redis {
    /// A private server for this test alone; cheap (~50 ms locally).
    pub async fn start() -> anyhow::Result<Redis> {
        worker::run_blocking(start_blocking).await
    }

    /// One server shared by all tests of this test binary (started on first use; lives
    /// until the process exits). Tests sharing it should use distinct key prefixes.
    pub async fn shared() -> anyhow::Result<&'static Redis> {
        static SHARED: OnceLock<Result<Redis, String>> = OnceLock::new();
        worker::run_blocking(|| {
            SHARED
                .get_or_init(|| start_blocking().map_err(|e| format!("{e:#}")))
                .as_ref()
                .map_err(|e| anyhow::anyhow!("shared Redis failed to start: {e}"))
        })
        .await
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr())
    }

    /// `127.0.0.1:PORT` (the `REDIS_ADDR` form).
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port())
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

    /// Stops the server; keys written before survive until [`Redis::start_again`].
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

    /// Starts the stopped server again on the same port and waits until it answers PING.
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
}

fn start_blocking() -> anyhow::Result<Redis> {
    let inner = match backend::selected()? {
        Backend::Local => Inner::Local(Arc::new(LocalRedis::start()?)),
        Backend::Containers => {
            Inner::Containers(Arc::new(containers::block_on(ContainerRedis::start())?))
        }
    };
    Ok(Redis { inner })
}
