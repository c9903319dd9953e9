"""Model weights loaded on the engine's device, kept between runs within a memory budget.

The disk cache (``models.py``) keeps files; this cache keeps what runs use: the tensors of
each safetensors model, loaded onto the engine's device, least recently used first out once
the loaded bytes pass the budget. Evicting drops the cache's references and, on CUDA, hands
the freed blocks back to the driver (``torch.cuda.empty_cache()``), so VRAM really goes once
no run holds the tensors. A run holds its models until it ends: they are never evicted under
it, even when together they exceed the budget. Loads are blocking (call from a worker
thread) and one model is loaded once however many callers ask for it at the same moment.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import safetensors
import safetensors.torch
import torch

from comfyfleet.common.errors import FailedPrecondition, ResourceExhausted

log = logging.getLogger(__name__)

# The files this cache loads; models in other formats stay on disk only.
WEIGHT_SUFFIXES = (".safetensors", ".sft")


def loads_weights(name: str) -> bool:
    """Whether a model file of this name is loaded into the weights cache."""
    return name.lower().endswith(WEIGHT_SUFFIXES)


@dataclass(frozen=True, eq=False)
class LoadedWeights:
    """One model's tensors on the engine's device; ``sha256`` names the file they came from."""

    sha256: str
    tensors: Mapping[str, torch.Tensor] = field(repr=False)
    nbytes: int


Loader = Callable[[Path, str], Mapping[str, torch.Tensor]]


def load_safetensors(path: Path, device: str) -> Mapping[str, torch.Tensor]:
    """Every tensor of a safetensors file, created directly on ``device``."""
    return safetensors.torch.load_file(str(path), device=device)


@dataclass(frozen=True)
class WeightsStats:
    """What the cache holds and how it has been used since start."""

    models: tuple[str, ...]
    used_bytes: int
    budget_bytes: int
    hits: int
    misses: int
    evictions: int


class WeightsCache:
    """Loaded models by sha256, bounded by ``budget_bytes`` of device (or host) memory."""

    def __init__(self, device: str, budget_bytes: int, load: Loader = load_safetensors) -> None:
        self.device = device
        self.budget_bytes = budget_bytes
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        # Files actually read: concurrent misses of one model share a load.
        self.loads = 0
        self._load = load
        self._entries: OrderedDict[str, LoadedWeights] = OrderedDict()  # least recent first
        self._pins: Counter[str] = Counter()
        self._loading: dict[str, Future[LoadedWeights]] = {}
        self._lock = threading.Lock()

    def cached(self) -> list[str]:
        """The sha256 of every loaded model, least recently used first."""
        with self._lock:
            return list(self._entries)

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return self._used()

    def stats(self) -> WeightsStats:
        with self._lock:
            return WeightsStats(
                tuple(self._entries),
                self._used(),
                self.budget_bytes,
                self.hits,
                self.misses,
                self.evictions,
            )

    def acquire_all(self, models: Mapping[str, tuple[str, Path]]) -> dict[str, LoadedWeights]:
        """Loads every model (``key -> (sha256, path)``) and holds each until :meth:`release`.

        On a failure nothing stays held and the error says which model it was.
        """
        held: dict[str, LoadedWeights] = {}
        try:
            for key, (sha256, path) in models.items():
                held[key] = self.acquire(sha256, path, key)
        except BaseException:
            self.release([w.sha256 for w in held.values()])
            raise
        return held

    def acquire(self, sha256: str, path: Path, key: str = "") -> LoadedWeights:
        """The model's loaded weights, held until :meth:`release`; loads them on a miss."""
        with self._lock:
            self._pins[sha256] += 1
            entry = self._entries.get(sha256)
            if entry is not None:
                self.hits += 1
                self._entries.move_to_end(sha256)
                return entry
            self.misses += 1
            pending = self._loading.get(sha256)
            if pending is None:
                pending = self._loading[sha256] = Future()
                owner = True
            else:
                owner = False
        try:
            if owner:
                return self._load_shared(sha256, path, key or path.name, pending)
            return pending.result()
        except BaseException:
            self.release([sha256])
            raise

    def release(self, sha256s: list[str]) -> None:
        """Lets go of held models; what no run holds is evicted until the cache fits."""
        with self._lock:
            self._pins.subtract(sha256s)
            self._pins += Counter()  # drops the zero counts
            evicted = self._evict(self.budget_bytes)
        self._free(evicted)

    def _load_shared(
        self, sha256: str, path: Path, key: str, pending: Future[LoadedWeights]
    ) -> LoadedWeights:
        """Loads for every caller waiting on ``pending``; room is made before, not after."""
        try:
            with self._lock:
                evicted = self._evict(self.budget_bytes - _tensor_bytes(path))
            self._free(evicted)
            weights = self._read(sha256, path, key)
        except BaseException as err:
            with self._lock:
                del self._loading[sha256]
            pending.set_exception(err)
            raise
        with self._lock:
            del self._loading[sha256]
            self._entries[sha256] = weights
            self.loads += 1
        pending.set_result(weights)
        return weights

    def _read(self, sha256: str, path: Path, key: str) -> LoadedWeights:
        metadata = {"model": key, "sha256": sha256}
        try:
            tensors = dict(self._load(path, self.device))
        except torch.OutOfMemoryError as err:
            raise ResourceExhausted(
                f"model {key} does not fit in {self.device} memory: {err}",
                reason="MODEL_OUT_OF_MEMORY",
                metadata=metadata,
            ) from err
        except (safetensors.SafetensorError, ValueError) as err:
            # The file has the sha256 the models service recorded: another try reads the same.
            raise FailedPrecondition(
                f"model {key} is not a readable safetensors file: {err}",
                reason="MODEL_UNREADABLE",
                metadata=metadata,
            ) from err
        nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
        log.info("loaded model %s (%s, %d bytes) onto %s", key, sha256, nbytes, self.device)
        return LoadedWeights(sha256, tensors, nbytes)

    def _used(self) -> int:
        return sum(w.nbytes for w in self._entries.values())

    def _evict(self, limit: int) -> list[LoadedWeights]:
        """Takes least recently used models no run holds out until at most ``limit`` bytes
        are loaded (called with the lock held); returns them, to be freed outside it."""
        evicted: list[LoadedWeights] = []
        for sha256 in list(self._entries):
            if self._used() <= limit:
                break
            if self._pins[sha256] > 0:
                continue
            evicted.append(self._entries.pop(sha256))
            self.evictions += 1
        return evicted

    def _free(self, evicted: list[LoadedWeights]) -> None:
        if not evicted:
            return
        for weights in evicted:
            log.info("evicted model %s (%d bytes) from memory", weights.sha256, weights.nbytes)
        evicted.clear()  # the last references the cache had
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()


def _tensor_bytes(path: Path) -> int:
    """The bytes a safetensors file's tensors will take: the file less its JSON header."""
    try:
        with path.open("rb") as file:
            header = int.from_bytes(file.read(8), "little")
            return max(path.stat().st_size - 8 - header, 0)
    except OSError:
        return 0
