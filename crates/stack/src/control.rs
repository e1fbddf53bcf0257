//! Commands from another terminal: the running stack listens on a Unix socket in its state
//! dir, `$TMPDIR/bookstore-stack-<booksvc port>/ctl.sock` (mode 0700: only its user can send
//! commands), and `stack ctl COMMAND` sends one line and prints the answer.
//!
//! Protocol: the client writes one command line and closes its side; the stack answers `ok`
//! or `error` on the first line, then the text, and closes.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};

use crate::commands::Command;

/// A command for the stack's command loop, with where to send the answer.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) command: Command,
    pub(crate) reply: oneshot::Sender<Reply>,
}

/// The answer to a command.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) ok: bool,
    pub(crate) text: String,
}

impl Reply {
    pub(crate) fn ok(text: impl Into<String>) -> Self {
        Self {
            ok: true,
            text: text.into(),
        }
    }

    pub(crate) fn error(text: impl Into<String>) -> Self {
        Self {
            ok: false,
            text: text.into(),
        }
    }
}

/// Longest command line accepted on the socket.
const MAX_LINE: u64 = 1024;
/// The slowest command (starting RabbitMQ on a loaded machine) takes well under this.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(300);

/// Where the stack whose booksvc listens on `booksvc_port` keeps its control socket.
pub(crate) fn state_dir(booksvc_port: u16) -> PathBuf {
    std::env::temp_dir().join(format!("bookstore-stack-{booksvc_port}"))
}

fn socket_path(dir: &Path) -> PathBuf {
    dir.join("ctl.sock")
}

/// The state dir with the bound control socket; removed on drop.
#[derive(Debug)]
pub(crate) struct ControlSocket {
    dir: PathBuf,
    listener: Option<UnixListener>,
}

impl ControlSocket {
    /// Creates the state dir and binds the socket; fails if another stack answers there.
    pub(crate) fn bind(booksvc_port: u16) -> anyhow::Result<Self> {
        let dir = state_dir(booksvc_port);
        let socket = socket_path(&dir);
        if dir.exists() {
            if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                bail!(
                    "a stack with booksvc on port {booksvc_port} is already running (control socket {})",
                    socket.display()
                );
            }
            // Left by a stack that was killed: nothing listens any more.
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("remove the stale state dir {}", dir.display()))?;
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("create the state dir {}", dir.display()))?;
        let mut this = Self {
            dir,
            listener: None,
        };
        // Dropping `this` on failure removes the dir again.
        this.listener = Some(
            UnixListener::bind(&socket)
                .with_context(|| format!("listen on {}", socket.display()))?,
        );
        Ok(this)
    }

    /// Answers connections until the stack exits: each gets its command run by the loop
    /// that receives from `requests`.
    pub(crate) fn serve(&mut self, requests: mpsc::Sender<Request>) {
        let Some(listener) = self.listener.take() else {
            return;
        };
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(answer(stream, requests.clone()));
            }
        });
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn answer(stream: tokio::net::UnixStream, requests: mpsc::Sender<Request>) {
    let (reader, mut writer) = stream.into_split();
    let mut line = String::new();
    let read = reader.take(MAX_LINE).read_to_string(&mut line).await;
    let reply = match read.map_err(|e| e.to_string()).and_then(|_| line.parse()) {
        Ok(command) => ask(&requests, command).await,
        Err(message) => Reply::error(message),
    };
    let status = if reply.ok { "ok" } else { "error" };
    let _ = writer
        .write_all(format!("{status}\n{}\n", reply.text).as_bytes())
        .await;
    let _ = writer.shutdown().await;
}

/// Hands `command` to the command loop and waits for its answer.
pub(crate) async fn ask(requests: &mpsc::Sender<Request>, command: Command) -> Reply {
    let (reply, answer) = oneshot::channel();
    if requests.send(Request { command, reply }).await.is_err() {
        return Reply::error("the stack is stopping");
    }
    answer
        .await
        .unwrap_or_else(|_| Reply::error("the stack is stopping"))
}

/// `stack ctl COMMAND…`: sends the command to the running stack and prints its answer.
/// Exit code 0 when it succeeded, 1 when it failed, 2 when no stack answers.
pub(crate) fn client(booksvc_port: u16, words: &[String]) -> ExitCode {
    let socket = socket_path(&state_dir(booksvc_port));
    let mut stream = match std::os::unix::net::UnixStream::connect(&socket) {
        Ok(stream) => stream,
        Err(err) => {
            eprintln!(
                "stack ctl: no stack with booksvc on port {booksvc_port} answers at {} ({err}); \
                 start one with `cargo run -p stack`, or name its port with --booksvc-port",
                socket.display()
            );
            return ExitCode::from(2);
        }
    };
    let mut answer = String::new();
    let exchange = stream
        .set_read_timeout(Some(CLIENT_TIMEOUT))
        .and_then(|()| stream.write_all(format!("{}\n", words.join(" ")).as_bytes()))
        .and_then(|()| stream.shutdown(std::net::Shutdown::Write))
        .and_then(|()| stream.read_to_string(&mut answer));
    if let Err(err) = exchange {
        eprintln!("stack ctl: {}: {err}", socket.display());
        return ExitCode::from(2);
    }
    match answer.split_once('\n') {
        Some(("ok", text)) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Some(("error", text)) => {
            eprint!("stack ctl: {text}");
            ExitCode::FAILURE
        }
        _ => {
            eprintln!("stack ctl: the stack closed the connection without an answer (stopping?)");
            ExitCode::from(2)
        }
    }
}
