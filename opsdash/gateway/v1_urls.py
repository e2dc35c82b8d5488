"""``/v1/...``: the OpenAI-compatible API, at the site root where OpenAI clients expect it."""

from __future__ import annotations

from django.urls import path

from opsdash.gateway import batch_api, v1

urlpatterns = [
    path("models", v1.models, name="v1_models"),
    path("models/<str:model>", v1.model_detail, name="v1_model"),
    path("chat/completions", v1.chat_completions, name="v1_chat_completions"),
    path("completions", v1.completions, name="v1_completions"),
    # The Batch API (opsdash.gateway.batch_api).
    path("files", batch_api.files, name="v1_files"),
    path("files/<str:file_id>", batch_api.file_detail, name="v1_file"),
    path("files/<str:file_id>/content", batch_api.file_content, name="v1_file_content"),
    path("batches", batch_api.batches_view, name="v1_batches"),
    path("batches/<str:batch_id>", batch_api.batch_detail, name="v1_batch"),
    path("batches/<str:batch_id>/cancel", batch_api.batch_cancel, name="v1_batch_cancel"),
    # Last: every other path (/v1/, /v1/embeddings, ...) gets OpenAI's 404 JSON, not a page.
    path("", v1.not_found, name="v1_not_found"),
    path("<path:rest>", v1.not_found, name="v1_not_found_path"),
]
