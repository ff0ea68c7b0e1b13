"""deploy/ (issue 19, item 4) says what the daemon does: every compose node's config, as the container
would load it (the mounted file and its environment), is a valid cluster node with its own id and
address and the shared secret; the proxies route each node's stream host; the Kubernetes set probes
/ready, drains before it is killed and keeps a volume per node."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from voicebridge.config.load import load_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SECRETS = {
    "VOICEBRIDGE_STREAM_SECRET": "s" * 32,
    "VOICEBRIDGE_WEBHOOK_TOKEN": "w" * 32,
    "VOICEBRIDGE_MANAGEMENT_TOKEN": "m" * 32,
}


def compose_nodes() -> dict[str, dict[str, Any]]:
    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    return {name: service for name, service in services.items() if service.get("image") == "voicebridge"}


def substituted(value: str) -> str:
    """Compose's ${NAME:?message} with the secrets deploy/.env would hold."""
    return re.sub(r"\$\{(\w+):\?[^}]*\}", lambda found: SECRETS[found.group(1)], value)


def test_every_compose_node_loads_as_a_cluster_node_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    nodes = compose_nodes()
    assert sorted(nodes) == ["node-1", "node-2", "node-3"]
    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    assert {"redis", "proxy"} <= set(services)
    loaded = {}
    for name, service in nodes.items():
        mounts = [volume.split(":") for volume in service["volumes"]]
        assert ["./cluster.toml", "/etc/voicebridge/config.toml", "ro"] in mounts
        assert any(target == "/var/lib/voicebridge" for _, target, *_ in mounts)  # the outbox outlives it
        for key in [k for k in os.environ if k.startswith("VOICEBRIDGE_")]:
            monkeypatch.delenv(key)
        for key, value in service["environment"].items():
            monkeypatch.setenv(key, substituted(str(value)))
        # The image's own environment (Dockerfile), which the compose service inherits.
        monkeypatch.setenv("VOICEBRIDGE_SERVER__HOST", "0.0.0.0")
        loaded[name] = load_config(DEPLOY / "cluster.toml").settings
    for name, settings in loaded.items():
        assert settings.cluster.node_id == name
        assert settings.server.node_url == f"wss://{name}.bot.example.com"
        assert settings.cluster.redis_url.get_secret_value() == "redis://redis:6379/0"
        assert settings.server.stream_secret.get_secret_value() == SECRETS["VOICEBRIDGE_STREAM_SECRET"]
    assert int(nodes["node-1"]["stop_grace_period"].rstrip("s")) > loaded["node-1"].server.drain_timeout


@pytest.mark.parametrize("proxy", ["Caddyfile", "nginx.conf"])
def test_the_proxies_balance_webhooks_and_route_each_nodes_streams(proxy: str) -> None:
    text = (DEPLOY / proxy).read_text()
    assert "bot.example.com" in text
    for name in compose_nodes():
        assert f"{name}:8080" in text
    if proxy == "Caddyfile":
        assert "health_uri /ready" in text
        for name in compose_nodes():
            assert f"{name}.bot.example.com {{" in text
    else:
        assert "node-[0-9]+" in text and "proxy_set_header Upgrade" in text


def kubernetes() -> dict[str, list[dict[str, Any]]]:
    kinds: dict[str, list[dict[str, Any]]] = {}
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            kinds.setdefault(doc["kind"], []).append(doc)
    return kinds


def test_the_kubernetes_set_probes_ready_drains_and_keeps_a_volume_per_node(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    kinds = kubernetes()
    (nodes,) = kinds["StatefulSet"]
    pod = nodes["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/live"
    assert container["lifecycle"]["preStop"]
    assert [claim["metadata"]["name"] for claim in nodes["spec"]["volumeClaimTemplates"]] == ["state"]
    assert {"name": "state", "mountPath": "/var/lib/voicebridge"} in container["volumeMounts"]
    assert [pdb["spec"]["maxUnavailable"] for pdb in kinds["PodDisruptionBudget"]] == [1]
    assert any(d["metadata"]["name"] == "voicebridge-redis" for d in kinds["Deployment"])
    services = {service["metadata"]["name"] for service in kinds["Service"]}
    assert {"voicebridge", "voicebridge-redis", "voicebridge-0", "voicebridge-1", "voicebridge-2"} <= services
    # The ConfigMap's config, with the pod's environment as Kubernetes expands it for voicebridge-1.
    (config_map,) = kinds["ConfigMap"]
    (tmp_path / "config.toml").write_text(config_map["data"]["config.toml"])
    for key in [k for k in os.environ if k.startswith("VOICEBRIDGE_")]:
        monkeypatch.delenv(key)
    for variable in container["env"]:
        value = variable.get("value", "secret-value-" + "x" * 24).replace("$(POD_NAME)", "voicebridge-1")
        if variable["name"].startswith("VOICEBRIDGE_"):
            monkeypatch.setenv(variable["name"], value)
    monkeypatch.setenv("VOICEBRIDGE_SERVER__HOST", "0.0.0.0")
    settings = load_config(tmp_path / "config.toml").settings
    assert (settings.cluster.node_id, settings.server.node_url) == (
        "voicebridge-1",
        "wss://voicebridge-1.bot.example.com",
    )
    assert pod["terminationGracePeriodSeconds"] > settings.server.drain_timeout + 5
