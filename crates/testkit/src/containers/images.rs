//! Which image each server runs from: the official one, or its stand-in built from Debian's
//! packages (`containers/standin/build.sh`) when the official one cannot be had.
//!
//! Decided once per image and process, and said on stderr. `TESTKIT_IMAGES` forces a choice:
//! `official`, `standin`, or `auto` (the default): the official image when the engine has it
//! or can pull it, the stand-in otherwise. A machine with neither fails with what to run.

use std::sync::OnceLock;
use std::time::Duration;

use crate::backend::engine_request;

/// The variable that forces official images or stand-ins.
const IMAGES_VAR: &str = "TESTKIT_IMAGES";
/// Bounds each read of a pull's progress stream (a pull that stops reporting is stuck).
const PULL_READ_TIMEOUT: Duration = Duration::from_secs(120);
/// Bounds each read of an image inspection.
const INSPECT_TIMEOUT: Duration = Duration::from_secs(10);
/// What builds the stand-ins, for the error message.
const BUILD_HINT: &str =
    "sudo bash containers/standin/build.sh (after scripts/container-engine.sh)";

/// An image a server can run from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Image {
    pub(crate) name: &'static str,
    pub(crate) tag: &'static str,
}

impl std::fmt::Display for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.name, self.tag)
    }
}

/// An official image, the stand-in that replaces it, and which of the two this process uses.
#[derive(Debug)]
pub(crate) struct Choice {
    official: Image,
    standin: Image,
    decided: OnceLock<Result<Image, String>>,
}

pub(crate) static POSTGRES: Choice = Choice {
    official: Image {
        name: "postgres",
        tag: "17-alpine",
    },
    // The stand-ins carry the official images' versions (Debian 13's packages).
    standin: Image {
        name: "localhost/bookstore-standin/postgres",
        tag: "17",
    },
    decided: OnceLock::new(),
};
pub(crate) static REDIS: Choice = Choice {
    official: Image {
        name: "redis",
        tag: "7-alpine",
    },
    standin: Image {
        name: "localhost/bookstore-standin/redis",
        tag: "7",
    },
    decided: OnceLock::new(),
};
pub(crate) static RABBITMQ: Choice = Choice {
    official: Image {
        name: "rabbitmq",
        tag: "4-management-alpine",
    },
    standin: Image {
        name: "localhost/bookstore-standin/rabbitmq",
        tag: "4.0-management",
    },
    decided: OnceLock::new(),
};

/// The image to run for `choice`, decided on the first call for it and printed once.
pub(crate) fn image(choice: &'static Choice) -> anyhow::Result<Image> {
    choice
        .decided
        .get_or_init(|| {
            let decided = decide(choice);
            match &decided {
                Ok((image, why)) => eprintln!("testkit: image {image} ({why})"),
                Err(message) => eprintln!("testkit: {message}"),
            }
            decided.map(|(image, _)| image)
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// The image and the reason shown to the user.
fn decide(choice: &Choice) -> Result<(Image, String), String> {
    let requested = std::env::var(IMAGES_VAR).unwrap_or_default();
    match requested.trim().to_ascii_lowercase().as_str() {
        "official" => Ok((choice.official, format!("official; {IMAGES_VAR}=official"))),
        "standin" => standin(choice, format!("{IMAGES_VAR}=standin")),
        "" | "auto" => match obtain(choice.official) {
            Ok(how) => Ok((choice.official, format!("official, {how}"))),
            Err(why) => standin(
                choice,
                format!("{} cannot be pulled: {why}", choice.official),
            ),
        },
        other => Err(format!(
            "{IMAGES_VAR}={other:?} is not understood; use official, standin or auto"
        )),
    }
}

fn standin(choice: &Choice, why: String) -> Result<(Image, String), String> {
    match present(choice.standin) {
        Ok(true) => Ok((
            choice.standin,
            format!("stand-in from Debian packages; {why}"),
        )),
        Ok(false) => Err(format!(
            "no image for {}: {why}; and the stand-in {} is not built: run {BUILD_HINT}",
            choice.official, choice.standin
        )),
        Err(error) => Err(format!(
            "cannot ask the engine about {}: {error}",
            choice.standin
        )),
    }
}

/// Makes sure the engine has `image`: already present, or pulled now. Says which.
fn obtain(image: Image) -> Result<&'static str, String> {
    if present(image)? {
        return Ok("present");
    }
    let path = format!("/images/create?fromImage={}&tag={}", image.name, image.tag);
    let (status, body) = engine_request("POST", &path, PULL_READ_TIMEOUT)?;
    // A failed pull can still answer 200: the error is then a line of the progress stream.
    if status != 200 || body.contains("\"error\"") {
        return Err(pull_error(status, &body));
    }
    Ok("pulled")
}

fn present(image: Image) -> Result<bool, String> {
    let (status, body) = engine_request("GET", &format!("/images/{image}/json"), INSPECT_TIMEOUT)?;
    match status {
        200 => Ok(true),
        404 => Ok(false),
        other => Err(format!(
            "inspecting {image} answered {other}: {}",
            first_line(&body)
        )),
    }
}

/// The engine's own words for a failed pull, short enough for one line.
fn pull_error(status: u16, body: &str) -> String {
    let message = body
        .lines()
        .rev()
        .find_map(|line| line.split_once("\"error\":\"").map(|(_, rest)| rest))
        // The error is the line's last field: cut its closing quote and brace, unescape.
        .map(|rest| {
            let rest = rest.trim_end();
            rest.strip_suffix("\"}")
                .unwrap_or(rest)
                .replace("\\\"", "\"")
        })
        .unwrap_or_else(|| first_line(body).to_owned());
    format!("pull answered {status}: {message}")
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("").trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_error_quotes_the_engine() {
        let body = r#"{"progressDetail":{},"errorDetail":{"message":"x"},"error":"initializing source docker://postgres:17-alpine: pinging container registry registry-1.docker.io: Get \"https://registry-1.docker.io/v2/\": no such host"}"#;
        assert_eq!(
            pull_error(200, body),
            "pull answered 200: initializing source docker://postgres:17-alpine: pinging container registry registry-1.docker.io: Get \"https://registry-1.docker.io/v2/\": no such host"
        );
    }

    #[test]
    fn pull_error_without_a_json_error_shows_the_answer() {
        assert_eq!(pull_error(500, "boom\nmore"), "pull answered 500: boom");
    }

    #[test]
    fn images_name_themselves_as_docker_does() {
        assert_eq!(
            POSTGRES.standin.to_string(),
            "localhost/bookstore-standin/postgres:17"
        );
        assert_eq!(
            RABBITMQ.official.to_string(),
            "rabbitmq:4-management-alpine"
        );
    }
}
