//! A private RabbitMQ node: the package's own start script with every path, port and name
//! pointed into a scratch dir, and a private `epmd`.
//!
//! Debian's `/usr/sbin/rabbitmq-server` switches to the rabbitmq user, so we run
//! `/usr/lib/rabbitmq/bin/rabbitmq-server` directly. The machine's epmd owns port 4369, so
//! the node and every `rabbitmqctl` talk to an epmd of our own (`ERL_EPMD_PORT`), which we
//! start first: were it missing, Erlang would daemonise one that escapes our process group.
//! The start script does not `exec` the VM; it forwards SIGTERM to it and waits.
//!
//! The binaries are the machine's, or those of the root filesystem named by
//! `TESTKIT_RABBITMQ_ROOT` ([`Install`]), epmd included.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, bail};
use rustix::process::Signal;

use super::install::Install;
use super::{ScratchDir, ServerProcess, free_port, poll_until, run_command};
use crate::probe::{amqp_answers, tcp_accepts};

pub(super) const BIN_DIR: &str = "/usr/lib/rabbitmq/bin";
/// Names a root filesystem to run RabbitMQ from instead of the machine's packages.
pub(crate) const ROOT_VAR: &str = "TESTKIT_RABBITMQ_ROOT";
pub(super) const INSTALL_HINT: &str =
    "apt-get install rabbitmq-server (or: apt-get install postgresql redis-server rabbitmq-server)";
/// It takes 5-8 s here; a loaded CI machine may need several times that (a third cluster
/// node, booting beside two others and a test build, once took over 60 s).
pub(super) const READY_TIMEOUT: Duration = Duration::from_secs(120);
pub(super) const STOP_TIMEOUT: Duration = Duration::from_secs(30);
pub(super) const CLI_TIMEOUT: Duration = Duration::from_secs(60);
pub(super) const START_ATTEMPTS: usize = 3;

/// The fixed parts of one node: where it lives and how it is reached.
#[derive(Debug)]
pub(super) struct Node {
    pub(super) name: String,
    pub(super) amqp_port: u16,
    pub(super) dist_port: u16,
    pub(super) epmd_port: u16,
    pub(super) management_port: Option<u16>,
}

#[derive(Debug)]
pub(crate) struct LocalRabbitMq {
    // Declared before `scratch`: processes stop before their directory goes away.
    broker: Mutex<Option<ServerProcess>>,
    // Held, never read: the node and every CLI call need it; it dies with the handle.
    _epmd: ServerProcess,
    install: Install,
    node: Node,
    scratch: ScratchDir,
}

impl LocalRabbitMq {
    pub(crate) fn start(management: bool) -> anyhow::Result<Self> {
        let install = find_install()?;
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(&install, management) {
                Ok(this) => return Ok(this),
                // A port taken between picking and binding is the usual cause; each attempt
                // uses a new scratch dir and new ports.
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("RabbitMQ did not start")))
    }

    fn try_start(install: &Install, management: bool) -> anyhow::Result<Self> {
        let scratch = ScratchDir::new("rabbitmq")?;
        let node = Node {
            name: format!("testkit-{}@localhost", uuid::Uuid::new_v4().simple()),
            amqp_port: free_port()?,
            dist_port: free_port()?,
            epmd_port: free_port()?,
            management_port: if management { Some(free_port()?) } else { None },
        };
        write_cookie(&scratch.path().join("home"))?;
        write_config(scratch.path(), &node)?;
        let epmd = start_epmd(install, &scratch, node.epmd_port)?;
        let this = Self {
            broker: Mutex::new(None),
            _epmd: epmd,
            install: install.clone(),
            node,
            scratch,
        };
        this.launch()?;
        Ok(this)
    }

    pub(crate) fn port(&self) -> u16 {
        self.node.amqp_port
    }

    pub(crate) fn management_port(&self) -> Option<u16> {
        self.node.management_port
    }

    pub(crate) fn stop_app(&self) -> anyhow::Result<()> {
        self.ctl(&["stop_app"]).map(drop)
    }

    pub(crate) fn start_app(&self) -> anyhow::Result<()> {
        self.ctl(&["start_app"])?;
        let port = self.node.amqp_port;
        poll_until("RabbitMQ (start_app)", READY_TIMEOUT, || {
            Ok(amqp_answers(port).then_some(()))
        })
    }

    /// Stops the node gracefully (durable queues and their persistent messages survive).
    pub(crate) fn stop(&self) -> anyhow::Result<()> {
        match self.lock().take() {
            Some(broker) => broker.stop(Some(Signal::TERM), STOP_TIMEOUT),
            None => Ok(()),
        }
    }

    pub(crate) fn start_again(&self) -> anyhow::Result<()> {
        if let Some(broker) = self.lock().as_mut() {
            if broker.ensure_running().is_ok() {
                return Ok(());
            }
        }
        self.launch()
            .with_context(|| format!("restart RabbitMQ on port {}", self.node.amqp_port))
    }

    /// Creates `vhost` and gives `guest` full permissions on it, in one CLI call (each
    /// `rabbitmqctl` boots an Erlang VM: about a second).
    pub(crate) fn add_vhost(&self, vhost: &str) -> anyhow::Result<()> {
        let expression = format!(
            "ok = rabbit_vhost:add(<<\"{vhost}\">>, <<\"testkit\">>), \
             ok = rabbit_auth_backend_internal:set_permissions(<<\"guest\">>, <<\"{vhost}\">>, \
             <<\".*\">>, <<\".*\">>, <<\".*\">>, <<\"testkit\">>)."
        );
        self.ctl(&["eval", &expression]).map(drop)
    }

    fn launch(&self) -> anyhow::Result<()> {
        let mut command = self
            .install
            .command(Path::new(BIN_DIR).join("rabbitmq-server"), None);
        self.apply_env(&mut command);
        let mut broker = ServerProcess::spawn(&self.scratch, "rabbitmq", command)?;
        let (amqp, management) = (self.node.amqp_port, self.node.management_port);
        let ready = poll_until("RabbitMQ", READY_TIMEOUT, || {
            broker.ensure_running()?;
            let up = amqp_answers(amqp) && management.is_none_or(tcp_accepts);
            Ok(up.then_some(()))
        });
        if let Err(error) = ready {
            let tail = broker.log_tail();
            let node_log = super::log_tail(&self.node_log());
            drop(broker);
            bail!("{error:#}\nRabbitMQ output:\n{tail}\nnode log:\n{node_log}");
        }
        *self.lock() = Some(broker);
        Ok(())
    }

    /// Runs `rabbitmqctl -n NODE args...` against this node.
    fn ctl(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        let mut command = self
            .install
            .command(Path::new(BIN_DIR).join("rabbitmqctl"), None);
        self.apply_env(&mut command);
        command.args(["-n", &self.node.name]).args(args);
        run_command(command, CLI_TIMEOUT)
    }

    /// The environment shared by the server and the CLI (see [`apply_node_env`]).
    fn apply_env(&self, command: &mut Command) {
        let dir = self.scratch.path();
        apply_node_env(command, &dir.join("home"), dir, &self.node);
    }

    fn node_log(&self) -> PathBuf {
        self.scratch
            .path()
            .join("log")
            .join(format!("{}.log", self.node.name))
    }

    /// The server's pid while it runs (`None` when stopped or dead).
    pub(crate) fn pid(&self) -> Option<u32> {
        self.lock().as_mut().and_then(ServerProcess::running_pid)
    }

    /// SIGKILL to the server's process group: a crash, not a shutdown.
    /// [`Self::start_again`] brings it back on the same port and data.
    pub(crate) fn kill(&self) {
        // Dropping a running server process kills its whole group and reaps it.
        drop(self.lock().take());
    }

    /// Where the server keeps its data.
    pub(crate) fn data_dir(&self) -> PathBuf {
        self.scratch.path().join("mnesia")
    }

    fn lock(&self) -> MutexGuard<'_, Option<ServerProcess>> {
        self.broker.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The environment shared by a node's server and its CLI calls: every path points into
/// `dir`, the CLI finds the node through our epmd and authenticates with the cookie in
/// `home` (nodes of one cluster share it).
pub(super) fn apply_node_env(command: &mut Command, home: &Path, dir: &Path, node: &Node) {
    command
        .current_dir(dir)
        .env("HOME", home)
        .env("RABBITMQ_NODENAME", &node.name)
        .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
        .env("RABBITMQ_NODE_PORT", node.amqp_port.to_string())
        .env("RABBITMQ_DIST_PORT", node.dist_port.to_string())
        .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
        .env("RABBITMQ_LOG_BASE", dir.join("log"))
        .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq.conf"))
        .env("RABBITMQ_ADVANCED_CONFIG_FILE", dir.join("advanced.config"))
        .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
        .env("RABBITMQ_CONF_ENV_FILE", dir.join("rabbitmq-env.conf"))
        .env("RABBITMQ_PLUGINS_EXPAND_DIR", dir.join("plugins-expand"))
        // The CLI's own distribution port: 0 lets the kernel choose. The default range
        // (35672-35682) is shared by every CLI on the machine and runs out under load.
        .env("RABBITMQ_CTL_DIST_PORT_MIN", "0")
        .env("RABBITMQ_CTL_DIST_PORT_MAX", "0")
        .env(
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
            "-kernel inet_dist_use_interface {127,0,0,1}",
        )
        .env("ERL_EPMD_PORT", node.epmd_port.to_string())
        .env("ERL_EPMD_ADDRESS", "127.0.0.1");
}

/// Writes the Erlang cookie into `home` (created): every node and CLI call with this HOME
/// may talk to the others.
pub(super) fn write_cookie(home: &Path) -> anyhow::Result<()> {
    std::fs::create_dir(home).context("create the node's HOME")?;
    let cookie = home.join(".erlang.cookie");
    std::fs::write(&cookie, uuid::Uuid::new_v4().simple().to_string())
        .context("write the cookie")?;
    // Erlang refuses a cookie others can read.
    std::fs::set_permissions(&cookie, std::fs::Permissions::from_mode(0o400))
        .context("restrict the cookie")
}

/// Writes the config, plugin list and the empty env file the node reads at boot into `dir`.
pub(super) fn write_config(dir: &Path, node: &Node) -> anyhow::Result<()> {
    let mut config = format!("listeners.tcp.default = 127.0.0.1:{}\n", node.amqp_port);
    let plugins = match node.management_port {
        Some(port) => {
            config.push_str(&format!(
                "management.tcp.port = {port}\nmanagement.tcp.ip = 127.0.0.1\n"
            ));
            "[rabbitmq_management]."
        }
        None => "[].",
    };
    std::fs::write(dir.join("rabbitmq.conf"), config).context("write rabbitmq.conf")?;
    std::fs::write(dir.join("enabled_plugins"), plugins).context("write enabled_plugins")?;
    // Empty, so the machine's /etc/rabbitmq/rabbitmq-env.conf cannot redirect anything.
    std::fs::write(dir.join("rabbitmq-env.conf"), "").context("write rabbitmq-env.conf")?;
    Ok(())
}

/// The install named by [`ROOT_VAR`] (or the machine's), checked to hold RabbitMQ, and said
/// on stderr.
pub(super) fn find_install() -> anyhow::Result<Install> {
    let install = Install::from_env(ROOT_VAR)?;
    let script = install.outside(&Path::new(BIN_DIR).join("rabbitmq-server"));
    if !script.is_file() {
        if install.is_machine() {
            bail!("no RabbitMQ at {}; {INSTALL_HINT}", script.display());
        }
        bail!("no RabbitMQ at {} ({ROOT_VAR})", script.display());
    }
    install.announce("RabbitMQ", "rabbitmq-server");
    Ok(install)
}

/// Starts the install's `epmd` on `port` (the one Erlang daemon all nodes of a test share).
pub(super) fn start_epmd(
    install: &Install,
    scratch: &ScratchDir,
    port: u16,
) -> anyhow::Result<ServerProcess> {
    let mut command = install.command("epmd", None);
    command.args(["-port", &port.to_string(), "-address", "127.0.0.1"]);
    let mut epmd = ServerProcess::spawn(scratch, "epmd", command)
        .with_context(|| format!("epmd comes with Erlang; {INSTALL_HINT}"))?;
    poll_until("epmd", Duration::from_secs(10), || {
        epmd.ensure_running()?;
        Ok(tcp_accepts(port).then_some(()))
    })?;
    Ok(epmd)
}
