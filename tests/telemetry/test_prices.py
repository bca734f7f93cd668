"""The price table behind ``apiary_llm_cost_usd_total``: name matching, the override file, and
what the recorder does with a model the table does not know (docs/observability.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from apiary.errors import Invalid
from apiary.telemetry import metrics
from apiary.telemetry.metrics import Recorder
from apiary.telemetry.prices import BUILT_IN, Price, Prices, load_prices, prices_from_env

WHERE = {"cell": "c", "hive": "h", "stage": "s"}


def test_names_match_exactly_then_by_the_longest_dated_prefix() -> None:
    prices = Prices()
    assert prices.of("gpt-4o-mini") == BUILT_IN["gpt-4o-mini"]
    assert prices.of("gpt-4o-mini-2024-07-18") == BUILT_IN["gpt-4o-mini"]  # not gpt-4o's
    assert prices.of("gpt-4o-2024-08-06") == BUILT_IN["gpt-4o"]
    assert prices.of("claude-3-5-sonnet-20241022") == BUILT_IN["claude-3-5-sonnet"]
    assert prices.of("openai/gpt-4o-mini") == BUILT_IN["gpt-4o-mini"]  # a router's provider/
    assert prices.of("o3-mini-2025-01-31") == BUILT_IN["o3-mini"]
    for unknown in ("", "gpt-4o2", "llama3.1:8b", "my-gpt-4o", "gpt"):
        assert prices.of(unknown) is None, unknown
    assert Price(2.0, 8.0).of(1_000_000, 500_000) == 6.0


def test_a_price_file_overrides_and_extends_the_built_in_table(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text("gpt-4o-mini: {input: 1, output: 2}\nllama3.1:8b: {input: 0, output: 0}\n")
    prices = prices_from_env({"APIARY_LLM_PRICES": str(path)})
    assert prices.of("gpt-4o-mini-2024-07-18") == Price(1.0, 2.0)
    assert prices.of("llama3.1:8b") == Price(0.0, 0.0)
    assert prices.of("gpt-4o") == BUILT_IN["gpt-4o"]  # the rest stays
    assert prices_from_env({}).table == BUILT_IN
    for bad in ("[1, 2]", "m: 3", "m: {input: -1}", "m: {input: x}", "m: {in: 1}", "m: [oops"):
        path.write_text(bad)
        with pytest.raises(Invalid, match="APIARY_LLM_PRICES="):
            load_prices(path)
    with pytest.raises(Invalid, match="cannot read"):
        load_prices(tmp_path / "missing.yaml")


def test_a_bad_price_file_stops_apiaryd_with_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text("gpt-4o: {input: -1}")
    p = subprocess.run(
        [sys.executable, "-m", "apiary.server.main", "--data-dir", str(tmp_path / "d"),
         "--port", "0", "--no-local-node", "--log-format", "json"],
        env={"APIARY_LLM_PRICES": str(path), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert p.returncode == 1, p.stderr
    assert "prices must not be negative" in p.stderr and "Traceback" not in p.stderr


def test_tokens_of_a_model_without_a_price_are_counted_and_cost_nothing() -> None:
    r = Recorder(CollectorRegistry(), prices=Prices({"known": Price(1.0, 3.0)}))
    r.used_tokens("c", "h", "s", 1000, 500, "known-2025-01-01")
    r.used_tokens("c", "h", "s", 1000, 500, "unknown")
    r.used_tokens("c", "h", "s", 1000, 500, "")  # no model at all
    value = r.registry.get_sample_value
    dated = {**WHERE, "model": "known-2025-01-01"}
    assert value("apiary_llm_cost_usd_total", dated) == pytest.approx(0.0025)
    assert value("apiary_llm_tokens_total", {**WHERE, "model": "unknown", "type": "prompt"}) == 1000
    assert value("apiary_llm_cost_usd_total", {**WHERE, "model": "unknown"}) is None
    assert value("apiary_llm_tokens_total", {**WHERE, "model": "", "type": "completion"}) == 500
    assert value("apiary_llm_cost_usd_total", {**WHERE, "model": ""}) is None


def test_model_labels_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "MAX_MODELS", 2)
    r = Recorder(CollectorRegistry())
    for model in ("gpt-4o", "a", "gpt-4o-mini", "gpt-4o"):
        r.used_tokens("c", "h", "s", 1_000_000, 0, model)
    value = r.registry.get_sample_value
    assert value("apiary_llm_tokens_total", {**WHERE, "model": "gpt-4o", "type": "prompt"}) == 2e6
    assert value("apiary_llm_tokens_total", {**WHERE, "model": "other", "type": "prompt"}) == 1e6
    # the cost under "other" is still the real model's
    assert value("apiary_llm_cost_usd_total", {**WHERE, "model": "other"}) == pytest.approx(0.15)
