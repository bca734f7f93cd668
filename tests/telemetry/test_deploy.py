"""What deploy/ ships stays true to the code: the Prometheus config and rules pass promtool, and
every query of the Grafana dashboard is valid PromQL naming only metrics apiaryd exposes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry

from apiary.api.metrics import ApiMetrics
from apiary.server.notify_metrics import NotifyMetrics
from apiary.telemetry.cluster import ClusterCollector
from apiary.telemetry.events import EventMetrics
from apiary.telemetry.metrics import Recorder

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "apiary.json"
NAME = re.compile(r"\b((?:apiary|process|python)_[a-z_]+)\b")
SUFFIXES = {"histogram": ("_bucket", "_count", "_sum"), "counter": ("_total",)}
"""Samples a family has once it has a series (an empty one shows none)."""
GRAFANA_VARS = {"$__rate_interval": "1m", "$__range": "1h", "$cell": "c", "$hive": "h"}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (apt-get install prometheus; .ci/run does)")
    return found


def exposed_names() -> set[str]:
    """Every sample name apiaryd's registries can show (cluster families even when empty)."""
    registry = CollectorRegistry()
    api = ApiMetrics(registry)
    NotifyMetrics(registry)
    api.attach(Recorder(standard=True).registry)
    cluster = CollectorRegistry(auto_describe=False)
    cluster.register(ClusterCollector(cast(Any, None)))
    api.attach(cluster)
    api.attach(EventMetrics(cast(Any, None)).registry)
    names: set[str] = set()
    for r in (api.registry, *api.attached):
        for family in r.collect():
            names.add(family.name)
            names |= {s.name for s in family.samples}
            if family.type in ("histogram", "counter"):
                suffixes = (
                    ("_bucket", "_count", "_sum") if family.type == "histogram" else ("_total",)
                )
                names |= {family.name + s for s in suffixes}
    return names


def dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def test_the_dashboard_names_only_metrics_that_exist() -> None:
    known = exposed_names()
    exprs = dashboard_exprs()
    assert len(exprs) > 20
    for expr in exprs:
        for name in NAME.findall(expr):
            assert name in known, f"{name} (in {expr}) is not a metric apiaryd exposes"


def test_the_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    rules = []
    for i, expr in enumerate(dashboard_exprs()):
        for var, value in GRAFANA_VARS.items():
            expr = expr.replace(var, value)
        rules.append({"record": f"apiary:dashboard_{i}", "expr": expr})
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    p = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_the_prometheus_config_and_rules_pass_promtool(tmp_path: Path) -> None:
    token = tmp_path / "apiary.token"
    token.write_text("x")
    config = (DEPLOY / "prometheus" / "prometheus.yml").read_text()
    (tmp_path / "prometheus.yml").write_text(
        config.replace("/etc/prometheus/apiary.token", str(token))
    )
    shutil.copy(DEPLOY / "prometheus" / "apiary-rules.yml", tmp_path)
    p = subprocess.run(
        [promtool(), "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    rules = (DEPLOY / "prometheus" / "apiary-rules.yml").read_text()
    known = exposed_names()
    for name in NAME.findall(rules):
        assert name in known, f"{name} in apiary-rules.yml is not a metric apiaryd exposes"
