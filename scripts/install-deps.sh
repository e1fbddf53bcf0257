#!/usr/bin/env bash
# Installs what the tests need when it is missing:
# - tmux, for the test of the stack's terminal commands (crates/stack/tests);
# - the server binaries the tests run as private processes (never the machine's shared
#   services: tests start their own on free ports);
# - for the browser test of the RabbitMQ management UI: Debian's `chromium` (the system
#   browser; playwright never downloads one), node/npm, and `npm ci` in ui-tests/;
# - schemathesis (PyPI), for the property-based tests of the OpenAPI descriptions
#   (crates/{storagesvc,booksvc}/tests/api/openapi.rs), in a virtualenv of its own
#   (SCHEMATHESIS_VENV, default ~/.cache/bookstore/schemathesis).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || missing+=(rabbitmq-server)
# crates/e2e/tests/fleet: the load balancer in front of each service's replicas.
[ -x /usr/sbin/haproxy ] || command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
# deploy/prometheus: promtool checks and unit-tests the alert rules (scripts/check-prometheus.sh);
# crates/e2e/tests/degradation/prometheus.rs runs the real server against both services.
{ [ -x /usr/bin/prometheus ] && [ -x /usr/bin/promtool ]; } || missing+=(prometheus)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
# scripts/check-dashboard.py and scripts/compose-smoke.sh read YAML.
python3 -c 'import yaml' >/dev/null 2>&1 || missing+=(python3-yaml)
# scripts/validate-k8s.sh installs kubernetes-validate (PyPI) into a virtualenv of its own.
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
command -v curl >/dev/null 2>&1 || missing+=(curl)
# crates/stack/tests: drives the stack's interactive terminal through tmux.
command -v tmux >/dev/null 2>&1 || missing+=(tmux)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)

if [ ${#missing[@]} -eq 0 ]; then
  echo "all present: postgresql, redis-server, rabbitmq-server, haproxy, prometheus, python3, curl, tmux, chromium, node, npm"
else
  echo "installing: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# playwright-core only: it drives the system's Chromium and must not fetch a browser.
if [ ! -f ui-tests/node_modules/playwright-core/package.json ]; then
  echo "installing ui-tests/node_modules (npm ci)"
  (cd ui-tests && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
else
  echo "present: ui-tests/node_modules"
fi

# Pinned: its checks decide what passes. The tests find it at $SCHEMATHESIS_VENV/bin/st.
SCHEMATHESIS_VERSION=4.32.5
SCHEMATHESIS_VENV=${SCHEMATHESIS_VENV:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/bookstore/schemathesis}
if [ "$("$SCHEMATHESIS_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("schemathesis"))' 2>/dev/null)" != "$SCHEMATHESIS_VERSION" ]; then
  echo "installing schemathesis $SCHEMATHESIS_VERSION into $SCHEMATHESIS_VENV"
  python3 -m venv "$SCHEMATHESIS_VENV"
  "$SCHEMATHESIS_VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
else
  echo "present: schemathesis $SCHEMATHESIS_VERSION"
fi
