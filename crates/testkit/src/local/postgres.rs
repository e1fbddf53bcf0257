//! A private PostgreSQL server: `initdb` into a scratch dir, `postgres` on a free port.
//!
//! PostgreSQL refuses to run as root, so both run as the `postgres` system user (the Debian
//! package creates it) and the scratch dir is handed to that user. Durability against a power
//! cut is switched off (`fsync`, `full_page_writes`): a test database never needs it, and
//! commits get several times faster. Durability against a crash of the server is kept: tests
//! kill it ([`LocalPostgres::kill`]) and expect what was committed to be there after the
//! restart, as with a real server. `synchronous_commit=off` would lose the last commits (up to
//! three WAL-writer delays, 600 ms) with the killed server's WAL buffers; on PostgreSQL 17 it
//! lost the migrations of a database created just before the kill.
//!
//! The binaries are the machine's, or those of the root filesystem named by
//! `TESTKIT_POSTGRES_ROOT` ([`Install`]); either way the newest major version installed runs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, bail};
use rustix::process::Signal;

use super::install::{Install, SystemUser};
use super::{ScratchDir, ServerProcess, free_port, poll_until, run_command};
use crate::probe::tcp_accepts;

/// The package to install when binaries are missing.
const INSTALL_HINT: &str =
    "apt-get install postgresql (or: apt-get install postgresql redis-server rabbitmq-server)";
/// Names a root filesystem to run PostgreSQL from instead of the machine's packages.
pub(crate) const ROOT_VAR: &str = "TESTKIT_POSTGRES_ROOT";
/// Bounds on how long the server may take; it needs well under a second here.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Ports handed out by the kernel may be taken by someone else before the server binds.
const START_ATTEMPTS: usize = 3;

#[derive(Debug)]
pub(crate) struct LocalPostgres {
    // Declared before `scratch`: the server stops before its directory goes away.
    server: Mutex<Option<ServerProcess>>,
    scratch: ScratchDir,
    install: Install,
    /// The `bin` dir as the server sees it (inside its install).
    bin: PathBuf,
    user: SystemUser,
    port: u16,
}

impl LocalPostgres {
    /// Initialises a cluster and starts it on a free port.
    pub(crate) fn start() -> anyhow::Result<Self> {
        let install = Install::from_env(ROOT_VAR)?;
        let (version, bin) = bin_dir(&install)?;
        install.announce("PostgreSQL", &format!("postgresql-{version}"));
        let user = install
            .user("postgres")
            .with_context(|| format!("PostgreSQL needs its system user; {INSTALL_HINT}"))?;
        let scratch = ScratchDir::new("postgres")?;
        std::os::unix::fs::chown(scratch.path(), Some(user.uid), Some(user.gid))
            .context("hand the scratch dir to the postgres user")?;
        init_cluster(&install, &bin, user, scratch.path())?;
        let mut this = Self {
            server: Mutex::new(None),
            scratch,
            install,
            bin,
            user,
            port: free_port()?,
        };
        let mut attempt = 1;
        loop {
            match this.launch() {
                Ok(()) => return Ok(this),
                Err(_) if attempt < START_ATTEMPTS && this.lost_port_race() => {
                    attempt += 1;
                    this.port = free_port()?;
                }
                Err(error) => return Err(error),
            }
        }
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Fast shutdown (what `pg_ctl -m fast` does: SIGINT to the postmaster).
    pub(crate) fn stop(&self) -> anyhow::Result<()> {
        match self.lock().take() {
            Some(server) => server.stop(Some(Signal::INT), STOP_TIMEOUT),
            None => Ok(()),
        }
    }

    /// Starts the stopped server again on the same port and data; waits until it is ready.
    pub(crate) fn start_again(&self) -> anyhow::Result<()> {
        if let Some(server) = self.lock().as_mut() {
            if server.ensure_running().is_ok() {
                return Ok(());
            }
        }
        self.launch()
            .with_context(|| format!("restart PostgreSQL on port {}", self.port))
    }

    fn launch(&self) -> anyhow::Result<()> {
        let mut server = ServerProcess::spawn(&self.scratch, "postgres", self.server_command())?;
        let pid_file = self.data_dir().join("postmaster.pid");
        let ready = poll_until("PostgreSQL", READY_TIMEOUT, || {
            server.ensure_running()?;
            Ok(is_ready(&pid_file, self.port).then_some(()))
        });
        if let Err(error) = ready {
            let tail = server.log_tail();
            // Dropping the process kills it: a half-started server is of no use.
            drop(server);
            bail!("{error:#}\nPostgreSQL log:\n{tail}");
        }
        *self.lock() = Some(server);
        Ok(())
    }

    fn server_command(&self) -> Command {
        let mut command = self
            .install
            .command(self.bin.join("postgres"), Some(self.user));
        command
            .arg("-D")
            .arg(self.data_dir())
            .args(["-p", &self.port.to_string(), "-h", "127.0.0.1", "-k"])
            .arg(self.scratch.path())
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            // Many tests share one server, each with its own pool.
            .args(["-c", "max_connections=300"])
            .current_dir(self.scratch.path());
        command
    }

    /// Whether the last start failed because another process took the port first.
    fn lost_port_race(&self) -> bool {
        let log = super::log_tail(&self.scratch.path().join("postgres.log"));
        log.contains("Address already in use") || log.contains("could not bind")
    }

    /// The cluster's data directory (what `pg_ctl -D` takes).
    pub(crate) fn data_dir(&self) -> PathBuf {
        self.scratch.path().join("data")
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

    fn lock(&self) -> MutexGuard<'_, Option<ServerProcess>> {
        // A panic while holding the lock leaves the Option consistent; keep going.
        self.server.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        // Immediate shutdown (SIGQUIT) still releases shared memory, which a bare SIGKILL of
        // the group could leave behind; the data dir is deleted anyway.
        if let Some(server) = self.lock().take() {
            let _ = server.stop(Some(Signal::QUIT), Duration::from_secs(5));
        }
    }
}

/// The postmaster writes `ready` into line 8 of `postmaster.pid` once it accepts
/// connections; before that a connection is refused with "the database system is starting up".
fn is_ready(pid_file: &Path, port: u16) -> bool {
    let status = std::fs::read_to_string(pid_file).unwrap_or_default();
    status
        .lines()
        .nth(7)
        .is_some_and(|line| line.trim() == "ready")
        && tcp_accepts(port)
}

fn init_cluster(
    install: &Install,
    bin: &Path,
    user: SystemUser,
    scratch: &Path,
) -> anyhow::Result<()> {
    let mut initdb = install.command(bin.join("initdb"), Some(user));
    initdb
        .arg("-D")
        .arg(scratch.join("data"))
        // -N skips fsync of the new cluster: halves initdb's time and durability is moot here.
        .args([
            "-N",
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
        ])
        .current_dir(scratch);
    run_command(initdb, Duration::from_secs(60)).context("initdb")?;
    Ok(())
}

/// The major version and `bin` dir (as the server sees it) of the highest PostgreSQL version
/// installed by the Debian packages in `install`.
fn bin_dir(install: &Install) -> anyhow::Result<(u32, PathBuf)> {
    let root = Path::new("/usr/lib/postgresql");
    let newest = std::fs::read_dir(install.outside(root))
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = root.join(version.to_string()).join("bin");
            install
                .outside(&bin.join("postgres"))
                .is_file()
                .then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version);
    match newest {
        Some(found) => Ok(found),
        None if install.is_machine() => bail!(
            "no PostgreSQL server under {}/<version>/bin; {INSTALL_HINT}",
            root.display()
        ),
        None => bail!(
            "no PostgreSQL server under {}/<version>/bin ({ROOT_VAR})",
            install.outside(root).display()
        ),
    }
}
