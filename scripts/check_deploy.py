"""The deployment files checked against each other and against the service.

Run by scripts/check-deploy.sh with the Python of check-jsonschema's venv
(ruamel.yaml comes with it):

    check_deploy.py nats-env deploy/compose.yaml
        one line per NATS service: its environment as NAME=VALUE pairs, the
        `${VAR:?...}` references replaced by stand-in values, for
        `nats-server -t`;
    check_deploy.py consistency deploy/compose.yaml
        exits non-zero, naming each problem, when the files disagree.
"""

import re
import sys
from pathlib import Path

from ruamel.yaml import YAML

REPO = Path(__file__).resolve().parent.parent
# A `${NAME...}` reference of compose's interpolation.
REFERENCE = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(:?[-?])?([^}]*)\}")
# What the service refuses to run without in production (api/src/config.rs).
PRODUCTION_SECRETS = ["JWT_SECRET", "JWT_REFRESH_SECRET", "CORS_ORIGIN", "METRICS_TOKEN", "NATS_TOKEN"]
STAND_IN = "a-stand-in-value-of-at-least-32-characters"


def load(path):
    return YAML(typ="safe").load(Path(path).read_text())


def interpolate(value):
    """A value with every reference replaced: its default, else a stand-in."""

    def replace(match):
        operator, argument = match.group(2), match.group(3)
        if operator in (":-", "-"):
            return argument
        return STAND_IN

    return REFERENCE.sub(replace, str(value))


def services_of(compose, predicate):
    return {name: spec for name, spec in compose["services"].items() if predicate(name, spec)}


def is_nats(_name, spec):
    return str(spec.get("image", "")).startswith("nats:")


def role_of(spec):
    return (spec.get("environment") or {}).get("HALOBUZZ_ROLE")


def nats_env(compose):
    for _name, spec in services_of(compose, is_nats).items():
        env = {key: interpolate(value) for key, value in (spec.get("environment") or {}).items()}
        for key, value in env.items():
            if " " in value:
                raise SystemExit(f"{key}: a value with a space cannot be passed to nats-server -t here")
        print(" ".join(f"{key}={value}" for key, value in sorted(env.items())))


def consistency(compose):
    problems = []
    nats = services_of(compose, is_nats)
    halobuzz = services_of(compose, lambda _n, spec: role_of(spec) is not None)
    api = sorted(name for name, spec in halobuzz.items() if role_of(spec) == "api")
    workers = sorted(name for name, spec in halobuzz.items() if role_of(spec) == "workers")

    if len(nats) != 3:
        problems.append(f"{len(nats)} NATS services, not 3")
    names = [spec["environment"].get("NATS_SERVER_NAME") for spec in nats.values()]
    if sorted(names) != sorted(nats):
        problems.append(f"NATS_SERVER_NAME {names} is not each service's own name {sorted(nats)}")
    for name, spec in nats.items():
        routes = sorted(value for key, value in spec["environment"].items() if key.startswith("NATS_ROUTE_"))
        expected = sorted(f"nats-route://{node}:6222" for node in nats)
        if routes != expected:
            problems.append(f"{name}: routes {routes}, not every node's {expected}")
    if len(api) < 2:
        problems.append(f"API replicas {api}: at least two")
    if len(workers) < 2:
        problems.append(f"workers {workers}: at least two (one active, one standby)")

    config_rs = (REPO / "api/src/config.rs").read_text()
    read_by_service = set(re.findall(r'"([A-Z][A-Z0-9_]+)"', config_rs))
    for name, spec in halobuzz.items():
        env = spec["environment"]
        for key in env:
            if key not in read_by_service:
                problems.append(f"{name}: {key} is not a variable the service reads (api/src/config.rs)")
        if env.get("APP_ENV") != "production":
            problems.append(f"{name}: APP_ENV is {env.get('APP_ENV')!r}, not production")
        for secret in PRODUCTION_SECRETS:
            value = str(env.get(secret, ""))
            match = REFERENCE.fullmatch(value)
            if not (match and match.group(2) == ":?"):
                problems.append(f"{name}: {secret} must be required from the environment (${{{secret}:?...}})")
        if str(env.get("NATS_STREAM_REPLICAS")) != str(len(nats)):
            problems.append(f"{name}: NATS_STREAM_REPLICAS {env.get('NATS_STREAM_REPLICAS')}, not {len(nats)}")
        urls = sorted(url.split("//")[1].split(":")[0] for url in str(env.get("NATS_URL", "")).split(","))
        if urls != sorted(nats):
            problems.append(f"{name}: NATS_URL names {urls}, not every node {sorted(nats)}")
        if str(env.get("TRUST_PROXY_HOPS")) != "1":
            problems.append(f"{name}: TRUST_PROXY_HOPS must be 1 (Nginx in front)")

    port = {str(spec["environment"].get("PORT")) for spec in halobuzz.values()}
    nginx = (REPO / "deploy/nginx.conf").read_text()
    upstreams = sorted(re.findall(r"^\s*server\s+([a-z0-9]+):(\d+)", nginx, re.MULTILINE))
    if upstreams != sorted((name, p) for name in api for p in port):
        problems.append(f"nginx.conf upstreams {upstreams}: not the API replicas {api} on PORT {sorted(port)}")

    # Continuation lines joined: one instruction per line.
    dockerfile = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    for needed, why in [
        (r"^HEALTHCHECK .*/health", "a HEALTHCHECK on /health"),
        (r"^USER (?!0|root)", "a non-root USER"),
        (r"halobuzz-api", "the service's binary"),
        (r"halobuzz-replay", "the replay tools' binary"),
        (r"^FROM .* AS build", "a build stage (multi-stage)"),
    ]:
        if not re.search(needed, dockerfile, re.MULTILINE):
            problems.append(f"Dockerfile: missing {why}")

    for problem in problems:
        print(f"check-deploy: {problem}", file=sys.stderr)
    if problems:
        raise SystemExit(1)


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("nats-env", "consistency"):
        raise SystemExit("usage: check_deploy.py nats-env|consistency COMPOSE_FILE")
    compose = load(sys.argv[2])
    {"nats-env": nats_env, "consistency": consistency}[sys.argv[1]](compose)


if __name__ == "__main__":
    main()
