"""The gateway's counters and latency histogram, served as Prometheus text (format 0.0.4).

One :class:`GatewayMetrics` per gateway process. It is updated from the event loop only
(no locks needed) and rendered by :meth:`GatewayMetrics.render` for ``GET /metrics``:

- ``fleetopt_gateway_requests_total{pool,status}``: answered requests per pool and HTTP
  status (``pool="-"`` for requests rejected before routing);
- ``fleetopt_gateway_compressions_total{pool}`` and
  ``fleetopt_gateway_compressed_tokens_saved_total{pool}``: C&R compressions into a pool
  and the input tokens they removed;
- ``fleetopt_gateway_upstream_errors_total{pool}``: upstream unreachable or failed;
- ``fleetopt_gateway_added_latency_seconds{pool}``: histogram of the time the gateway
  adds before forwarding (parse, count, gate, compress);
- ``fleetopt_gateway_in_flight``: requests being served now.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass, field

__all__ = ["GatewayMetrics", "LATENCY_BUCKETS_S"]

#: Upper bounds (seconds) of the added-latency histogram buckets.
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)


@dataclass
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))
    total_s: float = 0.0
    n: int = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self.total_s += seconds
        self.n += 1


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


@dataclass
class GatewayMetrics:
    """Counters of one gateway process (module docstring)."""

    requests: dict = field(default_factory=lambda: defaultdict(int))
    compressions: dict = field(default_factory=lambda: defaultdict(int))
    tokens_saved: dict = field(default_factory=lambda: defaultdict(int))
    upstream_errors: dict = field(default_factory=lambda: defaultdict(int))
    latency: dict = field(default_factory=lambda: defaultdict(_Histogram))
    in_flight: int = 0

    def answered(self, pool: str | None, status: int) -> None:
        self.requests[(pool or "-", int(status))] += 1

    def routed(self, pool: str, added_s: float, compressed: bool, saved_tokens: int) -> None:
        self.latency[pool].observe(added_s)
        if compressed:
            self.compressions[pool] += 1
            self.tokens_saved[pool] += int(saved_tokens)

    def upstream_error(self, pool: str) -> None:
        self.upstream_errors[pool] += 1

    def render(self) -> str:
        """The Prometheus text exposition of every metric."""
        out: list[str] = []

        def family(name: str, kind: str, doc: str, samples) -> None:
            out.append(f"# HELP {name} {doc}")
            out.append(f"# TYPE {name} {kind}")
            out.extend(samples)

        family("fleetopt_gateway_requests_total", "counter", "Requests answered, by pool and "
               "HTTP status.", (f'fleetopt_gateway_requests_total{{pool="{_label(p)}",'
                                f'status="{s}"}} {v}' for (p, s), v in sorted(self.requests.items())))
        family("fleetopt_gateway_compressions_total", "counter", "Requests compressed into a "
               "pool by Compress-and-Route.",
               (f'fleetopt_gateway_compressions_total{{pool="{_label(p)}"}} {v}'
                for p, v in sorted(self.compressions.items())))
        family("fleetopt_gateway_compressed_tokens_saved_total", "counter", "Input tokens "
               "removed by compression.",
               (f'fleetopt_gateway_compressed_tokens_saved_total{{pool="{_label(p)}"}} {v}'
                for p, v in sorted(self.tokens_saved.items())))
        family("fleetopt_gateway_upstream_errors_total", "counter", "Upstream unreachable or "
               "failed, by pool.",
               (f'fleetopt_gateway_upstream_errors_total{{pool="{_label(p)}"}} {v}'
                for p, v in sorted(self.upstream_errors.items())))
        samples = []
        for pool, h in sorted(self.latency.items()):
            cum = 0
            for le, c in zip((*(f"{b:g}" for b in LATENCY_BUCKETS_S), "+Inf"), h.counts):
                cum += c
                samples.append(f'fleetopt_gateway_added_latency_seconds_bucket'
                               f'{{pool="{_label(pool)}",le="{le}"}} {cum}')
            samples.append(f'fleetopt_gateway_added_latency_seconds_sum{{pool="{_label(pool)}"}} '
                           f"{h.total_s:.9g}")
            samples.append(f'fleetopt_gateway_added_latency_seconds_count{{pool="{_label(pool)}"}} '
                           f"{h.n}")
        family("fleetopt_gateway_added_latency_seconds", "histogram", "Time the gateway adds "
               "before forwarding (parse, count, gate, compress).", samples)
        family("fleetopt_gateway_in_flight", "gauge", "Requests being served now.",
               [f"fleetopt_gateway_in_flight {self.in_flight}"])
        return "\n".join(out) + "\n"
