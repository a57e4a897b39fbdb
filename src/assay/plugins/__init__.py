"""Built-in plugins. Each is registered exactly like a third-party plugin: a module with
``@hookimpl`` functions, listed here in registration order."""

from __future__ import annotations

from types import ModuleType

from assay.plugins import guardrails, metrics, targeting

BUILTIN_PLUGINS: tuple[ModuleType, ...] = (targeting, metrics, guardrails)

__all__ = ["BUILTIN_PLUGINS"]
