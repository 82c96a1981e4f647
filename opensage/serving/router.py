"""In-memory routing for InvokeEndpoint: endpoint -> variants (weight, ready replicas). No SQL per request.

The deployment reconciler replaces an endpoint's whole route atomically (blue/green: the new fleet is
healthy before it is routed to). Requests hold the route object they picked, so the old fleet can be
drained: ``outstanding(routes)`` counts requests still in flight on it.

Besides the route table the router keeps what requests tell the reconciler: when each variant was last
invoked (serverless variants scale to zero when idle) and which serverless variants wait for a cold start.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from opensage.serving.upstream import UpstreamPool


@dataclass
class VariantRoute:
    name: str
    weight: float
    replicas: list[str]  # base URLs of healthy model servers
    outstanding: dict[str, int] = field(default_factory=dict)
    serverless: dict | None = None  # the variant's ServerlessConfig: started on demand, MaxConcurrency
    sample: float = 1.0  # shadow variants: the share of requests copied to it

    def pick_replica(self, key: str | None = None) -> str:
        if key is not None and len(self.replicas) > 1:
            # Multi-model endpoints: the same TargetModel goes to the same instance (its cache holds the
            # model), by rendezvous hashing so a scale-out moves only the share of models it must.
            return max(self.replicas, key=lambda r: hashlib.blake2b(f"{key}|{r}".encode(), digest_size=8).digest())
        # Least outstanding requests; ties broken at random so load spreads.
        best = min(self.outstanding.get(r, 0) for r in self.replicas)
        return random.choice([r for r in self.replicas if self.outstanding.get(r, 0) == best])

    def in_flight(self) -> int:
        return sum(self.outstanding.values())


@dataclass
class EndpointRoute:
    variants: list[VariantRoute]
    # During a Canary/Linear blue/green update: this share of requests goes to the new fleet's route.
    shifted: EndpointRoute | None = None
    shifted_fraction: float = 0.0
    capture: dict | None = None  # the endpoint config's DataCaptureConfig
    shadows: list[VariantRoute] = field(default_factory=list)  # get a copy of requests; answers are dropped

    def pick(self, target_variant: str | None) -> VariantRoute | None:
        if self.shifted is not None and random.random() < self.shifted_fraction:
            picked = self.shifted.pick(target_variant)
            if picked is not None:
                return picked
        # A serverless variant without instances is routable: the request waits for its cold start.
        live = [v for v in self.variants if v.replicas or v.serverless is not None]
        if target_variant is not None:
            return next((v for v in live if v.name == target_variant), None)
        weighted = [v for v in live if v.weight > 0]
        if not weighted:
            return None
        if len(weighted) == 1:
            return weighted[0]
        return random.choices(weighted, weights=[v.weight for v in weighted])[0]

    def all_variants(self) -> list[VariantRoute]:
        return self.variants + self.shadows


class Router:
    def __init__(self) -> None:
        self._routes: dict[str, EndpointRoute] = {}
        self._lock = threading.Lock()
        self._client: UpstreamPool | None = None
        self._last_used: dict[tuple[str, str], float] = {}
        self._demand: set[tuple[str, str]] = set()
        self._cold_start_failures: dict[tuple[str, str], tuple[float, str]] = {}
        self.on_demand: Callable[[], None] = lambda: None  # wakes the deployment reconciler

    def set(self, endpoint: str, route: EndpointRoute) -> None:
        with self._lock:
            self._routes[endpoint] = route

    def remove(self, endpoint: str) -> EndpointRoute | None:
        with self._lock:
            for key in [k for k in self._last_used if k[0] == endpoint]:
                del self._last_used[key]
            self._demand = {k for k in self._demand if k[0] != endpoint}
            return self._routes.pop(endpoint, None)

    def get(self, endpoint: str) -> EndpointRoute | None:
        return self._routes.get(endpoint)

    # -- what requests tell the reconciler ---------------------------------------------------------
    def touch(self, endpoint: str, variant: str) -> None:
        self._last_used[(endpoint, variant)] = time.monotonic()

    def idle_seconds(self, endpoint: str, variant: str) -> float:
        """Seconds since the variant was last invoked (since this process started, if never)."""
        return time.monotonic() - self._last_used.setdefault((endpoint, variant), time.monotonic())

    def demand(self, endpoint: str, variant: str) -> None:
        """A request waits for a serverless variant that has no instance: ask for a cold start."""
        with self._lock:
            new = (endpoint, variant) not in self._demand
            self._demand.add((endpoint, variant))
        if new:
            self.on_demand()

    def take_demand(self, endpoint: str) -> set[str]:
        with self._lock:
            taken = {v for (e, v) in self._demand if e == endpoint}
            self._demand -= {(endpoint, v) for v in taken}
        return taken

    def cold_start_failed(self, endpoint: str, variant: str, reason: str) -> None:
        self._cold_start_failures[(endpoint, variant)] = (time.monotonic(), reason)

    def cold_start_failure(self, endpoint: str, variant: str, since: float) -> str | None:
        """Why a cold start requested after ``since`` (time.monotonic()) failed, if it did."""
        failure = self._cold_start_failures.get((endpoint, variant))
        return failure[1] if failure is not None and failure[0] >= since else None

    @staticmethod
    def outstanding(route: EndpointRoute | None) -> int:
        if route is None:
            return 0
        # the shifted route is the new fleet
        return sum(v.in_flight() for v in route.all_variants())

    def client(self) -> UpstreamPool:
        # Created lazily inside the server's event loop; pooled keep-alive connections to the replicas.
        if self._client is None:
            self._client = UpstreamPool()
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
