"""Prometheus metrics of the service: requests and latency per route, and per-collection gauges read at scrape time."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

if TYPE_CHECKING:
    from .collection import CollectionStore


class CollectionMetrics:
    """Documents, bytes, log bytes, segments and merge failures per collection; failed collections."""

    def __init__(self, store_ref: Callable[[], CollectionStore | None]) -> None:
        self.store_ref = store_ref

    def collect(self) -> Iterator[Metric]:
        labels = ["collection"]
        docs = GaugeMetricFamily("lsr_collection_documents", "live documents per collection", labels=labels)
        fresh = GaugeMetricFamily("lsr_collection_fresh_documents", "documents not yet merged", labels=labels)
        size = GaugeMetricFamily("lsr_collection_bytes", "bytes on disk per collection", labels=labels)
        wal = GaugeMetricFamily("lsr_collection_wal_bytes", "write-ahead log bytes not yet merged", labels=labels)
        segs = GaugeMetricFamily("lsr_collection_segments", "sealed segments per collection", labels=labels)
        merge_fail = CounterMetricFamily("lsr_collection_merge_failures", "background merges that failed",
                                         labels=labels)
        failed = GaugeMetricFamily("lsr_collection_failed", "1 per collection that failed to open (see reason)",
                                   labels=["collection", "reason"])
        n_failed = GaugeMetricFamily("lsr_collections_failed", "collections that failed to open")
        torch = GaugeMetricFamily("lsr_torch_loaded", "1 once torch is imported (model-based encoding in use)")
        torch.add_metric([], float("torch" in sys.modules))
        store = self.store_ref()
        failures: dict[str, int] = {}
        failed_map: dict[str, str] = {}
        if store is not None:
            failures = dict(store.merge_failures)
            failed_map = dict(store.failed)
            for name, col in list(store.collections.items()):
                st = col.stats()
                docs.add_metric([name], st["documents"])
                fresh.add_metric([name], st["fresh_documents"])
                size.add_metric([name], st["bytes"])
                wal.add_metric([name], st.get("wal_bytes", 0))
                segs.add_metric([name], len(st["segments"]))
                merge_fail.add_metric([name], failures.get(name, 0))
        for name, reason in sorted(failed_map.items()):
            failed.add_metric([name, str(reason)[:200]], 1)
        n_failed.add_metric([], len(failed_map))
        yield from (docs, fresh, size, wal, segs, merge_fail, failed, n_failed, torch)


class Metrics:
    """The service's own registry (not the process-global one: several apps may live in one test process)."""

    def __init__(self, store_ref: Callable[[], CollectionStore | None]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("lsr_requests", "HTTP requests (status 499: the client hung up)",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram(
            "lsr_request_duration_seconds", "request latency", ["method", "route"], registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.in_flight = Gauge("lsr_requests_in_flight", "requests inside the app now", registry=r)
        self.shed = Counter("lsr_requests_shed", "requests answered 503 because too many were in flight",
                            registry=r)
        r.register(CollectionMetrics(store_ref))
