"""Prometheus export of RunStats: every series, read fresh on every scrape."""

from __future__ import annotations

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

import framepipe as fp
from framepipe.metrics import STATES, RunStatsCollector, metrics_text
from framepipe.stats import DROP_REASONS, NodeStats, RunStats


def samples(text: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """{(sample name, labels): value} of a Prometheus text exposition."""
    found = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return (name, frozenset(labels.items()))


@pytest.fixture(scope="module")
def finished() -> RunStats:
    """Statistics of a real run with drops and errors."""

    def flaky(frame: fp.Frame) -> int:
        if frame.index % 10 == 3:
            raise ValueError("every tenth frame fails")
        return frame.index

    pipe = fp.Pipeline()
    pipe.source("cam", fp.sources.Synthetic(width=64, height=48, frames=40))
    pipe.stage("flaky", flaky, after="cam")
    pipe.stage("sparse", lambda f: f.index, after="cam", fps=10)
    pipe.sink("out", fp.sinks.Collect(), after=["flaky", "sparse"])
    return pipe.run(mode="offline").stats


def test_every_node_and_measure_is_exported(finished: RunStats) -> None:
    found = samples(metrics_text(finished, labels={"pipeline": "test"}))
    for node in finished.values():
        labels = {"pipeline": "test", "node": node.name, "kind": node.kind}
        assert found[key("framepipe_node_frames_total", **labels)] == node.processed
        assert found[key("framepipe_node_errors_total", **labels)] == node.errors
        assert found[key("framepipe_node_fps", **labels)] == pytest.approx(node.fps)
        for reason in DROP_REASONS:
            assert found[
                key("framepipe_node_dropped_frames_total", reason=reason, **labels)
            ] == node.dropped_by.get(reason, 0)
        for quantile, field in (("0.5", "p50"), ("0.95", "p95"), ("1", "max")):
            assert found[
                key("framepipe_node_latency_seconds", quantile=quantile, **labels)
            ] == pytest.approx(node.latency_ms[field] / 1000)
            assert found[
                key("framepipe_node_frame_age_seconds", quantile=quantile, **labels)
            ] == pytest.approx(node.age_ms[field] / 1000)
        states = {s: found[key("framepipe_node_state", state=s, **labels)] for s in STATES}
        assert states == {s: float(s == node.state) for s in STATES}
    assert finished["flaky"].errors == 4
    assert (
        found[
            key(
                "framepipe_node_dropped_frames_total",
                pipeline="test",
                node="sparse",
                kind="stage",
                reason="rate",
            )
        ]
        > 0
    )


def test_reads_fresh_statistics_on_every_scrape() -> None:
    current = [RunStats({"a": NodeStats("a", "stage", processed=1)})]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RunStatsCollector(lambda: current[0]))
    name = key("framepipe_node_frames_total", node="a", kind="stage")
    assert samples(prometheus_client.generate_latest(registry))[name] == 1
    current[0] = RunStats(
        {"a": NodeStats("a", "stage", processed=7, state="reconnecting", reconnects=2)}
    )
    found = samples(prometheus_client.generate_latest(registry))
    assert found[name] == 7
    assert found[key("framepipe_node_reconnects_total", node="a", kind="stage")] == 2
    assert found[key("framepipe_node_state", node="a", kind="stage", state="reconnecting")] == 1


def test_an_unknown_state_gets_its_own_series_and_empty_stats_export_nothing() -> None:
    stats = RunStats({"s": NodeStats("s", "source", state="paused")})
    found = samples(metrics_text(stats))
    assert found[key("framepipe_node_state", node="s", kind="source", state="paused")] == 1
    assert not any(
        name.startswith("framepipe_node_frames") for name, _ in samples(metrics_text(RunStats()))
    )


def test_lives_beside_other_collectors_in_one_registry(finished: RunStats) -> None:
    registry = CollectorRegistry()  # auto_describe: names are checked for clashes
    registry.register(RunStatsCollector(lambda: finished))
    prometheus_client.Counter("app_requests", "Another collector", registry=registry).inc()
    text = prometheus_client.generate_latest(registry)
    assert b"app_requests_total 1.0" in text
    assert b"framepipe_node_frames_total" in text
