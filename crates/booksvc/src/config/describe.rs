//! [`describe_error`]: a configuration error as one line naming the environment variable;
//! [`or_exit`]: the settings, or that line and the end of the process.

use clap::error::{ContextKind, ContextValue, ErrorKind};

use super::{EXIT_BAD_CONFIG, Settings};

/// The parsed settings, or the end of the process: `--help` and `--version` print and exit 0;
/// a bad value prints one line naming the variable and exits [`EXIT_BAD_CONFIG`].
pub(super) fn or_exit(parsed: Result<Settings, clap::Error>) -> Settings {
    match parsed {
        Ok(settings) => settings,
        Err(err)
            if matches!(
                err.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            ) =>
        {
            err.exit()
        }
        Err(err) => {
            eprintln!("{}: {}", env!("CARGO_PKG_NAME"), describe_error(&err));
            std::process::exit(EXIT_BAD_CONFIG)
        }
    }
}

/// One line for a parse error: `invalid HTTP_PORT "abc": expected PORT, :PORT or HOST:PORT`.
///
/// clap's own rendering is a multi-line usage dump naming the `--flag`; operators set
/// environment variables, so the line names the variable instead.
pub fn describe_error(err: &clap::Error) -> String {
    let context = |kind| match err.get(kind) {
        Some(ContextValue::String(text)) => Some(text.clone()),
        _ => None,
    };
    match (
        context(ContextKind::InvalidArg),
        context(ContextKind::InvalidValue),
    ) {
        (Some(arg), Some(value)) => {
            let reason = std::error::Error::source(err)
                .map_or_else(|| "not accepted".to_owned(), ToString::to_string);
            let argument = argument_of(&arg);
            // A secret's value (a URL with its password, a token) is never echoed: the line
            // goes to container logs. The parsers' reasons never quote the value either.
            match argument.is_secret {
                true => format!("invalid {}: {reason}", argument.variable),
                false => format!("invalid {} {value:?}: {reason}", argument.variable),
            }
        }
        (Some(arg), None) if err.kind() == ErrorKind::ArgumentConflict => {
            match context(ContextKind::PriorArg) {
                Some(prior) => format!(
                    "{} and {} are both set: set only one",
                    variable_of(&prior),
                    variable_of(&arg)
                ),
                None => first_line(&err.to_string()),
            }
        }
        _ => first_line(&err.to_string()),
    }
}

/// The argument clap rendered as `--http-port <HTTP_PORT>`: its environment variable, and
/// whether its value is secret (`hide_env_values`).
struct Argument {
    variable: String,
    is_secret: bool,
}

/// Maps clap's `--http-port <HTTP_PORT>` to the environment variable of that argument.
fn variable_of(rendered_arg: &str) -> String {
    argument_of(rendered_arg).variable
}

fn argument_of(rendered_arg: &str) -> Argument {
    let long = rendered_arg
        .trim_start_matches('-')
        .split(' ')
        .next()
        .unwrap_or_default();
    let command = <Settings as clap::CommandFactory>::command();
    let found = command
        .get_arguments()
        .find(|arg| arg.get_long() == Some(long));
    Argument {
        variable: found.and_then(|arg| arg.get_env()).map_or_else(
            || rendered_arg.to_owned(),
            |env| env.to_string_lossy().into_owned(),
        ),
        // An argument we cannot find is treated as secret: saying less is the safe side.
        is_secret: found.is_none_or(clap::Arg::is_hide_env_values_set),
    }
}

fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    line.trim_start_matches("error: ").to_owned()
}
