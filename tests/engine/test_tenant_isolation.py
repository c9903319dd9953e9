"""Issue 11 on the native engine: its node cache and output folder are shared by every
tenant an executor serves, yet nothing one tenant's run computed or saved reaches another."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from comfyfleet.workflow.runner import CancelToken
from services.executor.engine import (
    SHARED_SCOPE,
    Engine,
    EngineJob,
    EngineResult,
    build_engine,
    tenant_scope,
)
from tests.engine.devices import native_device
from tests.support.tenant_leak import (
    assert_no_trace_of_a,
    png_prompt,
    tenant_a_workflow,
    tenant_b_workflow,
)

A, B = tenant_scope("tenant-a"), tenant_scope("tenant-b")


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return build_engine("native", native_device(), tmp_path / "work")


def run(engine: Engine, workflow: dict[str, Any], scope: str, tmp_path: Path) -> EngineResult:
    inputs = tmp_path / "inputs"
    inputs.mkdir(exist_ok=True)
    job = EngineJob(json.dumps(workflow), inputs, cache_scope=scope)
    return engine.run(job, lambda event: None, CancelToken())


def test_b_gets_its_own_file_not_as_cached_one(engine: Engine, tmp_path: Path) -> None:
    run(engine, tenant_a_workflow(), A, tmp_path)
    b = run(engine, tenant_b_workflow(), B, tmp_path)

    assert b.cached_nodes == ()
    [file] = b.files
    assert_no_trace_of_a(file.data)
    assert sorted(png_prompt(file.data)) == ["1", "3"]
    # A's file stays out of B's folder: B's counter starts where it would alone.
    assert file.filename == "ComfyUI_00001_.png"


def test_a_resubmission_is_answered_from_the_cache(engine: Engine, tmp_path: Path) -> None:
    first = run(engine, tenant_a_workflow(), A, tmp_path)
    again = run(engine, tenant_a_workflow(), A, tmp_path)

    assert sorted(again.cached_nodes) == ["1", "3"]
    assert [f.data for f in again.files] == [f.data for f in first.files]


def test_a_tenants_other_prompt_reuses_nodes_but_saves_its_own_file(
    engine: Engine, tmp_path: Path
) -> None:
    run(engine, tenant_a_workflow(), A, tmp_path)
    other = run(engine, tenant_b_workflow(), A, tmp_path)

    # The image is reused; the file embedding the first prompt is not.
    assert other.cached_nodes == ("1",)
    [file] = other.files
    assert_no_trace_of_a(file.data)
    assert sorted(png_prompt(file.data)) == ["1", "3"]


def test_tenants_taking_turns_never_share(engine: Engine, tmp_path: Path) -> None:
    for scope, workflow in ((A, tenant_a_workflow()), (B, tenant_b_workflow())) * 2:
        result = run(engine, workflow, scope, tmp_path)
        assert result.cached_nodes == ()
        if scope == B:
            assert_no_trace_of_a(result.files[0].data)


def test_a_warmup_serves_every_tenant_but_not_its_files(engine: Engine, tmp_path: Path) -> None:
    run(engine, tenant_b_workflow(), SHARED_SCOPE, tmp_path)
    b = run(engine, tenant_b_workflow(), B, tmp_path)

    assert b.cached_nodes == ("1",)
    assert [f.filename for f in b.files] == ["ComfyUI_00001_.png"]
