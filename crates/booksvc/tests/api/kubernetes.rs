//! `deploy/k8s/` checked against the code, like `compose.rs` checks docker-compose.yaml: no
//! cluster runs here, so a renamed variable, a moved port, a probe route that does not exist
//! or a grace period shorter than the service's own shutdown fails this test instead of a
//! rollout. Schemas are checked by `scripts/validate-k8s.sh` (kubernetes-validate --strict).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use serde_norway::Value;

use crate::compose::{ROOT, booksvc_variables, storagesvc_variables};
use crate::helpers::TestStack;

/// Every manifest under deploy/k8s as (path relative to it, document).
fn manifests() -> Vec<(String, Value)> {
    let mut found = Vec::new();
    let mut dirs = vec![Path::new(ROOT).join("deploy/k8s")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|ext| ext == "yaml") {
                let text = std::fs::read_to_string(&path).expect("a manifest is readable");
                let name = path.display().to_string();
                let doc: Value = serde_norway::from_str(&text)
                    .unwrap_or_else(|e| panic!("{name} is one YAML document: {e}"));
                found.push((name, doc));
            }
        }
    }
    assert!(found.len() > 5, "deploy/k8s has manifests: {found:?}");
    found
}

fn find<'a>(all: &'a [(String, Value)], kind: &str, name: &str) -> &'a Value {
    all.iter()
        .map(|(_, doc)| doc)
        .find(|doc| {
            doc["kind"].as_str() == Some(kind) && doc["metadata"]["name"].as_str() == Some(name)
        })
        .unwrap_or_else(|| panic!("deploy/k8s has no {kind} {name}"))
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("expected a scalar, got {other:?}"),
    }
}

fn duration(value: &str) -> Duration {
    humantime::parse_duration(value).unwrap_or_else(|e| panic!("duration {value:?}: {e}"))
}

/// One service's Deployment with what its container reads: the ConfigMap it takes whole
/// (`envFrom`) and its `env` entries.
struct Workload<'a> {
    name: &'static str,
    deployment: &'a Value,
    container: &'a Value,
    config: &'a Value,
}

impl<'a> Workload<'a> {
    fn new(all: &'a [(String, Value)], name: &'static str) -> Workload<'a> {
        let deployment = find(all, "Deployment", name);
        let containers = deployment["spec"]["template"]["spec"]["containers"]
            .as_sequence()
            .expect("containers");
        assert_eq!(containers.len(), 1, "{name}: one container");
        let container = &containers[0];
        let refs = container["envFrom"]
            .as_sequence()
            .expect("envFrom a ConfigMap");
        assert_eq!(refs.len(), 1, "{name}: one envFrom");
        let config_name = refs[0]["configMapRef"]["name"]
            .as_str()
            .expect("a configMapRef");
        Workload {
            name,
            deployment,
            container,
            config: &find(all, "ConfigMap", config_name)["data"],
        }
    }

    fn config(&self, key: &str) -> Option<String> {
        self.config.get(key).map(text)
    }

    /// Every variable the container gets: the ConfigMap's keys and the `env` names.
    fn variables(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .config
            .as_mapping()
            .expect("ConfigMap data is a map")
            .keys()
            .map(text)
            .collect();
        names.extend(self.env().map(|(name, _)| name));
        names
    }

    fn env(&self) -> impl Iterator<Item = (String, &'a Value)> + 'a {
        self.container["env"]
            .as_sequence()
            .into_iter()
            .flatten()
            .map(|entry| (text(&entry["name"]), entry))
    }

    /// The container port named `http`.
    fn http_port(&self) -> u64 {
        self.container["ports"]
            .as_sequence()
            .expect("ports")
            .iter()
            .find(|port| port["name"].as_str() == Some("http"))
            .and_then(|port| port["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("{}: no container port named http", self.name))
    }

    fn probe_path(&self, probe: &str) -> String {
        let get = &self.container[probe]["httpGet"];
        let port = &get["port"];
        assert!(
            port.as_str() == Some("http") || port.as_u64() == Some(self.http_port()),
            "{}: {probe} asks port {port:?}, not the HTTP port",
            self.name
        );
        get["path"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: {probe} is an httpGet", self.name))
            .to_owned()
    }
}

#[test]
fn manifests_name_only_variables_the_binaries_read() {
    let all = manifests();
    for (name, known) in [
        ("storagesvc", storagesvc_variables()),
        ("booksvc", booksvc_variables()),
    ] {
        assert!(known.contains("HTTP_PORT"), "{name}: no variables found");
        for variable in Workload::new(&all, name).variables() {
            assert!(
                known.contains(&variable),
                "deploy/k8s sets {variable} for {name}, which it does not read; it reads {known:?}"
            );
        }
    }
}

/// The write token and the URLs holding passwords come from Secrets, required (not
/// `optional`), and no ConfigMap holds them.
#[test]
fn secrets_come_from_secrets_without_defaults() {
    let all = manifests();
    for (name, secrets) in [
        (
            "storagesvc",
            &["STORAGESVC_WRITE_TOKEN", "DATABASE_URL", "AMQP_URL"][..],
        ),
        ("booksvc", &["AMQP_URL"][..]),
    ] {
        let workload = Workload::new(&all, name);
        for secret in secrets {
            assert!(
                workload.config(secret).is_none(),
                "{name}: {secret} in a ConfigMap"
            );
            let (_, entry) = workload
                .env()
                .find(|(variable, _)| variable.as_str() == *secret)
                .unwrap_or_else(|| panic!("{name} does not get {secret}"));
            assert!(entry.get("value").is_none(), "{name}: {secret} has a value");
            let reference = &entry["valueFrom"]["secretKeyRef"];
            assert!(
                reference["name"].is_string(),
                "{name}: {secret} from a Secret"
            );
            assert_ne!(
                reference["optional"].as_bool(),
                Some(true),
                "{name}: {secret} optional"
            );
        }
    }
    for (path, doc) in &all {
        assert_ne!(
            doc["kind"].as_str(),
            Some("Secret"),
            "{path}: a Secret with values"
        );
    }
}

#[test]
fn ports_services_and_urls_agree_with_http_port() {
    let all = manifests();
    for name in ["storagesvc", "booksvc"] {
        let workload = Workload::new(&all, name);
        let http_port = workload
            .config("HTTP_PORT")
            .expect("HTTP_PORT in the ConfigMap");
        assert_eq!(
            workload.http_port().to_string(),
            http_port,
            "{name}: containerPort"
        );
        let service = find(&all, "Service", name);
        let ports = service["spec"]["ports"]
            .as_sequence()
            .expect("Service ports");
        assert_eq!(ports.len(), 1, "{name}: one Service port");
        let target = &ports[0]["targetPort"];
        assert!(
            target.as_str() == Some("http") || target.as_u64() == Some(workload.http_port()),
            "{name}: Service targetPort {target:?}"
        );
        let labels = &workload.deployment["spec"]["template"]["metadata"]["labels"];
        for (key, value) in service["spec"]["selector"]
            .as_mapping()
            .expect("a selector")
        {
            assert_eq!(&labels[key], value, "{name}: the Service selects its pods");
        }
    }
    let storagesvc_port = find(&all, "Service", "storagesvc")["spec"]["ports"][0]["port"]
        .as_u64()
        .expect("a port");
    assert_eq!(
        Workload::new(&all, "booksvc").config("STORAGESVC_URL"),
        Some(format!("http://storagesvc:{storagesvc_port}")),
        "booksvc reaches storagesvc through its Service"
    );
}

/// Probes ask the real routes (answered for real in the test below), and the kubelet waits
/// for the service's own drain and shutdown before it kills it.
#[test]
fn probes_and_shutdown_match_the_services() {
    let all = manifests();
    for name in ["storagesvc", "booksvc"] {
        let workload = Workload::new(&all, name);
        assert_eq!(
            workload.probe_path("livenessProbe"),
            "/healthz/live",
            "{name}"
        );
        assert_eq!(
            workload.probe_path("readinessProbe"),
            "/healthz/ready",
            "{name}"
        );
        let drain = duration(&workload.config("SHUTDOWN_DRAIN_DELAY").expect("a drain"));
        let timeout = duration(&workload.config("SHUTDOWN_TIMEOUT").expect("a timeout"));
        assert!(
            !drain.is_zero(),
            "{name}: SHUTDOWN_DRAIN_DELAY 0s drops requests on rollout"
        );
        let grace =
            workload.deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
                .as_u64()
                .expect("terminationGracePeriodSeconds");
        assert!(
            Duration::from_secs(grace) > drain + timeout,
            "{name}: grace {grace}s must exceed drain {drain:?} + shutdown timeout {timeout:?}"
        );
    }
}

#[test]
fn pods_run_locked_down_with_requests_and_limits() {
    let all = manifests();
    for name in ["storagesvc", "booksvc"] {
        let workload = Workload::new(&all, name);
        let spec = &workload.deployment["spec"];
        assert_eq!(spec["replicas"].as_u64(), Some(2), "{name}: two replicas");
        let pod = &spec["template"]["spec"]["securityContext"];
        assert_eq!(
            pod["runAsNonRoot"].as_bool(),
            Some(true),
            "{name}: runAsNonRoot"
        );
        assert_eq!(
            pod["seccompProfile"]["type"].as_str(),
            Some("RuntimeDefault"),
            "{name}"
        );
        let container = &workload.container["securityContext"];
        assert_eq!(
            container["readOnlyRootFilesystem"].as_bool(),
            Some(true),
            "{name}"
        );
        assert_eq!(
            container["allowPrivilegeEscalation"].as_bool(),
            Some(false),
            "{name}"
        );
        let dropped: Vec<&str> = container["capabilities"]["drop"]
            .as_sequence()
            .expect("capabilities.drop")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(dropped, ["ALL"], "{name}: drop all capabilities");
        for kind in ["requests", "limits"] {
            for resource in ["cpu", "memory"] {
                assert!(
                    workload.container["resources"][kind]
                        .get(resource)
                        .is_some(),
                    "{name}: resources.{kind}.{resource}"
                );
            }
        }
        let pdb = find(&all, "PodDisruptionBudget", name);
        let labels = &spec["template"]["metadata"]["labels"];
        for (key, value) in pdb["spec"]["selector"]["matchLabels"]
            .as_mapping()
            .expect("labels")
        {
            assert_eq!(
                &labels[key], value,
                "{name}: the PodDisruptionBudget selects its pods"
            );
        }
    }
    let hpa = find(&all, "HorizontalPodAutoscaler", "booksvc");
    assert_eq!(hpa["apiVersion"].as_str(), Some("autoscaling/v2"));
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["kind"].as_str(),
        Some("Deployment")
    );
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["name"].as_str(),
        Some("booksvc")
    );
    assert!(
        hpa["spec"]["minReplicas"].as_u64() >= Some(2),
        "HPA keeps two replicas"
    );
}

/// The overlay's broker: three nodes of one RabbitMQ cluster, the operator's resource.
#[test]
fn the_overlay_runs_a_three_node_rabbitmq_cluster() {
    let all = manifests();
    let cluster = find(&all, "RabbitmqCluster", "rabbitmq");
    assert_eq!(cluster["apiVersion"].as_str(), Some("rabbitmq.com/v1beta1"));
    assert_eq!(cluster["spec"]["replicas"].as_u64(), Some(3));
    let kinds: BTreeSet<&str> = all
        .iter()
        .filter_map(|(_, doc)| doc["kind"].as_str())
        .collect();
    assert!(kinds.contains("Kustomization"), "{kinds:?}");
}

#[tokio::test]
async fn probe_paths_answer_200_on_both_services() -> anyhow::Result<()> {
    let all = manifests();
    let stack = TestStack::spawn().await?;
    for (name, base) in [
        ("booksvc", &stack.address),
        ("storagesvc", &stack.storagesvc),
    ] {
        let workload = Workload::new(&all, name);
        for probe in ["livenessProbe", "readinessProbe"] {
            let path = workload.probe_path(probe);
            let answer = stack.client.get(format!("{base}{path}")).send().await?;
            assert_eq!(answer.status(), StatusCode::OK, "{name} {probe} {path}");
        }
    }
    stack.stop().await
}
