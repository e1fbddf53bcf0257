//! Where a local server's binaries come from: this machine's Debian packages, or the packages
//! unpacked in a root filesystem of another Debian release (e.g. Debian 13's RabbitMQ 4.0 and
//! PostgreSQL 17 next to this machine's Debian 12), chosen per server by an environment
//! variable (`TESTKIT_RABBITMQ_ROOT`, `TESTKIT_POSTGRES_ROOT`).
//!
//! A root's binaries need that root's C library and files, so they run chrooted into it, in a
//! private mount namespace that sees the machine's `/dev`, a fresh `/proc` and the temporary
//! directory at the same paths as outside: the scratch dirs, and so every path the servers are
//! given, mean the same inside and out. The network namespace is the machine's, so ports
//! behave as for any local server. The namespace and its mounts vanish with its last process.
//! `unshare`, `sh` and `chroot` each replace themselves (`exec`), so the pid we start is the
//! server's, and signals and process groups work as without a root.
//!
//! Every process says once on stderr, past the test harness's capture, which version of each
//! server it runs: the version of the Debian package in the root (or on the machine).

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use anyhow::{Context as _, bail};

/// Mounts what a server needs into the root, then runs the command chrooted, as `$3` when
/// given (numeric `uid:gid`), in the caller's working directory when the root has it (the
/// scratch dirs, which servers are started in) and in `/` otherwise. Exit 125: a mount failed.
const ENTER_ROOT_SCRIPT: &str = r#"
root=$1; tmp=$2; user=$3; shift 3
mount --rbind /dev "$root/dev" && mount -t proc proc "$root/proc" \
    && mkdir -p "$root$tmp" && mount --bind "$tmp" "$root$tmp" || exit 125
exec chroot ${user:+--userspec="$user"} "$root" /bin/sh -c '{ cd "$0" || cd /; } 2>/dev/null && exec "$@"' "$PWD" "$@"
"#;

/// Where one server's binaries are installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Install {
    /// `None`: this machine's own packages.
    root: Option<PathBuf>,
}

/// A system account a server runs as, numeric as the install's `/etc/passwd` has it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SystemUser {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

impl Install {
    /// The install named by the variable `var` (a root filesystem's directory), or this
    /// machine's packages when it is unset or empty.
    pub(crate) fn from_env(var: &str) -> anyhow::Result<Self> {
        Self::from_value(var, std::env::var_os(var))
    }

    /// [`Self::from_env`] for the value `value` of `var`.
    fn from_value(var: &str, value: Option<std::ffi::OsString>) -> anyhow::Result<Self> {
        let Some(root) = value.filter(|value| !value.is_empty()) else {
            return Ok(Self { root: None });
        };
        let root = PathBuf::from(root);
        if !root.join("bin/sh").is_file() {
            bail!(
                "{var}={} is not a root filesystem (no bin/sh in it); \
                 build one with: sudo bash containers/standin/build-root.sh",
                root.display()
            );
        }
        Ok(Self { root: Some(root) })
    }

    /// Whether the servers run from the machine's own packages.
    pub(crate) fn is_machine(&self) -> bool {
        self.root.is_none()
    }

    /// Where `path` (as the server sees it) is found from outside.
    pub(crate) fn outside(&self, path: &Path) -> PathBuf {
        match &self.root {
            Some(root) => root.join(path.strip_prefix("/").unwrap_or(path)),
            None => path.to_owned(),
        }
    }

    /// A command running `program` from this install, as `user` when given. Arguments,
    /// environment and working directory are the caller's to add, as for [`Command::new`].
    pub(crate) fn command(&self, program: impl AsRef<OsStr>, user: Option<SystemUser>) -> Command {
        use std::os::unix::process::CommandExt as _;
        let Some(root) = &self.root else {
            let mut command = Command::new(program);
            if let Some(user) = user {
                command.uid(user.uid).gid(user.gid);
            }
            return command;
        };
        let user = user.map_or(String::new(), |u| format!("{}:{}", u.uid, u.gid));
        let mut command = Command::new("unshare");
        command
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(ENTER_ROOT_SCRIPT)
            .arg("testkit-enter-root")
            .arg(root)
            .arg(std::env::temp_dir())
            .arg(user)
            .arg(program);
        command
    }

    /// The account `name` of this install (a root has its own `/etc/passwd`).
    pub(crate) fn user(&self, name: &str) -> anyhow::Result<SystemUser> {
        let passwd_path = self.outside(Path::new("/etc/passwd"));
        let passwd = std::fs::read_to_string(&passwd_path)
            .with_context(|| format!("read {}", passwd_path.display()))?;
        passwd
            .lines()
            .map(|line| line.split(':').collect::<Vec<_>>())
            .find(|fields| fields.first() == Some(&name))
            .and_then(|fields| {
                Some(SystemUser {
                    uid: fields.get(2)?.parse().ok()?,
                    gid: fields.get(3)?.parse().ok()?,
                })
            })
            .with_context(|| format!("no system user {name:?} in {}", passwd_path.display()))
    }

    /// The version of Debian package `package` in this install, from dpkg's database.
    pub(crate) fn package_version(&self, package: &str) -> Option<String> {
        let status = std::fs::read_to_string(self.outside(Path::new("/var/lib/dpkg/status")));
        package_version(&status.ok()?, package)
    }

    /// Says once per process and server which version runs, and from where. Written straight
    /// to stderr: the harness captures `eprintln!` of passing tests, and a run must show what
    /// it ran against.
    pub(crate) fn announce(&self, server: &str, package: &str) {
        static SAID: Mutex<Option<HashSet<String>>> = Mutex::new(None);
        let line = format!(
            "testkit: {server} {} (Debian package {package}, {})\n",
            self.package_version(package)
                .unwrap_or_else(|| "of unknown version".to_owned()),
            match &self.root {
                Some(root) => format!("root filesystem {}", root.display()),
                None => "this machine".to_owned(),
            }
        );
        let mut said = SAID
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if said.get_or_insert_with(HashSet::new).insert(line.clone()) {
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    }
}

/// Fails when `var` names a root filesystem: only the local backend runs one, and a run asked
/// for another version must not silently test an image's instead.
pub(crate) fn refuse_root(var: &str) -> anyhow::Result<()> {
    match std::env::var_os(var) {
        Some(value) if !value.is_empty() => bail!(
            "{var} names a root filesystem, which only the local backend runs; \
             unset it or set TESTKIT_BACKEND=local"
        ),
        _ => Ok(()),
    }
}

/// The `Version:` of the installed `package` in a dpkg status file's text.
fn package_version(status: &str, package: &str) -> Option<String> {
    status
        .split("\n\n")
        .find(|stanza| {
            let has = |wanted: &dyn Fn(&str) -> bool| stanza.lines().any(wanted);
            has(&|line| line.strip_prefix("Package: ") == Some(package))
                && has(&|line| line.starts_with("Status: ") && line.ends_with(" installed"))
        })?
        .lines()
        .find_map(|line| line.strip_prefix("Version: "))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Package: rabbitmq-server\nStatus: deinstall ok config-files\n\
        Version: 3.9.0-1\n\nPackage: postgresql-17\nStatus: install ok installed\n\
        Version: 17.6-0+deb13u1\n\nPackage: rabbitmq-server\nStatus: install ok installed\n\
        Version: 4.0.5-6\n";

    #[test]
    fn package_version_reads_the_installed_stanza() {
        assert_eq!(
            package_version(STATUS, "rabbitmq-server").as_deref(),
            Some("4.0.5-6")
        );
        assert_eq!(
            package_version(STATUS, "postgresql-17").as_deref(),
            Some("17.6-0+deb13u1")
        );
        assert_eq!(package_version(STATUS, "postgresql-15"), None);
    }

    #[test]
    fn outside_paths_are_under_the_root() {
        let install = Install {
            root: Some(PathBuf::from("/srv/root")),
        };
        assert_eq!(
            install.outside(Path::new("/usr/lib/rabbitmq/bin")),
            Path::new("/srv/root/usr/lib/rabbitmq/bin")
        );
        let machine = Install { root: None };
        assert_eq!(
            machine.outside(Path::new("/etc/passwd")),
            Path::new("/etc/passwd")
        );
    }

    #[test]
    fn unset_or_empty_means_the_machine() {
        for value in [None, Some("".into())] {
            let install = Install::from_value("TESTKIT_X_ROOT", value).unwrap();
            assert!(install.is_machine());
        }
    }

    #[test]
    fn a_directory_without_a_shell_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let install = Install::from_value("TESTKIT_X_ROOT", Some(dir.path().into()));
        let message = format!("{:#}", install.unwrap_err());
        assert!(message.contains("not a root filesystem"), "{message}");
    }
}
