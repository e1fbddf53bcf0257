//! `docker-compose.yaml` and the `Dockerfile` checked against the code. There is no Docker
//! engine here, so a renamed variable, a moved port or a probe route that no longer exists
//! fails this test instead of a user's first `docker compose up`.

use std::collections::BTreeSet;
use std::process::Command;

use clap::CommandFactory as _;
use reqwest::StatusCode;
use serde_norway::Value;

use crate::helpers::TestStack;

pub(crate) const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
/// The services DESIGN.md promises.
const SERVICES: &[&str] = &["postgres", "redis", "rabbitmq", "storagesvc", "booksvc"];

fn read(file: &str) -> String {
    std::fs::read_to_string(format!("{ROOT}/{file}")).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn compose() -> Value {
    serde_norway::from_str(&read("docker-compose.yaml")).expect("docker-compose.yaml is YAML")
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    compose["services"]
        .get(name)
        .unwrap_or_else(|| panic!("docker-compose.yaml has no service {name}"))
}

/// A service's `environment` as (name, value) pairs, in map or `NAME=value` list form.
fn environment(service: &Value) -> Vec<(String, String)> {
    let text = |value: &Value| match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("environment value {other:?}"),
    };
    match &service["environment"] {
        Value::Mapping(map) => map.iter().map(|(k, v)| (text(k), text(v))).collect(),
        Value::Sequence(list) => list
            .iter()
            .map(|item| {
                let item = text(item);
                let (name, value) = item.split_once('=').unwrap_or((&item, ""));
                (name.to_owned(), value.to_owned())
            })
            .collect(),
        Value::Null => Vec::new(),
        other => panic!("environment {other:?}"),
    }
}

fn variable(service: &Value, name: &str) -> Option<String> {
    environment(service)
        .into_iter()
        .find_map(|(key, value)| (key == name).then_some(value))
}

/// A service's published ports as (host ip, container port) from the short syntax
/// `[IP:]HOST:CONTAINER[/proto]`; no IP means every interface.
fn ports(service: &Value) -> Vec<(Option<String>, String)> {
    let Some(list) = service["ports"].as_sequence() else {
        return Vec::new();
    };
    list.iter()
        .map(|port| {
            let port = match port {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                other => panic!("port {other:?}: use the short string syntax"),
            };
            let port = port.split('/').next().unwrap_or_default();
            let parts: Vec<&str> = port.split(':').collect();
            let ip = (parts.len() == 3).then(|| parts[0].to_owned());
            (ip, parts[parts.len() - 1].to_owned())
        })
        .collect()
}

/// The variables booksvc reads: what its binary's `--help` lists as `[env: NAME...]`.
pub(crate) fn booksvc_variables() -> BTreeSet<String> {
    let output = Command::new(env!("CARGO_BIN_EXE_booksvc"))
        .env_clear()
        .arg("--help")
        .output()
        .expect("booksvc --help runs");
    let help = String::from_utf8_lossy(&output.stdout);
    help.split("[env: ")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect()
        })
        .collect()
}

/// The variables storagesvc reads: the `env` of every argument of `storagesvc::Settings`, the
/// clap definition its binary parses (and renders as `--help`). Taken from the library rather
/// than a `target/debug/storagesvc` that `cargo test -p booksvc` neither builds nor refreshes.
pub(crate) fn storagesvc_variables() -> BTreeSet<String> {
    storagesvc::Settings::command()
        .get_arguments()
        .filter_map(|arg| arg.get_env())
        .map(|name| name.to_string_lossy().into_owned())
        .collect()
}

/// The route the Dockerfile's `HEALTHCHECK` asks for.
fn dockerfile_health_route() -> String {
    let dockerfile = read("Dockerfile");
    let healthcheck = dockerfile
        .find("HEALTHCHECK")
        .map(|at| &dockerfile[at..])
        .expect("the Dockerfile has a HEALTHCHECK");
    let route = healthcheck
        .split("GET ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the HEALTHCHECK does a GET");
    assert!(route.starts_with('/'), "HEALTHCHECK route {route:?}");
    route.to_owned()
}

#[test]
fn compose_runs_every_service_of_the_design() {
    let compose = compose();
    for name in SERVICES {
        service(&compose, name);
    }
}

#[test]
fn service_environments_name_only_variables_the_binaries_read() {
    let compose = compose();
    let cases = [
        ("storagesvc", storagesvc_variables()),
        ("booksvc", booksvc_variables()),
    ];
    for (name, known) in cases {
        assert!(known.contains("HTTP_PORT"), "{name}: no variables found");
        for (variable, _) in environment(service(&compose, name)) {
            assert!(
                known.contains(&variable),
                "compose sets {variable} for {name}, which it does not read; it reads {known:?}"
            );
        }
    }
}

#[test]
fn published_ports_and_urls_follow_each_services_http_port() {
    let compose = compose();
    for name in ["storagesvc", "booksvc"] {
        let service = service(&compose, name);
        let http_port = variable(service, "HTTP_PORT").expect("HTTP_PORT is set");
        let http_port = http_port.rsplit(':').next().unwrap_or_default().to_owned();
        let published = ports(service);
        assert!(!published.is_empty(), "{name} publishes no port");
        for (_, container) in published {
            assert_eq!(container, http_port, "{name}: published port vs HTTP_PORT");
        }
        // The image's ENV HTTP_PORT, EXPOSE and HEALTHCHECK come from this build argument.
        let build_arg = &service["build"]["args"]["HTTP_PORT"];
        assert_eq!(
            build_arg.as_str(),
            Some(http_port.as_str()),
            "{name}: build arg HTTP_PORT"
        );
    }
    let storagesvc_port = variable(service(&compose, "storagesvc"), "HTTP_PORT").unwrap();
    assert_eq!(
        variable(service(&compose, "booksvc"), "STORAGESVC_URL"),
        Some(format!("http://storagesvc:{storagesvc_port}")),
        "booksvc's STORAGESVC_URL must reach storagesvc's HTTP_PORT"
    );
    let database_url = variable(service(&compose, "storagesvc"), "DATABASE_URL").unwrap();
    assert!(database_url.contains("@postgres:5432/"), "{database_url}");
}

/// Every published port is bound to 127.0.0.1 on the host: PostgreSQL, Redis, the management
/// UI (full admin: anyone reaching it can forge events), and the services too — storagesvc
/// takes writes, both expose `/metrics` and readiness details. Docker publishes a bare
/// `HOST:CONTAINER` on every interface, past host firewalls such as ufw.
#[test]
fn every_published_port_is_bound_to_localhost() {
    let compose = compose();
    let services = compose["services"].as_mapping().expect("services is a map");
    for (name, service) in services {
        let name = name.as_str().unwrap_or_default();
        for (ip, container) in ports(service) {
            assert_eq!(
                ip.as_deref(),
                Some("127.0.0.1"),
                "{name} publishes {container} beyond 127.0.0.1"
            );
        }
    }
    let rabbitmq = ports(service(&compose, "rabbitmq"));
    assert!(
        rabbitmq.iter().any(|(_, container)| container == "15672"),
        "the management UI (15672) is published: {rabbitmq:?}"
    );
}

/// The write token has no default: a well-known development token in a file anyone can read
/// lets whoever reaches storagesvc write. Compose refuses to start until the user sets one
/// (`${STORAGESVC_WRITE_TOKEN:?message}`), and no token value is written in the file.
#[test]
fn compose_requires_a_write_token_and_ships_none() {
    let compose = compose();
    let token = variable(service(&compose, "storagesvc"), "STORAGESVC_WRITE_TOKEN")
        .expect("storagesvc gets STORAGESVC_WRITE_TOKEN");
    assert!(
        token.starts_with("${STORAGESVC_WRITE_TOKEN:?") && token.ends_with('}'),
        "STORAGESVC_WRITE_TOKEN must be required without a default, e.g. \
         ${{STORAGESVC_WRITE_TOKEN:?set a token}}; it is {token:?}"
    );
    assert!(
        !read("docker-compose.yaml").contains("dev-token"),
        "docker-compose.yaml names the development token"
    );
}

/// A one-shot service (`restart: "no"`, no published port) runs to completion, e.g. the
/// broker users' setup; dependants wait for `service_completed_successfully` instead of a
/// health check.
fn is_one_shot(service: &Value) -> bool {
    service["restart"].as_str() == Some("no") && ports(service).is_empty()
}

#[test]
fn every_service_has_a_healthcheck_and_dependencies_wait_until_healthy() {
    let compose = compose();
    let dockerfile_has_healthcheck = read("Dockerfile").contains("\nHEALTHCHECK");
    let services = compose["services"].as_mapping().expect("services is a map");
    for (name, service) in services {
        let name = name.as_str().expect("service names are strings");
        // Our services are built from the Dockerfile and take its HEALTHCHECK.
        let built_here = service.get("build").is_some();
        assert!(
            service.get("healthcheck").is_some()
                || (built_here && dockerfile_has_healthcheck)
                || is_one_shot(service),
            "{name} has no healthcheck"
        );
        let Some(depends_on) = service.get("depends_on") else {
            continue;
        };
        let depends_on = depends_on
            .as_mapping()
            .unwrap_or_else(|| panic!("{name}: depends_on must be a map with conditions"));
        for (dependency, rule) in depends_on {
            let dependency = dependency.as_str().unwrap_or_default();
            let target = services
                .get(dependency)
                .unwrap_or_else(|| panic!("{name} depends on unknown {dependency}"));
            let expected = match is_one_shot(target) {
                true => "service_completed_successfully",
                false => "service_healthy",
            };
            assert_eq!(
                rule["condition"].as_str(),
                Some(expected),
                "{name} → {dependency}"
            );
        }
    }
}

/// The one-shot `rabbitmq-users` runs deploy/rabbitmq/setup-users.sh (the one place the
/// per-service users and permissions are written; `tests/operations/broker_users.rs` runs it
/// against a real broker), and each service connects as the user it creates, never as the
/// administrator.
#[test]
fn the_services_connect_as_the_broker_users_the_setup_script_creates() {
    const SCRIPT: &str = "deploy/rabbitmq/setup-users.sh";
    let compose = compose();
    let setup = service(&compose, "rabbitmq-users");
    assert!(is_one_shot(setup), "rabbitmq-users runs once and exits");
    let entrypoint: Vec<&str> = setup["entrypoint"]
        .as_sequence()
        .expect("rabbitmq-users has an entrypoint list")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(entrypoint, ["sh", &format!("/{SCRIPT}")]);
    let mounts: Vec<&str> = setup["volumes"]
        .as_sequence()
        .expect("rabbitmq-users mounts the script")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        mounts.contains(&"./deploy/rabbitmq:/deploy/rabbitmq:ro"),
        "{mounts:?}"
    );

    // Every variable compose gives the script is one it reads.
    let script = read(SCRIPT);
    let setup_env = environment(setup);
    for (variable, _) in &setup_env {
        assert!(
            script.contains(&format!("${{{variable}")),
            "compose sets {variable} for rabbitmq-users; {SCRIPT} does not read it"
        );
    }
    let setup_var = |name: &str| {
        setup_env
            .iter()
            .find_map(|(key, value)| (key == name).then(|| value.clone()))
            .unwrap_or_else(|| panic!("rabbitmq-users does not set {name}"))
    };
    // The administrator it logs in as is the broker's (the UI login).
    let rabbitmq = service(&compose, "rabbitmq");
    assert_eq!(
        variable(rabbitmq, "RABBITMQ_DEFAULT_USER"),
        Some(setup_var("RABBITMQ_USER"))
    );
    assert_eq!(
        variable(rabbitmq, "RABBITMQ_DEFAULT_PASS"),
        Some(setup_var("RABBITMQ_PASS"))
    );
    assert_eq!(setup_var("RABBITMQ_API"), "http://rabbitmq:15672");

    for (name, prefix) in [("storagesvc", "STORAGESVC"), ("booksvc", "BOOKSVC")] {
        let service = service(&compose, name);
        let expected = format!(
            "amqp://{}:{}@rabbitmq:5672/%2f",
            setup_var(&format!("{prefix}_AMQP_USER")),
            setup_var(&format!("{prefix}_AMQP_PASS"))
        );
        assert_eq!(
            variable(service, "AMQP_URL"),
            Some(expected),
            "{name} connects as the user rabbitmq-users creates for it"
        );
        assert_eq!(
            service["depends_on"]["rabbitmq-users"]["condition"].as_str(),
            Some("service_completed_successfully"),
            "{name} starts after its broker user exists"
        );
    }
}

/// Every long-running service comes back after a crash or an out-of-memory kill (a
/// `DB_STARTUP_TIMEOUT` exit or an OOM would otherwise be final), and none can take the
/// machine's memory.
#[test]
fn services_restart_and_have_memory_limits() {
    let compose = compose();
    let services = compose["services"].as_mapping().expect("services is a map");
    for (name, service) in services {
        let name = name.as_str().unwrap_or_default();
        if !is_one_shot(service) {
            let restart = service["restart"].as_str();
            assert!(
                matches!(restart, Some("unless-stopped" | "always" | "on-failure")),
                "{name}: restart policy {restart:?}"
            );
        }
        assert!(
            service.get("mem_limit").is_some(),
            "{name} has no mem_limit"
        );
    }
}

/// No process may gain privileges (setuid binaries): `no-new-privileges` everywhere. Our
/// services and the one-shot also run with a read-only root filesystem and no capabilities;
/// the database, cache and broker images need theirs to drop from root to their own users.
#[test]
fn containers_run_without_new_privileges_and_ours_read_only_without_capabilities() {
    let compose = compose();
    let services = compose["services"].as_mapping().expect("services is a map");
    for (name, service) in services {
        let name = name.as_str().unwrap_or_default();
        let options: Vec<&str> = service["security_opt"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            options.contains(&"no-new-privileges:true"),
            "{name}: security_opt {options:?}"
        );
    }
    for name in ["storagesvc", "booksvc", "rabbitmq-users"] {
        let service = service(&compose, name);
        assert_eq!(
            service["read_only"].as_bool(),
            Some(true),
            "{name}: read_only"
        );
        let dropped: Vec<&str> = service["cap_drop"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(dropped, ["ALL"], "{name}: cap_drop");
    }
}

/// Prometheus reads deploy/prometheus (its scrape targets are compose's services on their
/// HTTP ports, and RabbitMQ's Prometheus endpoint, whose plugin compose enables), Grafana
/// reads deploy/grafana's provisioning, whose datasource points at that Prometheus.
#[test]
fn prometheus_and_grafana_read_the_checked_in_configuration() {
    let compose = compose();
    let mounts = |name: &str| -> Vec<String> {
        service(&compose, name)["volumes"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect()
    };
    assert!(mounts("prometheus").contains(&"./deploy/prometheus:/etc/prometheus:ro".to_owned()));
    assert!(mounts("rabbitmq").contains(
        &"./deploy/rabbitmq/enabled_plugins:/etc/rabbitmq/enabled_plugins:ro".to_owned()
    ));
    assert!(read("deploy/rabbitmq/enabled_plugins").contains("rabbitmq_prometheus"));
    let config: Value = serde_norway::from_str(&read("deploy/prometheus/prometheus.yml"))
        .expect("prometheus.yml parses");
    let targets: BTreeSet<String> = config["scrape_configs"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|job| job["static_configs"].as_sequence().into_iter().flatten())
        .flat_map(|group| group["targets"].as_sequence().into_iter().flatten())
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    for (name, port) in [("booksvc", "8081"), ("storagesvc", "8082")] {
        assert_eq!(
            variable(service(&compose, name), "HTTP_PORT").as_deref(),
            Some(port)
        );
        assert!(targets.contains(&format!("{name}:{port}")), "{targets:?}");
    }
    assert!(targets.contains("rabbitmq:15692"), "{targets:?}");

    let grafana = mounts("grafana");
    assert!(
        grafana.contains(&"./deploy/grafana/provisioning:/etc/grafana/provisioning:ro".to_owned())
    );
    assert!(grafana.contains(&"./deploy/grafana/dashboards:/etc/grafana/dashboards:ro".to_owned()));
    let datasources = read("deploy/grafana/provisioning/datasources/prometheus.yml");
    assert!(
        datasources.contains("url: http://prometheus:9090"),
        "{datasources}"
    );
}

#[tokio::test]
async fn the_dockerfile_healthcheck_route_answers_200_on_both_services() -> anyhow::Result<()> {
    let route = dockerfile_health_route();
    let stack = TestStack::spawn().await?;

    let booksvc = stack.get(&route).await?;
    let storagesvc = stack
        .client
        .get(format!("{}{route}", stack.storagesvc))
        .send()
        .await?;

    assert_eq!(booksvc.status(), StatusCode::OK, "booksvc {route}");
    assert_eq!(storagesvc.status(), StatusCode::OK, "storagesvc {route}");
    stack.stop().await
}
