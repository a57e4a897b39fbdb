"""Everything about GrowthBook's formats and protocol: the SDK payload, the endpoints its
SDKs call (``/api/features``, ``/sub`` streaming, ``/api/eval``) and the import."""

from assay.adapters.growthbook._stream_listener import (
    bind_stream_socket,
    raise_file_limit,
    serve_streams,
)
from assay.adapters.growthbook._streaming import (
    Payload,
    PayloadSource,
    SnapshotSource,
    StreamHub,
    StreamRoute,
    stream_hub,
)

__all__ = [
    "Payload",
    "PayloadSource",
    "SnapshotSource",
    "StreamHub",
    "StreamRoute",
    "bind_stream_socket",
    "raise_file_limit",
    "serve_streams",
    "stream_hub",
]
