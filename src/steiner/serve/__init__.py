"""An OpenAI-compatible server for a Steiner model: continuous batching, SSE streaming, step bounds.

``create_app(cfg, model=None, tokenizer=None)`` builds the FastAPI app; ``main(cfg)`` runs it with uvicorn.
"""

from __future__ import annotations

from steiner.serve.app import create_app, main, render_prompt
from steiner.serve.config import ServeConfig

__all__ = ["ServeConfig", "create_app", "main", "render_prompt"]
