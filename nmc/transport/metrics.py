"""A daemon's Prometheus endpoint: one registry, one HTTP listener, read at scrape time (docs/metrics.md).

Off unless a daemon's config sets `plugin.prometheus.port`; then `acquire()`
opens `http://<plugin.prometheus.bind>:<port>/metrics` (127.0.0.1 unless told
otherwise) with prometheus-client's own threaded HTTP server and a registry of
this endpoint's own (never the library's global one). Daemons of one process
that name the same bind and port share one endpoint (`nmc dev up` runs its
nodes and both services in one process: one URL, the node metrics told apart
by their `identity` label); it closes when the last of them releases it. Port
0 picks a free port (tests): `port` and `url` say which.

What the daemons count as they go (requests, latencies, decisions) lives in
prometheus-client Counters and Histograms made here (`counter`, `histogram`).
What they already keep (connection state, spool depth, service counters) is
read when Prometheus scrapes, from `Sample` sources (`add_source`), so an
instrumented daemon does no work for it between scrapes. Scrapes run on the
HTTP server's thread: a source reads plain attributes and must not touch the
event loop; one that fails is left out of that scrape, logged once.

Every endpoint also watches the event loop it was first used from: a task
sleeps `LAG_INTERVAL` seconds and records how late it woke
(`nmc_event_loop_lag_seconds`, and a histogram of the wake-up delays); a loop
stuck right now shows as late at scrape time, before the task wakes.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import NamedTuple

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import start_http_server
from prometheus_client.metrics_core import Metric

__all__ = ["LAG_INTERVAL", "MetricsEndpoint", "Sample", "acquire", "nats_connection_samples", "release"]

log = structlog.get_logger("nmc.metrics")

LAG_INTERVAL = 0.5  # seconds the loop-lag task sleeps between measurements
_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Sample(NamedTuple):
    """One value read at scrape time: `kind` is "gauge" or "counter" (a counter's name ends in _total)."""

    name: str
    kind: str
    documentation: str
    labels: dict[str, str]
    value: float


Source = Callable[[], Iterable[Sample]]


class _Sources:
    """The registry's collector for every source: samples of one name become one metric family."""

    def __init__(self, endpoint: MetricsEndpoint) -> None:
        self._endpoint = endpoint

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        label_names: dict[str, tuple[str, ...]] = {}
        for key, source in self._endpoint.sources():
            try:
                samples = list(source())
            except Exception as exc:  # noqa: BLE001 - one broken source must not cost the whole scrape
                self._endpoint.source_failed(key, exc)
                continue
            for sample in samples:
                family = families.get(sample.name)
                if family is None:
                    names = tuple(sorted(sample.labels))
                    maker = CounterMetricFamily if sample.kind == "counter" else GaugeMetricFamily
                    family = families[sample.name] = maker(sample.name, sample.documentation, labels=names)
                    label_names[sample.name] = names
                names = label_names[sample.name]
                if tuple(sorted(sample.labels)) != names:
                    continue  # a source that disagrees on the labels: left out rather than a broken exposition
                family.add_metric([sample.labels[n] for n in names], float(sample.value))  # type: ignore[attr-defined]
        yield from families.values()


class MetricsEndpoint:
    """One `/metrics` listener and its registry (see the module doc)."""

    def __init__(self, bind: str = "127.0.0.1", port: int = 0) -> None:
        self.bind = bind
        self.requested_port = port
        self.port = port  # the bound one once started
        self.registry = CollectorRegistry()
        self._lock = threading.Lock()
        self._sources: dict[str, Source] = {}
        self._failed: set[str] = set()
        self._metrics: dict[str, Counter | Histogram] = {}
        self._server: object | None = None
        self._thread: threading.Thread | None = None
        self._users = 0
        self._lag_task: asyncio.Task[None] | None = None
        self._lag_loop: asyncio.AbstractEventLoop | None = None
        self._lag_due = 0.0  # monotonic time the lag task should wake next (0: not watching)
        self._lag_last = 0.0
        self.registry.register(_Sources(self))  # type: ignore[arg-type]
        self._lag_hist = self.histogram("nmc_event_loop_wakeup_delay_seconds",
                                        f"How late the event loop woke a task that slept {LAG_INTERVAL:g}s",
                                        (), buckets=_LAG_BUCKETS)
        self.add_source("event-loop", self._lag_samples)

    @property
    def url(self) -> str:
        """Where Prometheus scrapes it."""
        host = f"[{self.bind}]" if ":" in self.bind else self.bind
        return f"http://{host}:{self.port}/metrics"

    @property
    def running(self) -> bool:
        """True while it listens."""
        return self._server is not None

    def start(self) -> None:
        """Listen (OSError when the address cannot be bound, e.g. the port is taken)."""
        if self._server is not None:
            return
        server, thread = start_http_server(self.requested_port, addr=self.bind, registry=self.registry)
        self._server, self._thread = server, thread
        self.port = int(server.server_port)
        log.info("metrics_listening", url=self.url)

    def stop(self) -> None:
        """Stop listening and stop watching the loop (idempotent)."""
        self._stop_watching()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()  # type: ignore[attr-defined]
            server.server_close()  # type: ignore[attr-defined]
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    # what daemons count as they go
    def counter(self, name: str, documentation: str, labels: Sequence[str]) -> Counter:
        """The Counter `name` of this endpoint, made on first use (a name ending in _total is exposed as such)."""
        with self._lock:
            metric = self._metrics.get(name)
            if metric is None:
                metric = self._metrics[name] = Counter(name, documentation, tuple(labels), registry=self.registry)
        assert isinstance(metric, Counter)
        return metric

    def histogram(self, name: str, documentation: str, labels: Sequence[str],
                  buckets: Sequence[float] = Histogram.DEFAULT_BUCKETS) -> Histogram:
        """The Histogram `name` of this endpoint, made on first use."""
        with self._lock:
            metric = self._metrics.get(name)
            if metric is None:
                metric = self._metrics[name] = Histogram(name, documentation, tuple(labels), buckets=tuple(buckets),
                                                         registry=self.registry)
        assert isinstance(metric, Histogram)
        return metric

    # what is read at scrape time
    def add_source(self, key: str, source: Source) -> None:
        """Read `source()` at every scrape until remove_source(key)."""
        with self._lock:
            self._sources[key] = source

    def remove_source(self, key: str) -> None:
        """Stop reading the source `key` (no-op when unknown)."""
        with self._lock:
            self._sources.pop(key, None)
            self._failed.discard(key)

    def sources(self) -> list[tuple[str, Source]]:
        """A copy of the sources (the scrape thread iterates it while daemons add and remove theirs)."""
        with self._lock:
            return list(self._sources.items())

    def source_failed(self, key: str, exc: Exception) -> None:
        """Log a source that raised, once until it is removed."""
        with self._lock:
            first = key not in self._failed
            self._failed.add(key)
        if first:
            log.warning("metrics_source_failed", source=key, error=f"{type(exc).__name__}: {exc}")

    # the event loop
    def watch_loop(self) -> None:
        """Measure the running loop's lag from now on (once per endpoint; call it from inside the loop)."""
        loop = asyncio.get_running_loop()
        if self._lag_task is not None and not self._lag_task.done() and self._lag_loop is loop:
            return
        self._stop_watching()
        self._lag_loop = loop
        self._lag_task = loop.create_task(self._watch_lag(), name="nmc-metrics-loop-lag")

    def _stop_watching(self) -> None:
        task, self._lag_task, self._lag_loop, self._lag_due = self._lag_task, None, None, 0.0
        if task is not None:
            with contextlib.suppress(RuntimeError):  # its loop is closed already: nothing runs it any more
                task.cancel()

    async def _watch_lag(self) -> None:
        while True:
            self._lag_due = time.monotonic() + LAG_INTERVAL
            await asyncio.sleep(LAG_INTERVAL)
            late = max(0.0, time.monotonic() - self._lag_due)
            self._lag_last = late
            self._lag_hist.observe(late)

    def _lag_samples(self) -> Iterator[Sample]:
        if not self._lag_due:
            return
        # A loop that is stuck now has not woken the task yet: it is at least this late already.
        late_now = max(0.0, time.monotonic() - self._lag_due)
        yield Sample("nmc_event_loop_lag_seconds", "gauge",
                     "How late the event loop is: the last wake-up delay of a task sleeping "
                     f"{LAG_INTERVAL:g}s, or how overdue its next wake-up already is",
                     {}, max(self._lag_last, late_now))

    # sharing between the daemons of one process
    def use(self) -> None:
        """One more daemon uses it (started on the first)."""
        self.start()
        self._users += 1

    def unuse(self) -> bool:
        """One daemon fewer; True when that was the last (then it stopped)."""
        self._users = max(0, self._users - 1)
        if self._users == 0:
            self.stop()
            return True
        return False


_SHARED: dict[tuple[str, int], MetricsEndpoint] = {}
_SHARED_LOCK = threading.Lock()


def acquire(bind: str, port: int) -> MetricsEndpoint:
    """The endpoint on bind:port, listening (OSError when it cannot), shared within the process.

    Port 0 makes a new endpoint on a free port; whoever then asks for that port (bind and
    bound port) gets the same one: `nmc dev up` picks the port and writes it into its configs.
    """
    with _SHARED_LOCK:
        endpoint = _SHARED.get((bind, port)) if port else None
        if endpoint is None:
            endpoint = MetricsEndpoint(bind, port)
        endpoint.use()
        _SHARED[(bind, endpoint.port)] = endpoint
        return endpoint


def release(endpoint: MetricsEndpoint) -> None:
    """A daemon is done with `endpoint`: it stops listening after the last one."""
    with _SHARED_LOCK:
        port = endpoint.port
        if endpoint.unuse() and _SHARED.get((endpoint.bind, port)) is endpoint:
            del _SHARED[(endpoint.bind, port)]


def nats_connection_samples(nc: object | None, labels: dict[str, str]) -> Iterator[Sample]:
    """State and counters of one nats-py connection (read at scrape time; nothing when not connected yet)."""
    if nc is None:
        return
    connected = bool(getattr(nc, "is_connected", False))
    yield Sample("nmc_nats_connected", "gauge", "1 while the daemon's NATS connection is up, else 0",
                 labels, 1.0 if connected else 0.0)
    stats = dict(getattr(nc, "stats", {}) or {})
    for key, name, doc in (
            ("reconnects", "nmc_nats_reconnects_total", "Times the NATS connection was made again after a loss"),
            ("in_msgs", "nmc_nats_received_messages_total", "Messages received on the NATS connection"),
            ("out_msgs", "nmc_nats_sent_messages_total", "Messages published on the NATS connection"),
            ("in_bytes", "nmc_nats_received_bytes_total", "Payload bytes received on the NATS connection"),
            ("out_bytes", "nmc_nats_sent_bytes_total", "Payload bytes published on the NATS connection")):
        with contextlib.suppress(TypeError, ValueError):
            yield Sample(name, "counter", doc, labels, float(stats.get(key, 0)))
