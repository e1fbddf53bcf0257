//! Readiness probes over plain TCP from the host, shared by both backends: a server counts
//! as up when it answers its own protocol, not when its port merely accepts.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Connects to 127.0.0.1:`port` with short timeouts, so a probe can never hang.
pub(crate) fn connect(port: u16) -> std::io::Result<TcpStream> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let stream = TcpStream::connect_timeout(&address, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    Ok(stream)
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub(crate) fn tcp_accepts(port: u16) -> bool {
    connect(port).is_ok()
}

/// Sends one inline Redis command and returns the first reply chunk (empty when the server
/// closes the connection, as `SHUTDOWN` does).
pub(crate) fn redis_command(port: u16, line: &str) -> std::io::Result<String> {
    let mut stream = connect(port)?;
    stream.write_all(format!("{line}\r\n").as_bytes())?;
    let mut reply = [0_u8; 256];
    let read = stream.read(&mut reply)?;
    Ok(String::from_utf8_lossy(&reply[..read]).into_owned())
}

/// Whether Redis answers PING (a loading Redis answers `-LOADING` instead).
pub(crate) fn redis_answers(port: u16) -> bool {
    redis_command(port, "PING").is_ok_and(|reply| reply.starts_with("+PONG"))
}

/// Whether the broker answers an AMQP 0-9-1 protocol header with a method frame
/// (`connection.start`): the port can accept before the broker is usable.
pub(crate) fn amqp_answers(port: u16) -> bool {
    let Ok(mut stream) = connect(port) else {
        return false;
    };
    let mut frame_type = [0_u8; 1];
    stream.write_all(b"AMQP\x00\x00\x09\x01").is_ok()
        && stream.read_exact(&mut frame_type).is_ok()
        && frame_type[0] == 1
}
