"""The loaded-weights cache on CPU, with small real safetensors files."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import threading
import weakref
from collections.abc import Mapping
from pathlib import Path

import pytest
import safetensors.torch
import torch

from comfyfleet.common.errors import FailedPrecondition, ResourceExhausted
from services.executor import weights as weights_module
from services.executor.resources import device_info, weights_budget
from services.executor.weights import (
    LoadedWeights,
    WeightsCache,
    load_safetensors,
    loads_weights,
)
from tests.support.eventually import eventually

# Each model below holds one float32 tensor of this many elements: 4 KiB of weights.
ELEMENTS = 1024
MODEL_BYTES = ELEMENTS * 4


def write_model(folder: Path, fill: float) -> tuple[str, Path]:
    """A safetensors file whose one tensor is ``fill`` everywhere; returns (sha256, path)."""
    data = safetensors.torch.save({"weight": torch.full((ELEMENTS,), fill)})
    sha256 = hashlib.sha256(data).hexdigest()
    path = folder / sha256
    path.write_bytes(data)
    return sha256, path


@pytest.fixture
def models(tmp_path: Path) -> dict[str, tuple[str, Path]]:
    return {name: write_model(tmp_path, i + 1.0) for i, name in enumerate("abcd")}


def use(cache: WeightsCache, model: tuple[str, Path]) -> LoadedWeights:
    """One run's use of a model: load (or hit), then let go."""
    loaded = cache.acquire(*model)
    cache.release([loaded.sha256])
    return loaded


def test_a_model_is_loaded_once_and_then_served_from_memory(
    models: dict[str, tuple[str, Path]],
) -> None:
    cache = WeightsCache("cpu", budget_bytes=10 * MODEL_BYTES)

    first = use(cache, models["a"])
    second = use(cache, models["a"])

    assert second is first
    assert torch.equal(first.tensors["weight"], torch.full((ELEMENTS,), 1.0))
    assert first.tensors["weight"].device.type == "cpu"
    assert (first.sha256, first.nbytes) == (models["a"][0], MODEL_BYTES)
    assert (cache.loads, cache.misses, cache.hits, cache.evictions) == (1, 1, 1, 0)
    stats = cache.stats()
    assert (stats.models, stats.used_bytes) == ((models["a"][0],), MODEL_BYTES)


def test_least_recently_used_models_are_evicted_past_the_budget(
    models: dict[str, tuple[str, Path]],
) -> None:
    cache = WeightsCache("cpu", budget_bytes=3 * MODEL_BYTES)
    for name in "abc":
        use(cache, models[name])
    use(cache, models["a"])  # a is now the most recently used

    use(cache, models["d"])

    sha = {name: model[0] for name, model in models.items()}
    assert cache.cached() == [sha["c"], sha["a"], sha["d"]]
    assert cache.evictions == 1
    assert cache.used_bytes == 3 * MODEL_BYTES
    use(cache, models["b"])  # evicted before: read again
    assert cache.loads == 5


def test_an_evicted_model_is_freed(models: dict[str, tuple[str, Path]]) -> None:
    cache = WeightsCache("cpu", budget_bytes=MODEL_BYTES)
    tensor = weakref.ref(use(cache, models["a"]).tensors["weight"])
    assert tensor() is not None

    use(cache, models["b"])
    gc.collect()

    assert cache.cached() == [models["b"][0]]
    assert tensor() is None


def test_a_held_model_is_kept_past_the_budget_until_its_run_ends(
    models: dict[str, tuple[str, Path]],
) -> None:
    cache = WeightsCache("cpu", budget_bytes=MODEL_BYTES)
    held = cache.acquire_all({"checkpoints/a.safetensors": models["a"]})
    tensor = weakref.ref(held["checkpoints/a.safetensors"].tensors["weight"])

    use(cache, models["b"])  # over budget: b goes at once, a is held
    assert cache.cached() == [models["a"][0]]
    assert cache.evictions == 1

    cache.release([w.sha256 for w in held.values()])
    use(cache, models["c"])
    del held
    gc.collect()
    assert cache.cached() == [models["c"][0]]
    assert tensor() is None


def test_a_model_larger_than_the_budget_is_loaded_for_its_run_only(
    models: dict[str, tuple[str, Path]],
) -> None:
    cache = WeightsCache("cpu", budget_bytes=0)

    loaded = cache.acquire(*models["a"])
    assert cache.cached() == [models["a"][0]]
    assert torch.equal(loaded.tensors["weight"], torch.ones(ELEMENTS))
    cache.release([loaded.sha256])

    assert (cache.cached(), cache.used_bytes, cache.evictions) == ([], 0, 1)


async def test_concurrent_requests_for_one_model_share_one_load(
    models: dict[str, tuple[str, Path]],
) -> None:
    gate = threading.Event()
    reads: list[Path] = []

    def slow_load(path: Path, device: str) -> Mapping[str, torch.Tensor]:
        reads.append(path)
        gate.wait(5)
        return load_safetensors(path, device)

    cache = WeightsCache("cpu", budget_bytes=10 * MODEL_BYTES, load=slow_load)
    callers = [asyncio.to_thread(cache.acquire, *models["a"]) for _ in range(3)]
    loading = asyncio.gather(*callers)

    async def all_waiting() -> None:
        assert cache.misses == 3

    await eventually(all_waiting)
    gate.set()
    loaded = await loading

    assert len(reads) == 1 and cache.loads == 1
    assert loaded[0] is loaded[1] is loaded[2]
    cache.release([w.sha256 for w in loaded])
    assert cache.cached() == [models["a"][0]]


async def test_a_failed_load_fails_every_waiter_and_holds_nothing(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not a header at all")
    sha = hashlib.sha256(broken.read_bytes()).hexdigest()
    gate = threading.Event()

    def gated_load(path: Path, device: str) -> Mapping[str, torch.Tensor]:
        gate.wait(5)
        return load_safetensors(path, device)

    cache = WeightsCache("cpu", budget_bytes=0, load=gated_load)
    callers = [asyncio.to_thread(cache.acquire, sha, broken, "loras/x.safetensors") for _ in "ab"]
    failing = asyncio.gather(*callers, return_exceptions=True)

    async def both_waiting() -> None:
        assert cache.misses == 2

    await eventually(both_waiting)
    gate.set()
    errors = await failing

    assert all(isinstance(e, FailedPrecondition) for e in errors)
    first = errors[0]
    assert isinstance(first, FailedPrecondition)
    assert first.reason == "MODEL_UNREADABLE" and not first.retryable
    assert first.metadata == {"model": "loras/x.safetensors", "sha256": sha}
    assert cache.cached() == [] and cache.loads == 0
    # Nothing stayed held: the cache can take the next model as if the failure never was.
    assert cache.stats().used_bytes == 0


def test_a_failed_model_among_several_releases_the_ones_already_loaded(
    tmp_path: Path, models: dict[str, tuple[str, Path]]
) -> None:
    broken = tmp_path / "broken"
    broken.write_bytes(b"garbage")
    cache = WeightsCache("cpu", budget_bytes=0)

    with pytest.raises(FailedPrecondition):
        cache.acquire_all({"checkpoints/a.safetensors": models["a"], "loras/b": ("0" * 64, broken)})

    # a was loaded, then let go when b failed: with a zero budget it is gone.
    assert cache.cached() == []
    assert cache.loads == 1


def test_a_model_that_does_not_fit_in_memory_may_be_retried(
    models: dict[str, tuple[str, Path]],
) -> None:
    def out_of_memory(path: Path, device: str) -> Mapping[str, torch.Tensor]:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    cache = WeightsCache("cuda:0", budget_bytes=MODEL_BYTES, load=out_of_memory)

    with pytest.raises(ResourceExhausted) as raised:
        cache.acquire(*models["a"], key="checkpoints/a.safetensors")

    assert raised.value.retryable and raised.value.reason == "MODEL_OUT_OF_MEMORY"
    assert cache.cached() == []


def test_eviction_on_cuda_hands_the_freed_blocks_back(
    models: dict[str, tuple[str, Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    emptied: list[bool] = []
    monkeypatch.setattr(weights_module.torch.cuda, "empty_cache", lambda: emptied.append(True))
    # The tensors stay on the CPU (no GPU here); the cache only knows its device's name.
    cache = WeightsCache(
        "cuda:0", budget_bytes=MODEL_BYTES, load=lambda p, d: load_safetensors(p, "cpu")
    )

    use(cache, models["a"])
    assert emptied == []
    use(cache, models["b"])

    assert emptied == [True]
    assert cache.cached() == [models["b"][0]]


def test_on_cpu_nothing_calls_into_cuda(
    models: dict[str, tuple[str, Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_cuda() -> None:
        raise AssertionError("empty_cache called on a CPU executor")

    monkeypatch.setattr(weights_module.torch.cuda, "empty_cache", no_cuda)
    cache = WeightsCache("cpu", budget_bytes=0)

    use(cache, models["a"])

    assert cache.evictions == 1


def test_only_safetensors_files_are_loaded() -> None:
    assert loads_weights("sd15.safetensors") and loads_weights("LORA.SFT")
    assert not loads_weights("old.ckpt") and not loads_weights("model.pt")


def test_the_budget_is_as_configured_or_a_share_of_free_memory() -> None:
    assert weights_budget("cpu", 123, 0.5) == 123
    assert weights_budget("cpu", 0, 0.5) == 0
    free = device_info("cpu").free_memory_bytes
    derived = weights_budget("cpu", None, 0.25)
    assert 0 < derived <= free // 2
