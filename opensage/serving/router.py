"""In-memory routing for InvokeEndpoint: endpoint -> variants (weight, ready replicas). No SQL per request.

The deployment reconciler replaces an endpoint's whole route atomically (blue/green: the new fleet is
healthy before it is routed to). Requests hold the route object they picked, so the old fleet can be
drained: ``outstanding(routes)`` counts requests still in flight on it.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field

from opensage.serving.upstream import UpstreamPool


@dataclass
class VariantRoute:
    name: str
    weight: float
    replicas: list[str]  # base URLs of healthy model servers
    outstanding: dict[str, int] = field(default_factory=dict)

    def pick_replica(self) -> str:
        # Least outstanding requests; ties broken at random so load spreads.
        best = min(self.outstanding.get(r, 0) for r in self.replicas)
        return random.choice([r for r in self.replicas if self.outstanding.get(r, 0) == best])


@dataclass
class EndpointRoute:
    variants: list[VariantRoute]
    # During a Canary/Linear blue/green update: this share of requests goes to the new fleet's route.
    shifted: EndpointRoute | None = None
    shifted_fraction: float = 0.0
    capture: dict | None = None  # the endpoint config's DataCaptureConfig

    def pick(self, target_variant: str | None) -> VariantRoute | None:
        if self.shifted is not None and random.random() < self.shifted_fraction:
            picked = self.shifted.pick(target_variant)
            if picked is not None:
                return picked
        live = [v for v in self.variants if v.replicas]
        if target_variant is not None:
            return next((v for v in live if v.name == target_variant), None)
        weighted = [v for v in live if v.weight > 0]
        if not weighted:
            return None
        return random.choices(weighted, weights=[v.weight for v in weighted])[0]


class Router:
    def __init__(self) -> None:
        self._routes: dict[str, EndpointRoute] = {}
        self._lock = threading.Lock()
        self._client: UpstreamPool | None = None

    def set(self, endpoint: str, route: EndpointRoute) -> None:
        with self._lock:
            self._routes[endpoint] = route

    def remove(self, endpoint: str) -> EndpointRoute | None:
        with self._lock:
            return self._routes.pop(endpoint, None)

    def get(self, endpoint: str) -> EndpointRoute | None:
        return self._routes.get(endpoint)

    @staticmethod
    def outstanding(route: EndpointRoute | None) -> int:
        if route is None:
            return 0
        return sum(sum(v.outstanding.values()) for v in route.variants)  # the shifted route is the new fleet

    def client(self) -> UpstreamPool:
        # Created lazily inside the server's event loop; pooled keep-alive connections to the replicas.
        if self._client is None:
            self._client = UpstreamPool()
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
