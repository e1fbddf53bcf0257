//! The commands the running stack takes, from its own terminal or from `stack ctl`.

use std::fmt;
use std::str::FromStr;

/// What the stack runs, by the name commands use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    Postgres,
    Redis,
    Rabbitmq,
    Storagesvc,
    Booksvc,
}

impl Target {
    pub(crate) const ALL: [Target; 5] = [
        Target::Postgres,
        Target::Redis,
        Target::Rabbitmq,
        Target::Storagesvc,
        Target::Booksvc,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Target::Postgres => "postgres",
            Target::Redis => "redis",
            Target::Rabbitmq => "rabbitmq",
            Target::Storagesvc => "storagesvc",
            Target::Booksvc => "booksvc",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What to do to a [`Target`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// A clean shutdown; data is kept.
    Stop,
    /// Start a stopped or killed target again, on the same port and data.
    Start,
    /// SIGKILL, as a crash would.
    Kill,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Command {
    Help,
    Status,
    Act(Action, Target),
}

/// The answer to `help`.
pub(crate) const HELP: &str = "\
commands:
  status                 what runs, with pids, ports, URLs and data directories
  stop  NAME             shut NAME down cleanly (its data is kept)
  start NAME             start NAME again on the same port and data
  kill  NAME             SIGKILL NAME, as a crash would
  help                   this text
NAME is one of: postgres redis rabbitmq storagesvc booksvc
From another terminal: cargo run -p stack -- ctl COMMAND (add --booksvc-port N for a stack
on another port). Ctrl-C stops everything.";

impl FromStr for Command {
    type Err = String;

    fn from_str(line: &str) -> Result<Self, Self::Err> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let action = match words.first().copied() {
            Some("help" | "?") if words.len() == 1 => return Ok(Command::Help),
            Some("status") if words.len() == 1 => return Ok(Command::Status),
            Some("stop") => Action::Stop,
            Some("start") => Action::Start,
            Some("kill") => Action::Kill,
            _ => {
                return Err(format!(
                    "unknown command {line:?}; type `help` for the list"
                ));
            }
        };
        let target = match words.as_slice() {
            [_, name] => Target::ALL
                .into_iter()
                .find(|target| target.name() == name.to_ascii_lowercase()),
            _ => None,
        };
        target
            .map(|target| Command::Act(action, target))
            .ok_or_else(|| {
                format!(
                    "{} takes one of: postgres redis rabbitmq storagesvc booksvc",
                    words[0]
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_command() {
        assert_eq!("help".parse::<Command>(), Ok(Command::Help));
        assert_eq!(" status ".parse::<Command>(), Ok(Command::Status));
        assert_eq!(
            "stop postgres".parse::<Command>(),
            Ok(Command::Act(Action::Stop, Target::Postgres))
        );
        assert_eq!(
            "kill  Booksvc".parse::<Command>(),
            Ok(Command::Act(Action::Kill, Target::Booksvc))
        );
        assert_eq!(
            "start rabbitmq".parse::<Command>(),
            Ok(Command::Act(Action::Start, Target::Rabbitmq))
        );
    }

    #[test]
    fn says_what_is_wrong() {
        let unknown = "reboot".parse::<Command>().unwrap_err();
        assert!(unknown.contains("help"), "{unknown}");
        let no_target = "stop".parse::<Command>().unwrap_err();
        assert!(no_target.contains("postgres redis"), "{no_target}");
        assert!("stop mysql".parse::<Command>().is_err());
        assert!("status postgres".parse::<Command>().is_err());
    }
}
