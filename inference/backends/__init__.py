"""The backend registry: every backend by name, and the choice of one for a model file.

``choose_backend`` walks the registry asking each backend's ``supports()``: the backends that
are the default for the file's format first (DESIGN.md: GGUF → llama_cpp, legacy GGML →
ctransformers), the others after them. What each backend can run lives in its own module, so
adding a backend is one module and one line here. Backend modules are imported on first use;
they are cheap, their native libraries load only with a model.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from inference.backends.base import Backend, Metadata, metadata_field
from inference.errors import BackendError

#: Every backend, by name; the order breaks ties between backends equally fit for a file.
_REGISTRY: dict[str, str] = {
    "llama_cpp": "inference.backends.llama_cpp:LlamaCppBackend",
    "ctransformers": "inference.backends.ctransformers:CTransformersBackend",
}

BACKEND_NAMES: tuple[str, ...] = tuple(_REGISTRY)


@dataclass(frozen=True)
class BackendVerdict:
    """Which backend will run a model (None: none can), why, and which could."""

    backend: str | None
    reason: str
    candidates: tuple[str, ...]


def get_backend(name: str) -> Backend:
    """The backend called ``name``, its module imported on first use."""
    try:
        target = _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise BackendError(f"There is no backend called {name!r}; choose one of {known}.") from None
    module_name, _, class_name = target.partition(":")
    backend_class = getattr(importlib.import_module(module_name), class_name)
    backend: Backend = backend_class()
    return backend


def choose_backend(metadata: Metadata, *, pinned: str | None = None) -> BackendVerdict:
    """Pick the backend that runs a model, from what each backend says it supports.

    ``pinned`` is an admin's explicit choice; it is honoured when that backend can run the model
    and otherwise answered with backend None and that backend's reason.
    """
    if pinned is not None and pinned not in _REGISTRY:
        return BackendVerdict(
            None, f"'{pinned}' is not a backend; choose {' or '.join(BACKEND_NAMES)}.", ()
        )
    file_format = metadata_field(metadata, "format")
    backends = sorted(
        (get_backend(name) for name in BACKEND_NAMES),
        key=lambda backend: file_format not in backend.default_for,  # stable: registry order
    )
    refusals = {backend.name: backend.supports(metadata) for backend in backends}
    candidates = tuple(name for name, refusal in refusals.items() if refusal is None)
    if pinned is not None:
        chosen = next(b for b in backends if b.name == pinned)
    elif candidates:
        chosen = next(b for b in backends if b.name == candidates[0])
    else:
        chosen = backends[0]
    refusal = refusals[chosen.name]
    if refusal is not None:
        return BackendVerdict(None, refusal, candidates)
    kind = "GGUF" if file_format == "gguf" else "legacy GGML"
    architecture = metadata_field(metadata, "architecture")
    return BackendVerdict(
        chosen.name, f"{chosen.title} runs {kind} {architecture} models.", candidates
    )


__all__ = ["BACKEND_NAMES", "BackendVerdict", "choose_backend", "get_backend"]
