"""Adapters: everything that connects the engine to the outside world (storage, the embedded
PostgreSQL server, HTTP, the command line). The engine never imports from here."""
