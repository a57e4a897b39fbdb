"""GrowthBook's formats and SDKs: what assay speaks to them.

- ``tracking``: ``ExposureTracker``, the tracking callback for GrowthBook's Python SDK that
  sends exposures to assay (batched, retried, de-duplicated by event id).
- ``js/assay-tracking.mjs``: the same for GrowthBook's JavaScript SDK, shipped as package
  data.

See docs/sdk-tracking.md.
"""
