"""OpenFeature providers for assay: Python applications that prefer OpenFeature's API.

- ``AssayProvider`` decides in process, on an embedded engine (``assay.open_engine``);
  open it with ``async with AssayProvider.open(engine, project="shop") as provider``.
- ``RemoteAssayProvider`` decides over HTTP against ``assay serve`` (``POST /decide``).

Both resolve every flag type (boolean, string, integer, float, object) with OpenFeature's
typed methods, map assay's reason codes to OpenFeature's reasons (the assay code stays in
the flag metadata), report errors as OpenFeature error codes, and feed OpenFeature's
tracking API into conversions. See docs/openfeature.md.

Needs the ``openfeature`` extra (``pip install 'assay[openfeature]'``).
"""

from assay.adapters.openfeature._provider import AssayProvider
from assay.adapters.openfeature._remote import RemoteAssayProvider

__all__ = ["AssayProvider", "RemoteAssayProvider"]
