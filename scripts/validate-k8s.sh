#!/usr/bin/env bash
# Validates the Kubernetes manifests in deploy/k8s offline, file by file (no cluster, no
# kubectl or kustomize: neither installs from the registries CI reaches).
#
# - Every manifest: `kubernetes-validate --strict` (PyPI; it bundles the Kubernetes JSON
#   schemas, so nothing is fetched) against the oldest and the newest Kubernetes this
#   deployment claims. Unknown fields, wrong types and missing required fields fail.
# - Kinds without a bundled schema are skipped by kubernetes-validate with a warning. Two are
#   expected and handled here instead; any other one fails:
#   - Kustomization: every file it lists exists, and every manifest beside it is listed.
#   - RabbitmqCluster (the RabbitMQ cluster operator's CRD): its top-level fields are checked
#     against the operator's v1beta1 spec, and the core types it embeds (`resources`,
#     `affinity`) are validated strictly by placing them in a Pod. The rest of the custom
#     resource (e.g. `rabbitmq.additionalConfig`'s contents) is not validated.
# kubernetes-validate is installed on first use into its own virtualenv
# (KUBERNETES_VALIDATE_VENV, default ~/.cache/bookstore/kubernetes-validate).
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=1.37.0 # kubernetes-validate, pinned: its bundled schemas decide what passes
KUBERNETES=("1.29.0" "1.37.0")
VENV=${KUBERNETES_VALIDATE_VENV:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/bookstore/kubernetes-validate}

if [ "$("$VENV/bin/kubernetes-validate" --version 2>/dev/null)" != "$VERSION" ]; then
  echo "installing kubernetes-validate $VERSION into $VENV"
  python3 -m venv "$VENV" || {
    echo "validate-k8s: python3 -m venv failed (Debian: apt-get install python3-venv)" >&2
    exit 1
  }
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$VERSION"
fi

mapfile -t files < <(find deploy/k8s -name '*.yaml' | sort)
[ ${#files[@]} -gt 0 ] || { echo "validate-k8s: no manifests under deploy/k8s" >&2; exit 1; }

failed=0
for k8s in "${KUBERNETES[@]}"; do
  echo "kubernetes-validate --strict, Kubernetes $k8s: ${#files[@]} files"
  if ! out=$("$VENV/bin/kubernetes-validate" --strict --quiet -k "$k8s" "${files[@]}" 2>&1); then
    failed=1
  fi
  # Warnings are what it could not check: only the two kinds handled below may be among them.
  unexpected=$(printf '%s\n' "$out" | grep -v -e '^$' \
    -e "Couldn't find schema for kind Kustomization with api version kustomize.config.k8s.io/" \
    -e "Couldn't find schema for kind RabbitmqCluster with api version rabbitmq.com/v1beta1 " \
    || true)
  if [ -n "$unexpected" ]; then
    printf '%s\n' "$unexpected" >&2
    failed=1
  fi
done
[ $failed -eq 0 ] || { echo "validate-k8s: FAILED (above)" >&2; exit 1; }

"$VENV/bin/python" - "${files[@]}" <<'EOF'
"""What kubernetes-validate has no schema for: Kustomization and RabbitmqCluster."""
import os, sys
import yaml
import kubernetes_validate

errors = []
skipped = []
for path in sys.argv[1:]:
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    if len(docs) != 1:
        errors.append(f"{path}: one manifest per file, found {len(docs)}")
        continue
    doc = docs[0]
    kind = doc.get("kind")
    here = os.path.dirname(path)
    if kind == "Kustomization":
        listed = doc.get("resources", [])
        for entry in listed:
            target = os.path.normpath(os.path.join(here, entry))
            if not (os.path.isfile(target) or os.path.isfile(os.path.join(target, "kustomization.yaml"))):
                errors.append(f"{path}: lists {entry}, which does not exist")
        for name in sorted(os.listdir(here)):
            if name.endswith(".yaml") and name != "kustomization.yaml" and name not in listed:
                errors.append(f"{path}: does not list {name}, beside it")
        print(f"ok {path}: {len(listed)} resources, all present, none left out")
    elif kind == "RabbitmqCluster":
        # Top-level fields of rabbitmq.com/v1beta1 RabbitmqCluster.spec (cluster operator 2.x).
        known = {"replicas", "image", "imagePullSecrets", "service", "persistence", "resources",
                 "affinity", "tolerations", "rabbitmq", "tls", "skipPostDeploySteps",
                 "terminationGracePeriodSeconds", "delayStartSeconds", "override", "secretBackend",
                 "autoEnableAllFeatureFlags"}
        spec = doc.get("spec", {})
        for key in sorted(set(spec) - known):
            errors.append(f"{path}: RabbitmqCluster.spec.{key} is not a field of the CRD")
        for key in sorted(set(spec.get("rabbitmq", {})) - {"additionalConfig", "additionalPlugins",
                "advancedConfig", "envConfig", "erlangInetConfig"}):
            errors.append(f"{path}: RabbitmqCluster.spec.rabbitmq.{key} is not a field of the CRD")
        for key in sorted(set(spec.get("persistence", {})) - {"storageClassName", "storage"}):
            errors.append(f"{path}: RabbitmqCluster.spec.persistence.{key} is not a field of the CRD")
        if not isinstance(spec.get("replicas"), int) or spec["replicas"] < 1:
            errors.append(f"{path}: RabbitmqCluster.spec.replicas must be a positive integer")
        # The core types it embeds, strictly, inside a Pod.
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "embedded"},
               "spec": {"containers": [{"name": "rabbitmq", "image": spec.get("image", "x")}]}}
        if "resources" in spec:
            pod["spec"]["containers"][0]["resources"] = spec["resources"]
        if "affinity" in spec:
            pod["spec"]["affinity"] = spec["affinity"]
        if "tolerations" in spec:
            pod["spec"]["tolerations"] = spec["tolerations"]
        for version in ("1.29.0", "1.37.0"):
            try:
                kubernetes_validate.validate(pod, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                errors.append(f"{path}: RabbitmqCluster's embedded core types (Kubernetes {version}): {e.message} at {list(e.path)}")
        skipped.append(f"{path}: RabbitmqCluster beyond its top-level fields, resources, affinity and tolerations")
        print(f"ok {path}: RabbitmqCluster fields known, resources/affinity valid as core types")

for line in skipped:
    print(f"not validated (no schema): {line}")
for line in errors:
    print(f"ERROR {line}", file=sys.stderr)
sys.exit(1 if errors else 0)
EOF
echo "validate-k8s: all manifests valid"
