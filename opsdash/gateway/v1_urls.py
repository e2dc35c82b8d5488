"""``/v1/...``: the OpenAI-compatible API, at the site root where OpenAI clients expect it."""

from __future__ import annotations

from django.urls import path

from opsdash.gateway import v1

urlpatterns = [
    path("models", v1.models, name="v1_models"),
    path("models/<str:model>", v1.model_detail, name="v1_model"),
    path("chat/completions", v1.chat_completions, name="v1_chat_completions"),
    path("completions", v1.completions, name="v1_completions"),
    # Last: every other path (/v1/, /v1/embeddings, ...) gets OpenAI's 404 JSON, not a page.
    path("", v1.not_found, name="v1_not_found"),
    path("<path:rest>", v1.not_found, name="v1_not_found_path"),
]
