//! Which backend runs the servers: Docker containers or local processes.
//!
//! Chosen once per process from `TESTKIT_BACKEND` (`local`, `containers` or `auto`, the
//! default). `auto` uses containers when a Docker engine answers a ping and local processes
//! otherwise, and says so on stderr: a test run always states what it ran against.

use std::io::{Read, Write};
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
    let host = engine_host();
    // A TLS engine does not answer plain HTTP; reaching its port is the best we can check.
    if let Some(address) = tls_address(&host) {
        return connect_tcp(address)
            .map(|_| host.clone())
            .map_err(|e| format!("{e} at {host}"));
    }
    match engine_request("GET", "/_ping", PING_TIMEOUT) {
        Ok((200, _)) => Ok(host),
        Ok(_) => Err(format!("engine did not answer the ping at {host}")),
        Err(e) => Err(format!("{e} at {host}")),
    }
}

/// `DOCKER_HOST`, or the default socket as a URL.
pub(crate) fn engine_host() -> String {
    match std::env::var("DOCKER_HOST") {
        Ok(host) if !host.is_empty() => host,
        _ => "unix:///var/run/docker.sock".to_owned(),
    }
}

/// The `host:port` of a TLS engine, which plain HTTP cannot talk to.
fn tls_address(host: &str) -> Option<&str> {
    let tls = std::env::var_os("DOCKER_TLS_VERIFY").is_some_and(|v| !v.is_empty());
    let address = host.strip_prefix("tcp://")?.trim_end_matches('/');
    tls.then_some(address)
}

/// One plain HTTP/1.0 request to the Docker API of `DOCKER_HOST` (unix socket or plain tcp):
/// the status code and the whole body. `timeout` bounds each read and write, not the total,
/// so a long image pull that keeps reporting progress is not cut short.
///
/// Testcontainers keeps its client to itself; the few questions testkit asks (ping, does an
/// image exist, can it be pulled) do not justify a second HTTP client.
pub(crate) fn engine_request(
    method: &str,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let host = engine_host();
    if tls_address(&host).is_some() {
        return Err(format!("{host} needs TLS, which testkit does not speak"));
    }
    let request = format!("{method} {path} HTTP/1.0\r\nHost: docker\r\n\r\n");
    if let Some(path) = host.strip_prefix("unix://") {
        let stream = UnixStream::connect(path).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        stream
            .set_write_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        return exchange(stream, &request);
    }
    if let Some(address) = host.strip_prefix("tcp://") {
        let stream = connect_tcp(address.trim_end_matches('/'))?;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        stream
            .set_write_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        return exchange(stream, &request);
    }
    Err(format!(
        "DOCKER_HOST={host} has a scheme testkit cannot talk to"
    ))
}

fn connect_tcp(address: &str) -> Result<TcpStream, String> {
    let addr = std::net::ToSocketAddrs::to_socket_addrs(address)
        .map_err(|e| e.to_string())?
        .next()
        .ok_or_else(|| "address does not resolve".to_owned())?;
    TcpStream::connect_timeout(&addr, PING_TIMEOUT).map_err(|e| e.to_string())
}

/// Sends `request` and reads the answer to the end: the engine closes the connection after an
/// HTTP/1.0 answer, and a timeout ends a stuck read (keeping what arrived).
fn exchange<S: Read + Write>(mut stream: S, request: &str) -> Result<(u16, String), String> {
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    let status = answer
        .lines()
        .next()
        .filter(|line| line.starts_with("HTTP/1."))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| "the engine's answer is not HTTP".to_owned())?;
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_owned();
    Ok((status, body))
}
