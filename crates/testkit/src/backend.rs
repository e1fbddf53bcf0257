//! Which backend runs the servers: Docker containers or local processes.
//!
//! Chosen once per process from `TESTKIT_BACKEND` (`local`, `containers` or `auto`, the
//! default). `auto` uses containers when a Docker engine answers a ping and local processes
//! otherwise, and says so on stderr: a test run always states what it ran against.

use std::io::Read as _;
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::OnceLock;
use std::time::Duration;

/// How the servers of this test process run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Private processes from locally installed binaries (Debian packages).
    Local,
    /// Docker containers through testcontainers.
    Containers,
}

/// The variable that forces a backend.
const BACKEND_VAR: &str = "TESTKIT_BACKEND";
/// How long the Docker ping may take before we conclude there is no engine.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// The backend of this process, chosen on the first call and printed once to stderr.
///
/// # Panics
/// When `TESTKIT_BACKEND` holds something other than `local`, `containers` or `auto`: a typo
/// must fail the run rather than silently test against something else. The server
/// constructors report the same problem as an error instead.
pub fn backend() -> Backend {
    match selected() {
        Ok(backend) => backend,
        Err(message) => panic!("{message}"),
    }
}

/// The backend of this process, or why `TESTKIT_BACKEND` cannot be understood.
pub(crate) fn selected() -> anyhow::Result<Backend> {
    static CHOICE: OnceLock<Result<Backend, String>> = OnceLock::new();
    CHOICE
        .get_or_init(|| {
            let choice = choose();
            match &choice {
                Ok((backend, why)) => eprintln!("testkit: backend={} ({why})", name(*backend)),
                Err(message) => eprintln!("testkit: {message}"),
            }
            choice.map(|(backend, _)| backend)
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

fn name(backend: Backend) -> &'static str {
    match backend {
        Backend::Local => "local",
        Backend::Containers => "containers",
    }
}

/// Decides the backend and gives the reason shown to the user.
fn choose() -> Result<(Backend, String), String> {
    let requested = std::env::var(BACKEND_VAR).unwrap_or_default();
    match requested.trim().to_ascii_lowercase().as_str() {
        "local" => Ok((Backend::Local, format!("{BACKEND_VAR}=local"))),
        "containers" => Ok((Backend::Containers, format!("{BACKEND_VAR}=containers"))),
        "" | "auto" => Ok(match ping_docker() {
            Ok(engine) => (
                Backend::Containers,
                format!("Docker engine answers at {engine}"),
            ),
            Err(why) => (Backend::Local, format!("no Docker engine: {why}")),
        }),
        other => Err(format!(
            "{BACKEND_VAR}={other:?} is not understood; use local, containers or auto"
        )),
    }
}

/// Pings the engine named by `DOCKER_HOST` (or the default socket); returns where it answered.
fn ping_docker() -> Result<String, String> {
    let host = std::env::var("DOCKER_HOST").unwrap_or_default();
    if host.is_empty() {
        let socket = "/var/run/docker.sock";
        return ping_unix(socket)
            .map(|()| socket.to_owned())
            .map_err(|e| format!("{e} at {socket}"));
    }
    if let Some(path) = host.strip_prefix("unix://") {
        return ping_unix(path)
            .map(|()| host.clone())
            .map_err(|e| format!("{e} at {host}"));
    }
    if let Some(address) = host.strip_prefix("tcp://") {
        let address = address.trim_end_matches('/');
        // A TLS engine does not answer plain HTTP; reaching its port is the best we can check.
        let tls = std::env::var_os("DOCKER_TLS_VERIFY").is_some_and(|v| !v.is_empty());
        return ping_tcp(address, tls)
            .map(|()| host.clone())
            .map_err(|e| format!("{e} at {host}"));
    }
    Err(format!(
        "DOCKER_HOST={host} has a scheme testkit cannot ping"
    ))
}

fn ping_unix(path: &str) -> Result<(), String> {
    let stream = UnixStream::connect(path).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(PING_TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(PING_TIMEOUT))
        .map_err(|e| e.to_string())?;
    http_ping(stream)
}

fn ping_tcp(address: &str, tls: bool) -> Result<(), String> {
    let addr = std::net::ToSocketAddrs::to_socket_addrs(address)
        .map_err(|e| e.to_string())?
        .next()
        .ok_or_else(|| "address does not resolve".to_owned())?;
    let stream = TcpStream::connect_timeout(&addr, PING_TIMEOUT).map_err(|e| e.to_string())?;
    if tls {
        return Ok(());
    }
    stream
        .set_read_timeout(Some(PING_TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(PING_TIMEOUT))
        .map_err(|e| e.to_string())?;
    http_ping(stream)
}

/// `GET /_ping` must answer `200 OK`: a socket file alone may belong to a stopped engine.
fn http_ping<S: std::io::Read + std::io::Write>(mut stream: S) -> Result<(), String> {
    stream
        .write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    // The engine closes the connection after an HTTP/1.0 answer; a timeout ends a stuck read.
    let _ = stream.take(4096).read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    if answer.starts_with("HTTP/1.") && answer.lines().next().is_some_and(|l| l.contains(" 200 ")) {
        Ok(())
    } else {
        Err("engine did not answer the ping".to_owned())
    }
}
