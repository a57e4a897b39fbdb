"""GrowthBook's formats, both ways: everything assay reads from or writes for GrowthBook.

assay assigns exactly as GrowthBook's SDKs do, so the two can exchange configuration:

- **Import** (``convert_growthbook``, ``import_growthbook``, ``parse_growthbook_payload``):
  a GrowthBook SDK features payload becomes assay definitions (flags, experiments, layers,
  segments) that decide what the SDK decides for every subject. ``assay import growthbook``
  is its command. Modules ``_import`` (the conversion), ``_values`` (reading payload values
  as the SDK reads them) and ``_segments`` (saved groups as segments, or inlined).
- **Export** (``sdk_payload``, ``payload_document``, ``SdkPayload``): a project of the
  engine's compiled snapshot as the payload GrowthBook SDKs download
  (``GET /api/features/{clientKey}``), so that any GrowthBook SDK evaluates locally what
  ``engine.decide`` answers. What the payload cannot express exactly is left out and named
  in ``SdkPayload.remote_only`` with a reason code (module ``payload``, docs/growthbook.md).
- **Exposures from SDKs** (module ``tracking``): ``ExposureTracker``, the tracking callback
  for GrowthBook's Python SDK, and ``js/assay-tracking.mjs`` (package data), the same for
  its JavaScript SDK: exposures sent to assay batched, retried and de-duplicated by a
  deterministic event id (docs/sdk-tracking.md).

The engine keeps only assay's own model: its condition language and its segments are
GrowthBook's saved groups by design (``assay.engine._core``), which is why this package
translates rather than re-implements. The engine never imports this package.
- **SDK streaming** (``StreamHub``, ``SnapshotSource``, ``StreamRoute``,
  ``serve_streams``): ``GET /sub/{clientKey}``, the server-sent events GrowthBook SDKs
  stream payload changes from, on the main port and on a lean stream port
  (modules ``_streaming`` and ``_stream_listener``, docs/sdk-streaming.md).
"""

from assay.adapters.growthbook._import import (
    GrowthBookImport,
    ImportWarning,
    convert_growthbook,
    import_growthbook,
    parse_growthbook_payload,
)
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
from assay.adapters.growthbook.payload import (
    REMOTE_ONLY_REASONS,
    SdkPayload,
    build_payload,
    payload_document,
    sdk_payload,
)

__all__ = [
    "REMOTE_ONLY_REASONS",
    "GrowthBookImport",
    "ImportWarning",
    "Payload",
    "PayloadSource",
    "SdkPayload",
    "SnapshotSource",
    "StreamHub",
    "StreamRoute",
    "bind_stream_socket",
    "build_payload",
    "convert_growthbook",
    "import_growthbook",
    "parse_growthbook_payload",
    "payload_document",
    "raise_file_limit",
    "sdk_payload",
    "serve_streams",
    "stream_hub",
]
