//! A private HAProxy in front of a set of HTTP servers, from Debian's `haproxy` package.
//!
//! The configuration is what a production balancer in front of these services would use:
//! an HTTP health check on the readiness route, quick to take a draining replica out, and
//! retries of requests that a replica never answered on the other replica (see
//! [`config`]). HAProxy's admin socket tells which servers it considers up.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};

use super::{ScratchDir, ServerProcess, free_port, poll_until};

const INSTALL_HINT: &str = "apt-get install haproxy";
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How often HAProxy checks each server, in every state.
pub(crate) const CHECK_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Debug)]
pub(crate) struct LocalHaproxy {
    // Declared before `scratch`: the process stops before its directory goes away.
    _server: ServerProcess,
    scratch: ScratchDir,
    port: u16,
}

impl LocalHaproxy {
    /// Starts HAProxy balancing over `servers` (`host:port` each), health-checking
    /// `GET <check_path>`, and waits until it answers on its port.
    pub(crate) fn start(servers: &[String], check_path: &str) -> anyhow::Result<Self> {
        let scratch = ScratchDir::new("haproxy")?;
        let port = free_port()?;
        let socket = scratch.path().join("admin.sock");
        let config = config(port, &socket, servers, check_path);
        let config_file = scratch.path().join("haproxy.cfg");
        std::fs::write(&config_file, config).context("write haproxy.cfg")?;

        let mut command = Command::new(haproxy_binary());
        // -db: stay in the foreground, so the process group is ours to stop.
        command.arg("-db").arg("-f").arg(&config_file);
        let mut server = ServerProcess::spawn(&scratch, "haproxy", command)
            .with_context(|| format!("haproxy must be installed; {INSTALL_HINT}"))?;
        let ready = poll_until("HAProxy", READY_TIMEOUT, || {
            server.ensure_running()?;
            Ok(
                (std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() && socket.exists())
                    .then_some(()),
            )
        });
        if let Err(error) = ready {
            bail!("{error:#}\nHAProxy log:\n{}", server.log_tail());
        }
        Ok(Self {
            _server: server,
            scratch,
            port,
        })
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Which servers HAProxy considers up right now, in configuration order.
    pub(crate) fn servers_up(&self) -> anyhow::Result<Vec<bool>> {
        let csv = self.admin("show stat")?;
        Ok(parse_server_states(&csv))
    }

    /// Sends one command to the admin socket and returns the answer.
    fn admin(&self, command: &str) -> anyhow::Result<String> {
        let path = self.scratch.path().join("admin.sock");
        let mut stream = UnixStream::connect(&path)
            .with_context(|| format!("connect to HAProxy's admin socket {}", path.display()))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        writeln!(stream, "{command}")?;
        let mut answer = String::new();
        for line in BufReader::new(stream).lines() {
            answer.push_str(&line?);
            answer.push('\n');
        }
        Ok(answer)
    }
}

/// Debian installs HAProxy in /usr/sbin, which is not on every user's PATH.
fn haproxy_binary() -> PathBuf {
    let sbin = PathBuf::from("/usr/sbin/haproxy");
    if sbin.exists() {
        sbin
    } else {
        PathBuf::from("haproxy")
    }
}

/// The configuration, with the reasons for each choice:
/// - `option httpchk` on the readiness route, every [`CHECK_INTERVAL`] in every state,
///   down after 2 failed checks, up after 2 good ones: a replica that starts draining
///   (readiness 503 for `SHUTDOWN_DRAIN_DELAY`) leaves the rotation within ~0.5 s, well before
///   it stops accepting connections;
/// - `retries 3` + `option redispatch 1` + `retry-on conn-failure empty-response`: a request
///   sent to a replica that is gone (refused, or cut with no answer) goes to another replica.
///   Only requests that got *no* answer are retried; GET and PUT are idempotent, and POST
///   is retried only when its connection failed, before anything was sent;
/// - `http-reuse never`: every request opens its own server connection, so a replica that
///   closes its idle keep-alive connections while shutting down can never race a request
///   onto one of them.
fn config(port: u16, socket: &std::path::Path, servers: &[String], check_path: &str) -> String {
    let inter = CHECK_INTERVAL.as_millis();
    let mut config = format!(
        "global\n\
         \x20   maxconn 4096\n\
         \x20   stats socket {socket} mode 600 level admin\n\
         defaults\n\
         \x20   mode http\n\
         \x20   timeout connect 1s\n\
         \x20   timeout client 30s\n\
         \x20   timeout server 30s\n\
         \x20   timeout check 1s\n\
         \x20   retries 3\n\
         \x20   option redispatch 1\n\
         \x20   retry-on conn-failure empty-response\n\
         \x20   http-reuse never\n\
         frontend front\n\
         \x20   bind 127.0.0.1:{port}\n\
         \x20   default_backend replicas\n\
         backend replicas\n\
         \x20   balance roundrobin\n\
         \x20   option httpchk GET {check_path}\n\
         \x20   http-check expect status 200\n\
         \x20   default-server inter {inter}ms fastinter {inter}ms downinter {inter}ms fall 2 rise 2\n",
        socket = socket.display(),
    );
    for (index, server) in servers.iter().enumerate() {
        config.push_str(&format!("    server replica{index} {server} check\n"));
    }
    config
}

/// The `status` column of each server row of `show stat` (CSV with a `# pxname,svname,…`
/// header): only `UP` counts as up; `UP 1/2` (failing, about to go down) and `DOWN 1/2`
/// (recovering, not yet sent traffic) count as down.
fn parse_server_states(csv: &str) -> Vec<bool> {
    let mut lines = csv.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let columns: Vec<&str> = header.trim_start_matches("# ").split(',').collect();
    let column = |name: &str| columns.iter().position(|c| *c == name);
    let (Some(proxy), Some(server), Some(status)) =
        (column("pxname"), column("svname"), column("status"))
    else {
        return Vec::new();
    };
    lines
        .map(|line| line.split(',').collect::<Vec<_>>())
        .filter(|row| row.get(proxy) == Some(&"replicas"))
        .filter(|row| row.get(server).is_some_and(|s| s.starts_with("replica")))
        .map(|row| row.get(status).is_some_and(|s| *s == "UP"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_states_come_from_the_status_column_of_the_replica_rows() {
        let csv = "# pxname,svname,qcur,status,weight\n\
                   front,FRONTEND,,OPEN,\n\
                   replicas,replica0,0,UP,1\n\
                   replicas,replica1,0,DOWN,1\n\
                   replicas,BACKEND,0,UP,1\n";
        assert_eq!(parse_server_states(csv), vec![true, false]);
    }

    #[test]
    fn a_server_still_rising_is_not_up_yet() {
        let csv = "# pxname,svname,status\nreplicas,replica0,DOWN 1/2\nreplicas,replica1,UP 1/2\n";
        assert_eq!(parse_server_states(csv), vec![false, false]);
    }

    #[test]
    fn the_config_checks_readiness_and_lists_every_server() {
        let servers = ["127.0.0.1:1".to_owned(), "127.0.0.1:2".to_owned()];
        let config = config(
            9,
            std::path::Path::new("/tmp/s"),
            &servers,
            "/healthz/ready",
        );
        assert!(config.contains("option httpchk GET /healthz/ready"));
        assert!(config.contains("server replica0 127.0.0.1:1 check"));
        assert!(config.contains("server replica1 127.0.0.1:2 check"));
        assert!(config.contains("bind 127.0.0.1:9"));
    }
}
