"""The composition root: picks the store adapter from the configuration and hands it,
with the built-in plugins, to the engine runtime."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import trio

from assay.engine import ConfigService, Engine, EngineConfig, Store
from assay.engine import open_engine as open_engine_runtime

# Adapters and plugins are imported where used: ``import assay`` stays light, and an
# engine on the memory store never loads asyncpg.

log = logging.getLogger("assay")


@asynccontextmanager
async def open_database(config: EngineConfig) -> AsyncIterator[str]:
    """Yield a PostgreSQL DSN: the configured one, or an embedded server's."""
    if config.database_url:
        yield config.database_url
        return
    from assay.adapters.embedded import LOG_FILE, default_data_dir, start_embedded_postgres

    data_dir = Path(config.data_dir) if config.data_dir else default_data_dir()
    server = await trio.to_thread.run_sync(start_embedded_postgres, data_dir)
    log.info("embedded PostgreSQL running in %s (its log: %s)", data_dir, data_dir / LOG_FILE)
    try:
        yield server.dsn
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(server.stop)


def store_factory(config: EngineConfig) -> AbstractAsyncContextManager[Store]:
    if config.store == "memory":
        from assay.adapters.memory import open_memory_store

        return open_memory_store()
    return _open_postgres(config)


@asynccontextmanager
async def _open_postgres(config: EngineConfig) -> AsyncIterator[Store]:
    from assay.adapters.postgres import open_postgres_store

    async with (
        open_database(config) as dsn,
        open_postgres_store(dsn, max_size=config.pool_size) as store,
    ):
        yield store


@asynccontextmanager
async def open_engine(
    config: EngineConfig | None = None, *, load_entry_points: bool = True
) -> AsyncIterator[Engine]:
    """Open an engine with the store the configuration names (PostgreSQL by default,
    embedded when no ``database_url`` is set; ``store="memory"`` for no database) and the
    built-in plugins plus every installed ``assay.plugins`` entry point.

    ::

        async with assay.open_engine(assay.EngineConfig(store="memory")) as engine:
            ...
    """
    from assay.plugins import BUILTIN_PLUGINS

    config = config or EngineConfig.load()
    async with open_engine_runtime(
        config,
        store_factory=lambda: store_factory(config),
        builtin_plugins=BUILTIN_PLUGINS,
        load_entry_points=load_entry_points,
    ) as engine:
        yield engine


@asynccontextmanager
async def open_service(config: EngineConfig) -> AsyncIterator[ConfigService]:
    """A configuration service on the configured store, without actors or HTTP: for the
    CLI, which must validate exactly as a server would (built-in and installed plugins'
    targeting operators)."""
    from assay.engine._core import ConditionCompiler
    from assay.engine._guardrails import GuardrailValidator, collect_actions, collect_channels
    from assay.engine._metric_kinds import collect_metric_kinds, metric_kind_validator
    from assay.engine._plugins import build_plugin_manager, collect_operators, condition_validator
    from assay.plugins import BUILTIN_PLUGINS

    plugins = build_plugin_manager(BUILTIN_PLUGINS)
    compiler = ConditionCompiler(collect_operators(plugins))
    async with store_factory(config) as store:
        yield ConfigService(
            store,
            validate_condition=condition_validator(compiler),
            validate_metric=metric_kind_validator(collect_metric_kinds(plugins)),
            validate_guardrails=GuardrailValidator(
                collect_actions(plugins), collect_channels(plugins)
            ),
        )
