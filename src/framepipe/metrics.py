"""Prometheus export of a run's statistics.

``RunStatsCollector`` is a prometheus-client collector that reads a fresh
``RunStats`` on every scrape, so nothing is counted twice and nothing needs
updating while the pipeline runs. The web view serves it at ``/metrics``;
register it yourself to expose a pipeline through your own exporter::

    import prometheus_client
    from framepipe.metrics import RunStatsCollector

    prometheus_client.REGISTRY.register(RunStatsCollector(pipe.stats, labels={"pipeline": "gate"}))
    prometheus_client.start_http_server(9100)

Series (every one labelled ``node`` and ``kind``, plus the constant ``labels``):

=====================================================  =========  ===========================
name                                                   type       extra labels
=====================================================  =========  ===========================
``framepipe_node_frames_total``                        counter
``framepipe_node_dropped_frames_total``                counter    ``reason`` (every reason)
``framepipe_node_errors_total``                        counter
``framepipe_node_restarts_total``                      counter
``framepipe_node_reconnects_total``                    counter
``framepipe_node_fps``                                 gauge
``framepipe_node_latency_seconds``                     gauge      ``quantile`` 0.5, 0.95, 1
``framepipe_node_frame_age_seconds``                   gauge      ``quantile`` 0.5, 0.95, 1
``framepipe_node_queue_wait_seconds``                  gauge      ``quantile`` 0.5, 0.95, 1
``framepipe_node_state``                               gauge      ``state`` (1 for the current)
``framepipe_source_health``                            gauge      ``health`` (1 for the current;
                                                                  live sources only)
``framepipe_source_clip_buffer_bytes``                 gauge      (sources that keep video
                                                                  for ``Clips`` only)
``framepipe_node_elapsed_seconds``                     gauge
=====================================================  =========  ===========================

Quantiles come from the node's recent samples (``NodeStats``); ``quantile="1"``
is the maximum over the whole run. Times are in seconds, as Prometheus expects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from .stats import DROP_REASONS, HEALTH_STATES, NodeStats, RunStats

__all__ = ["STATES", "RunStatsCollector", "metrics_text"]

#: States a node reports; each gets a ``framepipe_node_state`` series so dashboards
#: can graph them, the current one with value 1.
STATES = (
    "idle",
    "starting",
    "running",
    "connecting",
    "connected",
    "reconnecting",
    "ended",
    "failed",
)

_QUANTILES = (("0.5", "p50"), ("0.95", "p95"), ("1", "max"))


class RunStatsCollector(Collector):
    """Exposes ``RunStats`` as Prometheus metrics, read anew on every scrape.

    Args:
        stats: returns the current statistics, e.g. ``pipe.stats`` or
            ``sink.context.pipeline_stats``. Called from the scraping thread;
            ``RunStats`` snapshots are immutable, so no locking is needed.
        labels: constant labels added to every series (``{"pipeline": "gate"}``).
        namespace: prefix of every metric name.
    """

    def __init__(
        self,
        stats: Callable[[], RunStats],
        *,
        labels: Mapping[str, str] | None = None,
        namespace: str = "framepipe",
    ) -> None:
        self._stats = stats
        self._labels = dict(labels or {})
        self._prefix = f"{namespace}_node"
        self._namespace = namespace

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        const_names = list(self._labels)
        const_values = list(self._labels.values())
        base = [*const_names, "node", "kind"]

        def counter(name: str, doc: str, *extra: str) -> CounterMetricFamily:
            return CounterMetricFamily(f"{self._prefix}_{name}", doc, labels=[*base, *extra])

        def gauge(name: str, doc: str, *extra: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"{self._prefix}_{name}", doc, labels=[*base, *extra])

        frames = counter("frames", "Frames processed (written, for sinks).")
        dropped = counter(
            "dropped_frames",
            "Frames that did not reach the node's process/write, by reason.",
            "reason",
        )
        errors = counter("errors", "Frames on which the node raised.")
        restarts = counter("restarts", "Restarts after errors.")
        reconnects = counter("reconnects", "Reconnect attempts of a camera or stream source.")
        fps = gauge("fps", "Frames per second over the last seconds.")
        timings = {
            "latency_ms": gauge(
                "latency_seconds",
                "Time in process/write per frame (quantile 1: run maximum).",
                "quantile",
            ),
            "age_ms": gauge(
                "frame_age_seconds",
                "Capture-to-processing age of frames (quantile 1: run maximum).",
                "quantile",
            ),
            "wait_ms": gauge(
                "queue_wait_seconds",
                "Time frames waited in the node's inbox (quantile 1: maximum).",
                "quantile",
            ),
        }
        state = gauge("state", "1 for the node's current state.", "state")
        health = GaugeMetricFamily(
            f"{self._namespace}_source_health",
            "1 for a live source's current health: ok, stalled, frozen or clock.",
            labels=[*base, "health"],
        )
        clip_buffer = GaugeMetricFamily(
            f"{self._namespace}_source_clip_buffer_bytes",
            "Bytes of encoded video a source keeps for clips.",
            labels=base,
        )
        elapsed = gauge("elapsed_seconds", "Seconds since the node started.")

        node: NodeStats
        for node in stats.values():
            labels = [*const_values, node.name, node.kind]
            frames.add_metric(labels, node.processed)
            for reason in dict.fromkeys([*DROP_REASONS, *node.dropped_by]):
                dropped.add_metric([*labels, reason], node.dropped_by.get(reason, 0))
            errors.add_metric(labels, node.errors)
            restarts.add_metric(labels, node.restarts)
            reconnects.add_metric(labels, node.reconnects)
            fps.add_metric(labels, node.fps)
            for field, metric in timings.items():
                values: Mapping[str, float] = getattr(node, field)
                for quantile, key in _QUANTILES:
                    metric.add_metric([*labels, quantile], values.get(key, 0.0) / 1000.0)
            for name in dict.fromkeys([*STATES, node.state]):
                state.add_metric([*labels, name], 1.0 if name == node.state else 0.0)
            if node.health:
                for name in HEALTH_STATES:
                    health.add_metric([*labels, name], 1.0 if name == node.health else 0.0)
            if node.clip_buffer_bytes:
                clip_buffer.add_metric(labels, node.clip_buffer_bytes)
            elapsed.add_metric(labels, node.elapsed_s)
        yield from (
            frames,
            dropped,
            errors,
            restarts,
            reconnects,
            fps,
            *timings.values(),
            state,
            health,
            clip_buffer,
            elapsed,
        )


def metrics_text(
    stats: RunStats | Callable[[], RunStats], *, labels: Mapping[str, str] | None = None
) -> bytes:
    """The Prometheus text exposition of ``stats`` (a snapshot or a callable returning one)."""
    from prometheus_client import generate_latest

    if isinstance(stats, RunStats):
        snapshot = stats

        def read() -> RunStats:
            return snapshot
    else:
        read = stats
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RunStatsCollector(read, labels=labels))
    return generate_latest(registry)
