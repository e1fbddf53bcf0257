//! A private RabbitMQ cluster of N nodes, each a private node like [`super::rabbitmq`]'s.
//!
//! Every node has its own name, AMQP port, distribution port and data directory
//! (`<scratch>/nK`); they share one `HOME` (so one Erlang cookie) and one private `epmd`,
//! which is how they and the CLI find each other. Nodes boot in parallel (5-8 s each here),
//! then nodes 2..N join node 1 with `rabbitmqctl stop_app; join_cluster; start_app`, also in
//! parallel. A node that was killed or stopped keeps its data directory, so started again it
//! rejoins the cluster by itself.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use anyhow::{Context as _, bail, ensure};
use rustix::process::Signal;

use super::install::Install;
use super::rabbitmq::{
    BIN_DIR, CLI_TIMEOUT, Node, READY_TIMEOUT, START_ATTEMPTS, STOP_TIMEOUT, apply_node_env,
    find_install, start_epmd, write_config, write_cookie,
};
use super::{ScratchDir, ServerProcess, free_port, log_tail, poll_until, run_command};
use crate::probe::amqp_answers;

/// The most nodes a test may ask for: each is a whole Erlang VM (~100 MB).
const MAX_NODES: usize = 7;

#[derive(Debug)]
struct ClusterNode {
    node: Node,
    /// Its own data, logs and config; the cookie lives in the cluster's shared `home`.
    dir: PathBuf,
    /// `None` while the node is down (killed or stopped).
    process: Mutex<Option<ServerProcess>>,
}

impl ClusterNode {
    fn lock(&self) -> MutexGuard<'_, Option<ServerProcess>> {
        self.process.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Debug)]
pub(crate) struct LocalRabbitMqCluster {
    // Declared before `_epmd` and `scratch`: nodes stop first.
    nodes: Vec<ClusterNode>,
    _epmd: ServerProcess,
    install: Install,
    scratch: ScratchDir,
}

impl LocalRabbitMqCluster {
    pub(crate) fn start(size: usize) -> anyhow::Result<Self> {
        ensure!(
            (1..=MAX_NODES).contains(&size),
            "a cluster has 1 to {MAX_NODES} nodes, not {size}"
        );
        let install = find_install()?;
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(&install, size) {
                Ok(this) => return Ok(this),
                // As for one node: a port taken between picking and binding is the usual
                // cause; each attempt uses a new scratch dir, new ports and new names.
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("the RabbitMQ cluster did not start")))
    }

    fn try_start(install: &Install, size: usize) -> anyhow::Result<Self> {
        let scratch = ScratchDir::new("rabbitmq-cluster")?;
        write_cookie(&scratch.path().join("home"))?;
        let epmd_port = free_port()?;
        // One id per cluster keeps node names unique across clusters sharing nothing else.
        let id = uuid::Uuid::new_v4().simple().to_string();
        let mut nodes = Vec::with_capacity(size);
        for n in 1..=size {
            let node = Node {
                name: format!("testkit-{}-n{n}@localhost", &id[..12]),
                amqp_port: free_port()?,
                dist_port: free_port()?,
                epmd_port,
                management_port: None,
            };
            let dir = scratch.path().join(format!("n{n}"));
            std::fs::create_dir(&dir).context("create a node's directory")?;
            write_config(&dir, &node)?;
            nodes.push(ClusterNode {
                node,
                dir,
                process: Mutex::new(None),
            });
        }
        let epmd = start_epmd(install, &scratch, epmd_port)?;
        let this = Self {
            nodes,
            _epmd: epmd,
            install: install.clone(),
            scratch,
        };
        on_each_node(0..size, |index| this.launch(index))?;
        on_each_node(1..size, |index| this.join(index, 0))?;
        Ok(this)
    }

    pub(crate) fn size(&self) -> usize {
        self.nodes.len()
    }

    pub(crate) fn port(&self, index: usize) -> anyhow::Result<u16> {
        Ok(self.node(index)?.node.amqp_port)
    }

    pub(crate) fn node_name(&self, index: usize) -> anyhow::Result<&str> {
        Ok(&self.node(index)?.node.name)
    }

    pub(crate) fn is_up(&self, index: usize) -> anyhow::Result<bool> {
        Ok(self.node(index)?.lock().is_some())
    }

    /// SIGKILL to the node's whole process group: a crash, nothing flushed or handed over.
    pub(crate) fn kill(&self, index: usize) -> anyhow::Result<()> {
        if let Some(process) = self.node(index)?.lock().take() {
            process.crash();
        }
        Ok(())
    }

    /// A graceful stop (SIGTERM to the start script, which stops the VM).
    pub(crate) fn stop(&self, index: usize) -> anyhow::Result<()> {
        match self.node(index)?.lock().take() {
            Some(process) => process.stop(Some(Signal::TERM), STOP_TIMEOUT),
            None => Ok(()),
        }
    }

    /// Starts a killed or stopped node again; it rejoins the cluster from its own data.
    pub(crate) fn start_node(&self, index: usize) -> anyhow::Result<()> {
        let running = match self.node(index)?.lock().as_mut() {
            Some(process) => process.ensure_running().is_ok(),
            None => false,
        };
        if running {
            return Ok(());
        }
        self.launch(index)
    }

    pub(crate) fn stop_app(&self, index: usize) -> anyhow::Result<()> {
        self.ctl(index, &["stop_app"]).map(drop)
    }

    pub(crate) fn start_app(&self, index: usize) -> anyhow::Result<()> {
        self.ctl(index, &["start_app"])?;
        let port = self.port(index)?;
        poll_until("RabbitMQ node (start_app)", READY_TIMEOUT, || {
            Ok(amqp_answers(port).then_some(()))
        })
    }

    /// Creates `vhost` with full permissions for `guest`, through any running node (vhosts
    /// and permissions are cluster-wide).
    pub(crate) fn add_vhost(&self, vhost: &str) -> anyhow::Result<()> {
        let expression = format!(
            "ok = rabbit_vhost:add(<<\"{vhost}\">>, <<\"testkit\">>), \
             ok = rabbit_auth_backend_internal:set_permissions(<<\"guest\">>, <<\"{vhost}\">>, \
             <<\".*\">>, <<\".*\">>, <<\".*\">>, <<\"testkit\">>)."
        );
        self.ctl(self.any_running()?, &["eval", &expression])
            .map(drop)
    }

    /// The node (index) that leads quorum queue `queue` in `vhost`, as a running node sees
    /// it; `None` while there is no leader (an election) or the queue is not a quorum queue.
    pub(crate) fn queue_leader(&self, vhost: &str, queue: &str) -> anyhow::Result<Option<usize>> {
        let output = self.ctl(
            self.any_running()?,
            &[
                "list_queues",
                "-p",
                vhost,
                "name",
                "leader",
                "--no-table-headers",
                "--quiet",
            ],
        )?;
        let text = String::from_utf8_lossy(&output.stdout);
        let leader = text
            .lines()
            .filter_map(|line| line.split_once('\t'))
            .find(|(name, _)| *name == queue)
            .map(|(_, leader)| leader.trim().to_owned());
        let Some(leader) = leader else {
            bail!("no queue {queue} in vhost {vhost}; list_queues said:\n{text}");
        };
        Ok(self.nodes.iter().position(|n| n.node.name == leader))
    }

    fn launch(&self, index: usize) -> anyhow::Result<()> {
        let node = self.node(index)?;
        let mut command = self
            .install
            .command(Path::new(BIN_DIR).join("rabbitmq-server"), None);
        apply_node_env(&mut command, &self.home(), &node.dir, &node.node);
        let mut process =
            ServerProcess::spawn(&self.scratch, format!("rabbitmq-n{}", index + 1), command)?;
        let port = node.node.amqp_port;
        let ready = poll_until("RabbitMQ node", READY_TIMEOUT, || {
            process.ensure_running()?;
            Ok(amqp_answers(port).then_some(()))
        });
        if let Err(error) = ready {
            let tail = process.log_tail();
            let node_log = log_tail(&node.dir.join("log").join(format!("{}.log", node.node.name)));
            drop(process);
            bail!("{error:#}\nRabbitMQ output:\n{tail}\nnode log:\n{node_log}");
        }
        *node.lock() = Some(process);
        Ok(())
    }

    /// Makes node `index` a member of `seed`'s cluster (it must be fresh or reset).
    fn join(&self, index: usize, seed: usize) -> anyhow::Result<()> {
        let seed_name = self.node(seed)?.node.name.clone();
        self.ctl(index, &["stop_app"])?;
        self.ctl(index, &["join_cluster", &seed_name])?;
        self.start_app(index)
    }

    /// Runs `rabbitmqctl -n NODE args...` against node `index`.
    fn ctl(&self, index: usize, args: &[&str]) -> anyhow::Result<std::process::Output> {
        let node = self.node(index)?;
        let mut command = self
            .install
            .command(Path::new(BIN_DIR).join("rabbitmqctl"), None);
        apply_node_env(&mut command, &self.home(), &node.dir, &node.node);
        command.args(["-n", &node.node.name]).args(args);
        run_command(command, CLI_TIMEOUT)
    }

    fn any_running(&self) -> anyhow::Result<usize> {
        self.nodes
            .iter()
            .position(|node| node.lock().is_some())
            .context("every node of the cluster is down")
    }

    fn node(&self, index: usize) -> anyhow::Result<&ClusterNode> {
        self.nodes.get(index).with_context(|| {
            format!(
                "no node {index}: the cluster has nodes 0..{}",
                self.nodes.len()
            )
        })
    }

    fn home(&self) -> PathBuf {
        self.scratch.path().join("home")
    }
}

/// Runs `work(index)` for every index on its own thread and waits for all of them.
fn on_each_node(
    indexes: std::ops::Range<usize>,
    work: impl Fn(usize) -> anyhow::Result<()> + Sync,
) -> anyhow::Result<()> {
    let work = &work;
    std::thread::scope(|scope| {
        let handles: Vec<_> = indexes
            .map(|index| (index, scope.spawn(move || work(index))))
            .collect();
        for (index, handle) in handles {
            match handle.join() {
                Ok(result) => result.with_context(|| format!("node {index}"))?,
                Err(_) => bail!("node {index}: the worker thread panicked"),
            }
        }
        Ok(())
    })
}
