"""The memory adapter: a Store in process memory, for embedding assay without a database."""

from assay.adapters.memory._store import MemoryStore, MemoryTransaction, open_memory_store

__all__ = ["MemoryStore", "MemoryTransaction", "open_memory_store"]
