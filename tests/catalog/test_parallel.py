"""How many requests a model decodes together, and the memory that takes (issue 14).

Real installed tiny models (their metadata read from the files), the real model page; the
budget is set with ``settings`` to sit between two estimates, computed from those models.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse

from inference import formats
from inference.backends.llama_cpp import default_context_length
from opsdash.catalog.models import LocalModel
from opsdash.runs import capacity
from opsdash.runs.services import model_spec, parallel_sequences
from tests.factories import local_model

pytestmark = pytest.mark.django_db


def estimate(model: LocalModel, n: int) -> formats.MemoryEstimate:
    found = capacity.memory_estimate(model, parallel_sequences=n)
    assert found is not None
    return found


def page_text(client: Client, model: LocalModel) -> str:
    response = client.get(reverse("catalog:detail", args=[model.pk]))
    assert response.status_code == 200
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.content.decode()))


# --- the estimate ---------------------------------------------------------------------------


def test_the_kv_cache_estimate_grows_with_each_sequence_and_the_weights_do_not(
    tiny_model: LocalModel,
) -> None:
    metadata = formats.ModelMetadata.from_dict(tiny_model.metadata)
    one = formats.estimate_memory(metadata, context_length=2048)
    four = formats.estimate_memory(metadata, context_length=2048, parallel_sequences=4)
    assert one.kv_cache_bytes > 0
    assert four.kv_cache_bytes == 4 * one.kv_cache_bytes
    assert (four.weights_bytes, four.overhead_bytes) == (one.weights_bytes, one.overhead_bytes)
    assert four.total_bytes - one.total_bytes == 3 * one.kv_cache_bytes
    assert (four.parallel_sequences, four.context_length) == (4, 2048)
    with pytest.raises(ValueError, match="at least 1"):
        formats.estimate_memory(metadata, parallel_sequences=0)


def test_each_sequence_gets_the_context_the_llama_cpp_backend_gives_one_request(
    tiny_model: LocalModel, endless_model: LocalModel
) -> None:
    # The run path's rule (from stored metadata) must be the backend's (from the file): the
    # lead's engine allocates that many positions per sequence.
    for model in (tiny_model, endless_model):
        expected = default_context_length(Path(model.file_path))
        assert capacity.sequence_context_length(model) == expected
    assert capacity.sequence_context_length(endless_model) != capacity.sequence_context_length(
        tiny_model
    )


# --- how many sequences ---------------------------------------------------------------------


def test_a_llama_cpp_model_decodes_the_configured_number_of_sequences(
    tiny_model: LocalModel, settings
) -> None:  # type: ignore[no-untyped-def]
    settings.PARALLEL_SEQUENCES = 4
    settings.MEMORY_BUDGET_BYTES = 64 * 1024**3
    assert parallel_sequences(tiny_model) == 4
    spec = model_spec(tiny_model)
    assert spec.parallel_sequences == 4
    assert spec.load_options().parallel_sequences == 4
    assert spec.estimated_bytes == estimate(tiny_model, 4).total_bytes


def test_fewer_sequences_when_the_memory_budget_cannot_hold_the_kv_cache_for_all(
    tiny_model: LocalModel, settings
) -> None:  # type: ignore[no-untyped-def]
    settings.PARALLEL_SEQUENCES = 4
    # Room for two sequences' KV cache, not three.
    settings.MEMORY_BUDGET_BYTES = estimate(tiny_model, 2).total_bytes + 1
    assert estimate(tiny_model, 3).total_bytes > settings.MEMORY_BUDGET_BYTES
    assert parallel_sequences(tiny_model) == 2
    spec = model_spec(tiny_model)
    assert (spec.parallel_sequences, spec.estimated_bytes) == (
        2,
        estimate(tiny_model, 2).total_bytes,
    )

    # Not even one fits: still one (the supervisor's budget then says why it cannot load).
    settings.MEMORY_BUDGET_BYTES = 1024
    assert parallel_sequences(tiny_model) == 1


def test_a_ctransformers_model_runs_one_request_at_a_time(
    tiny_gpt2_model: LocalModel, settings
) -> None:  # type: ignore[no-untyped-def]
    settings.PARALLEL_SEQUENCES = 8
    settings.MEMORY_BUDGET_BYTES = 64 * 1024**3
    assert tiny_gpt2_model.backend == "ctransformers"
    assert parallel_sequences(tiny_gpt2_model) == 1
    assert model_spec(tiny_gpt2_model).parallel_sequences == 1


def test_a_model_without_metadata_gets_the_setting_and_its_file_size_as_estimate(
    settings,
) -> None:  # type: ignore[no-untyped-def]
    settings.PARALLEL_SEQUENCES = 3
    model = local_model(backend="llama_cpp", size_bytes=5000, file_path="/models/x.gguf")
    spec = model_spec(model)
    assert (spec.parallel_sequences, spec.estimated_bytes) == (3, 5000)


def test_a_placement_tells_the_node_the_same_sequences_and_estimate(
    tiny_model: LocalModel, settings
) -> None:  # type: ignore[no-untyped-def]
    from opsdash.fleet.agent_store import HeldModel
    from opsdash.fleet.placements import placement_spec

    settings.PARALLEL_SEQUENCES = 4
    settings.MEMORY_BUDGET_BYTES = estimate(tiny_model, 3).total_bytes + 1
    placement = placement_spec(tiny_model)
    assert placement["parallel_sequences"] == 3
    assert placement["estimated_bytes"] == estimate(tiny_model, 3).total_bytes

    # The agent loads its copy the way the hub said (and one at a time for an older hub).
    held = HeldModel(
        model_id=tiny_model.pk,
        sha256=tiny_model.sha256,
        path=tiny_model.file_path,
        name=tiny_model.name,
        slug=tiny_model.slug,
        backend=tiny_model.backend,
        size_bytes=tiny_model.size_bytes or 0,
    )
    spec = held.spec(dict(placement))
    assert (spec.parallel_sequences, spec.estimated_bytes) == (3, placement["estimated_bytes"])
    old_hub = held.spec({"model_id": tiny_model.pk, "sha256": tiny_model.sha256})
    assert (old_hub.parallel_sequences, old_hub.estimated_bytes) == (1, tiny_model.size_bytes)
    assert held.spec({"parallel_sequences": 9999}).parallel_sequences == 1


# --- the model page -------------------------------------------------------------------------


def test_the_model_page_says_how_many_requests_a_llama_cpp_model_decodes_together(
    tiny_model: LocalModel, as_operator: Client, settings
) -> None:  # type: ignore[no-untyped-def]
    settings.PARALLEL_SEQUENCES = 4
    settings.MEMORY_BUDGET_BYTES = 64 * 1024**3
    text = page_text(as_operator, tiny_model)
    assert "Decodes up to 4 requests together (OPSDASH_PARALLEL_SEQUENCES)." in text
    # The memory verdict is for four sequences, and says so.
    four = estimate(tiny_model, 4)
    context = f"{four.context_length:,}"
    assert f"for 4 sequences of {context} tokens" in text


def test_the_model_page_says_when_the_budget_allows_fewer_sequences(
    tiny_model: LocalModel, as_operator: Client, settings
) -> None:  # type: ignore[no-untyped-def]
    settings.PARALLEL_SEQUENCES = 4
    settings.MEMORY_BUDGET_BYTES = estimate(tiny_model, 2).total_bytes + 1
    text = page_text(as_operator, tiny_model)
    assert "Decodes up to 2 requests together" in text
    assert "OPSDASH_PARALLEL_SEQUENCES asks for 4" in text
    assert "OPSDASH_MEMORY_BUDGET_BYTES" in text
    assert "for 2 sequences of" in text


def test_the_model_page_says_ctransformers_runs_one_request_at_a_time(
    tiny_gpt2_model: LocalModel, as_operator: Client, settings
) -> None:  # type: ignore[no-untyped-def]
    settings.PARALLEL_SEQUENCES = 4
    text = page_text(as_operator, tiny_gpt2_model)
    assert "ctransformers runs one request at a time; others wait in the queue." in text
    assert "Decodes up to" not in text


# --- /api/runtime ---------------------------------------------------------------------------


def test_api_runtime_says_how_many_sequences_each_loaded_runner_decodes_together(
    tiny_model: LocalModel, as_operator: Client, settings
) -> None:  # type: ignore[no-untyped-def]
    from asgiref.sync import async_to_sync

    from opsdash.runs.runtime import get_supervisor

    settings.PARALLEL_SEQUENCES = 3
    settings.MEMORY_BUDGET_BYTES = 64 * 1024**3
    async_to_sync(get_supervisor().load)(model_spec(tiny_model))
    response = as_operator.get("/api/runtime")
    assert response.status_code == 200
    (loaded,) = response.json()["loaded"]
    assert loaded["model"] == tiny_model.pk
    assert (loaded["parallel_sequences"], loaded["active_sequences"]) == (3, 0)
