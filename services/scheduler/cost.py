"""What GPU time costs: a price table per provider and GPU type, with each provider's billing
granularity, and the cost of an attempt. Pure functions, no I/O."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from comfyfleet.common.config import ConfigError

ANY_GPU = "*"


@dataclass(frozen=True)
class Billing:
    """How a provider rounds the seconds it bills: up to a whole ``increment_s``, and never
    less than ``minimum_s`` for a run that happened at all (per second: 1 and 0; a 10-minute
    minimum as on Verda: 1 and 600)."""

    increment_s: float = 1.0
    minimum_s: float = 0.0

    def __post_init__(self) -> None:
        if self.increment_s <= 0 or self.minimum_s < 0:
            raise ConfigError("billing increment must be positive and minimum not negative")

    def billed_s(self, seconds: float) -> float:
        if seconds <= 0:
            return 0.0
        # Rounded before ceil, so 3.0000000001 increments of float noise bill as 3.
        whole = math.ceil(round(seconds / self.increment_s, 6)) * self.increment_s
        return max(whole, self.minimum_s)


@dataclass(frozen=True)
class ProviderPrices:
    """One provider's hourly price per GPU type, ``*`` for any type not listed."""

    usd_per_hour: Mapping[str, float]
    billing: Billing = field(default_factory=Billing)

    def hourly(self, gpu: str) -> float:
        """The price of ``gpu``: its exact name, else the longest listed name whose words it
        contains in a row ("H100" prices "NVIDIA H100 80GB HBM3"; "L4" is not "L40S"),
        else ``*``, else 0."""
        if gpu in self.usd_per_hour:
            return self.usd_per_hour[gpu]
        words = _words(gpu)
        matches = [k for k in self.usd_per_hour if k != ANY_GPU and _contains(words, _words(k))]
        if matches:
            return self.usd_per_hour[max(matches, key=len)]
        return self.usd_per_hour.get(ANY_GPU, 0.0)

    @property
    def reference(self) -> float:
        """The provider's typical price, for ordering providers: ``*``, else its cheapest."""
        if ANY_GPU in self.usd_per_hour:
            return self.usd_per_hour[ANY_GPU]
        return min(self.usd_per_hour.values(), default=0.0)


@dataclass(frozen=True)
class PriceTable:
    providers: Mapping[str, ProviderPrices]

    def hourly(self, provider: str, gpu: str) -> float:
        prices = self.providers.get(provider)
        return prices.hourly(gpu) if prices else 0.0

    def reference(self, provider: str) -> float:
        prices = self.providers.get(provider)
        return prices.reference if prices else 0.0

    def cost_usd(self, provider: str, gpu: str, seconds: float) -> float:
        """What ``seconds`` of ``gpu`` on ``provider`` cost, with the provider's rounding."""
        prices = self.providers.get(provider)
        if prices is None:
            return 0.0
        return prices.billing.billed_s(seconds) * prices.hourly(gpu) / 3600.0

    @classmethod
    def parse(cls, text: str) -> PriceTable:
        """``{"<provider>": {"usd_per_hour": {"<gpu>": 1.2, "*": 0.9}, "increment_s": 1,
        "minimum_s": 0}, ...}``"""
        try:
            doc = json.loads(text)
        except ValueError as err:
            raise ConfigError(f"the price table is not JSON: {err}") from None
        if not isinstance(doc, dict):
            raise ConfigError("the price table must be a JSON object of providers")
        return cls({name: _provider(name, entry) for name, entry in doc.items()})


def _words(name: str) -> list[str]:
    return [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w]


def _contains(words: list[str], part: list[str]) -> bool:
    n = len(part)
    return n > 0 and any(words[i : i + n] == part for i in range(len(words) - n + 1))


def _provider(name: str, entry: Any) -> ProviderPrices:
    if not isinstance(entry, dict) or not isinstance(entry.get("usd_per_hour"), dict):
        raise ConfigError(f"price table: {name} needs a usd_per_hour object")
    prices = entry["usd_per_hour"]
    if not all(isinstance(v, int | float) and v >= 0 for v in prices.values()):
        raise ConfigError(f"price table: {name}'s prices must be numbers >= 0")
    billing = Billing(
        increment_s=float(entry.get("increment_s", 1.0)),
        minimum_s=float(entry.get("minimum_s", 0.0)),
    )
    return ProviderPrices({str(k): float(v) for k, v in prices.items()}, billing)


# Approximate on-demand list prices in USD per GPU-hour (2025): RunPod serverless flex workers
# billed per second (``*``: its 24 GB tier); ECS on EC2 GPU instances (per GPU of g5, g6, g6e,
# p4d and p5; ``*``: g5's A10G), billed per second with a one-minute minimum. With these,
# RunPod is the first choice and ECS the fallback, as in the source design. Set
# COMFYFLEET_SCHEDULER_PRICES for your own contracts.
DEFAULT_PRICES = PriceTable(
    {
        "local": ProviderPrices({ANY_GPU: 0.0}),
        "runpod": ProviderPrices(
            {
                "RTX 4090": 1.12,
                "RTX A6000": 1.22,
                "L40S": 1.91,
                "A100": 2.74,
                "H100": 4.18,
                "L4": 0.68,
                ANY_GPU: 0.68,
            }
        ),
        "ecs": ProviderPrices(
            {"A10G": 1.01, "L4": 0.80, "L40S": 1.86, "A100": 4.10, "H100": 12.29, ANY_GPU: 1.01},
            Billing(increment_s=1.0, minimum_s=60.0),
        ),
    }
)
