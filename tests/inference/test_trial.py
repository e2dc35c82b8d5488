"""The trial load: a real runner process loads the model, and every failure becomes a sentence."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference.runtime.process import OUTPUT_TAIL_CHARS
from inference.runtime.trial import CRASH_FOR_TESTS_ENV, TrialResult, trial_load
from tests.inference.conftest import RunPython


def _assert_ok(result: TrialResult) -> None:
    assert result.error is None, result.error
    assert result.ok
    assert result.prompt_tokens > 5  # the trial prompt is a sentence, not one token
    assert result.sample_text.strip(), "the model wrote no visible text"
    assert 0 < result.seconds < 60


def test_it_accepts_the_tiny_gguf_in_llama_cpp(tiny_gguf_path: Path) -> None:
    _assert_ok(trial_load(tiny_gguf_path, backend="llama_cpp"))


def test_it_accepts_the_tiny_gguf_in_ctransformers(tiny_gguf_path: Path) -> None:
    _assert_ok(trial_load(tiny_gguf_path, backend="ctransformers"))


def test_it_accepts_the_tiny_ggml_gpt2_in_ctransformers(tiny_ggml_path: Path) -> None:
    _assert_ok(trial_load(tiny_ggml_path, backend="ctransformers", model_type="gpt2"))


def test_it_accepts_smollm2_in_llama_cpp(smollm2_path: Path) -> None:
    result = trial_load(smollm2_path, backend="llama_cpp")
    _assert_ok(result)
    # Greedy decoding of "... Once upon a time" by a real instruct model.
    assert result.sample_text.startswith(",")


def test_it_refuses_smollm2_in_ctransformers_and_points_to_llama_cpp(smollm2_path: Path) -> None:
    result = trial_load(smollm2_path, backend="ctransformers")
    assert not result.ok
    assert result.error is not None
    assert result.error.startswith(
        "ctransformers could not load SmolLM2-135M-Instruct.Q4_1.gguf as a GGUF model."
    )
    assert "llama_cpp backend" in result.error


def test_it_turns_a_garbage_file_into_a_sentence(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"NOPE, this is not a model. " * 100)
    result = trial_load(garbage, backend="llama_cpp")
    assert not result.ok
    assert result.error == (
        "llama.cpp could not load garbage.gguf (invalid magic characters: 'NOPE', expected "
        "'GGUF'). The file may be damaged, or use an architecture or feature this build of "
        "llama.cpp does not know."
    )


def test_it_includes_the_end_of_the_backends_own_output(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"not a model at all" * 100)
    result = trial_load(garbage, backend="ctransformers", model_type="gpt2")
    assert not result.ok and result.error is not None
    assert result.error.startswith("ctransformers could not load garbage.bin")
    assert "Last output:" in result.error and "bad magic" in result.error
    assert len(result.error) < 400 + OUTPUT_TAIL_CHARS


def test_it_asks_for_the_model_type_of_a_legacy_file(tiny_ggml_path: Path) -> None:
    result = trial_load(tiny_ggml_path, backend="ctransformers")
    assert not result.ok and result.error is not None
    assert "choose its model type" in result.error


def test_it_says_which_backends_exist_when_given_an_unknown_one(tiny_gguf_path: Path) -> None:
    result = trial_load(tiny_gguf_path, backend="exllama")
    assert result.error == (
        "There is no backend called 'exllama'; choose one of ctransformers, llama_cpp."
    )


def test_it_names_the_signal_when_the_backend_crashes(
    tiny_gguf_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CRASH_FOR_TESTS_ENV, "SIGSEGV")
    result = trial_load(tiny_gguf_path, backend="llama_cpp")
    assert not result.ok and result.error is not None
    # The runner's own exit description, the one every run of a crashed runner gets too.
    assert result.error.startswith(
        "The model process died (SIGSEGV — a crash in the model's native code) while loading."
    )


def test_it_blames_memory_when_the_child_is_killed(
    tiny_gguf_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CRASH_FOR_TESTS_ENV, "SIGKILL")
    result = trial_load(tiny_gguf_path, backend="llama_cpp")
    assert result.error is not None
    assert result.error.startswith(
        "The model process died (SIGKILL — possibly out of memory) while loading."
    )


def test_it_gives_up_after_the_timeout(
    tiny_gguf_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stopped child never finishes, like a load stuck on a slow disk.
    monkeypatch.setenv(CRASH_FOR_TESTS_ENV, "SIGSTOP")
    result = trial_load(tiny_gguf_path, backend="llama_cpp", timeout=1.5)
    assert not result.ok
    assert result.error is not None
    assert result.error.startswith("The model did not finish loading within 1.5 s.")
    assert 1.5 <= result.seconds < 30


def test_a_stop_request_ends_a_hanging_trial_load_with_its_reason(
    tiny_gguf_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CRASH_FOR_TESTS_ENV, "SIGSTOP")
    asked: list[int] = []

    def should_stop() -> str | None:
        asked.append(1)
        return "Cancelled by ada." if len(asked) >= 2 else None

    result = trial_load(tiny_gguf_path, backend="llama_cpp", timeout=60, should_stop=should_stop)
    assert not result.ok
    assert result.error == "Cancelled by ada."
    assert result.seconds < 10, "it did not wait for the timeout"


def test_it_says_when_the_backend_library_is_not_installed(
    tiny_gguf_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A package of the same name earlier on the child's path that fails to import, as a
    # missing llama-cpp-python would.
    shadow = tmp_path / "shadow" / "llama_cpp"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('hidden for this test')\n")
    monkeypatch.setenv("PYTHONPATH", str(shadow.parent))
    result = trial_load(tiny_gguf_path, backend="llama_cpp")
    assert result.error == (
        "llama-cpp-python is not installed, so GGUF models cannot run; "
        "install it with `pip install llama-cpp-python`."
    )


def test_the_parent_process_never_imports_a_native_library(
    run_python: RunPython, tiny_gguf_path: Path
) -> None:
    code = r"""
import json, sys
from pathlib import Path
from inference.runtime.trial import trial_load
results = [trial_load(Path(sys.argv[1]), backend=name).ok
           for name in ("llama_cpp", "ctransformers")]
native = ("llama_cpp", "ctransformers")
loaded = sorted(m for m in sys.modules if m.split(".")[0] in native)
print(json.dumps({"ok": results, "loaded": loaded}))
"""
    assert run_python(code, str(tiny_gguf_path)) == {"ok": [True, True], "loaded": []}
