//! The broker users compose has: the administrator `bookstore` / `bookstore-dev` (the
//! management UI login) and one least-privilege user per service, created by the same
//! `deploy/rabbitmq/setup-users.sh` compose runs (embedded here at build time). The private
//! broker's default `guest` is deleted afterwards, as compose's broker never has it.
//!
//! The same variables as compose choose names and passwords: `RABBITMQ_USER`/`_PASS`,
//! `STORAGESVC_AMQP_USER`/`_PASS`, `BOOKSVC_AMQP_USER`/`_PASS`, with compose's defaults.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::json;

/// The script compose runs, as it is in the repository.
const SETUP_USERS: &str = include_str!("../../../deploy/rabbitmq/setup-users.sh");
/// The private broker's user before we replace it.
const DEFAULT_USER: (&str, &str) = ("guest", "guest");

/// A user name and its password.
#[derive(Debug, Clone)]
pub(crate) struct Login {
    pub(crate) user: String,
    pub(crate) pass: String,
}

impl Login {
    fn from_env(user_var: &str, pass_var: &str, user: &str, pass: &str) -> anyhow::Result<Self> {
        let login = Self {
            user: std::env::var(user_var).unwrap_or_else(|_| user.to_owned()),
            pass: std::env::var(pass_var).unwrap_or_else(|_| pass.to_owned()),
        };
        // They go into AMQP URLs unescaped, as in compose.
        let url_safe = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._~".contains(c))
        };
        if !url_safe(&login.user) || !url_safe(&login.pass) {
            bail!("{user_var} / {pass_var}: use letters, digits and -._~ only");
        }
        Ok(login)
    }

    /// `amqp://USER:PASS@127.0.0.1:PORT/%2f`
    pub(crate) fn amqp_url(&self, port: u16) -> String {
        format!("amqp://{}:{}@127.0.0.1:{port}/%2f", self.user, self.pass)
    }
}

/// The three logins of the stack's broker.
#[derive(Debug, Clone)]
pub(crate) struct BrokerUsers {
    pub(crate) admin: Login,
    pub(crate) storagesvc: Login,
    pub(crate) booksvc: Login,
}

impl BrokerUsers {
    /// Compose's names and development passwords, or what the same variables say.
    pub(crate) fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            admin: Login::from_env(
                "RABBITMQ_USER",
                "RABBITMQ_PASS",
                "bookstore",
                "bookstore-dev",
            )?,
            storagesvc: Login::from_env(
                "STORAGESVC_AMQP_USER",
                "STORAGESVC_AMQP_PASS",
                "storagesvc",
                "storagesvc-dev",
            )?,
            booksvc: Login::from_env(
                "BOOKSVC_AMQP_USER",
                "BOOKSVC_AMQP_PASS",
                "booksvc",
                "booksvc-dev",
            )?,
        })
    }

    /// Creates the administrator, runs the setup script for the services' users, and
    /// deletes `guest`, through the management API at `api`.
    pub(crate) async fn create(&self, api: &str, http: &reqwest::Client) -> anyhow::Result<()> {
        let (guest, guest_pass) = DEFAULT_USER;
        let admin = &self.admin;
        call(
            http,
            api,
            reqwest::Method::PUT,
            format!("users/{}", admin.user),
            (guest, guest_pass),
            Some(json!({"password": admin.pass, "tags": "administrator"})),
        )
        .await
        .context("create the broker's administrator")?;
        call(
            http,
            api,
            reqwest::Method::PUT,
            format!("permissions/%2F/{}", admin.user),
            (guest, guest_pass),
            Some(json!({"configure": ".*", "write": ".*", "read": ".*"})),
        )
        .await
        .context("give the broker's administrator its permissions")?;
        self.run_setup_script(api).await?;
        if admin.user != guest {
            call(
                http,
                api,
                reqwest::Method::DELETE,
                format!("users/{guest}"),
                (admin.user.as_str(), admin.pass.as_str()),
                None,
            )
            .await
            .context("delete the broker's guest user")?;
        }
        Ok(())
    }

    async fn run_setup_script(&self, api: &str) -> anyhow::Result<()> {
        let output = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(SETUP_USERS)
            .arg("setup-users.sh")
            .env("RABBITMQ_API", api)
            .env("RABBITMQ_USER", &self.admin.user)
            .env("RABBITMQ_PASS", &self.admin.pass)
            .env("RABBITMQ_VHOST", "/")
            .env("STORAGESVC_AMQP_USER", &self.storagesvc.user)
            .env("STORAGESVC_AMQP_PASS", &self.storagesvc.pass)
            .env("BOOKSVC_AMQP_USER", &self.booksvc.user)
            .env("BOOKSVC_AMQP_PASS", &self.booksvc.pass)
            .env("SETUP_WAIT_SECONDS", "30")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .context("run deploy/rabbitmq/setup-users.sh (needs sh)")?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let hint = if stderr.contains("curl") && stderr.contains("not found") {
                " (it needs curl: apt-get install curl)"
            } else {
                ""
            };
            bail!(
                "deploy/rabbitmq/setup-users.sh failed ({}){hint}: {}",
                output.status,
                stderr.trim()
            );
        }
        Ok(())
    }
}

/// One management API call; fails with the status and body unless it succeeds.
async fn call(
    http: &reqwest::Client,
    api: &str,
    method: reqwest::Method,
    path: String,
    (user, pass): (&str, &str),
    body: Option<serde_json::Value>,
) -> anyhow::Result<()> {
    let request = http
        .request(method, format!("{api}/api/{path}"))
        .basic_auth(user, Some(pass))
        .timeout(Duration::from_secs(15));
    let request = match body {
        Some(body) => request.json(&body),
        None => request,
    };
    let response = request.send().await?;
    let status = response.status();
    if !status.is_success() {
        bail!("{status}: {}", response.text().await.unwrap_or_default());
    }
    Ok(())
}
