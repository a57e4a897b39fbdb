"""scipy is imported when a statistic is first computed, not when assay is imported."""

from __future__ import annotations

import subprocess
import sys


def test_importing_assay_and_its_http_app_leaves_scipy_unimported() -> None:
    code = (
        "import sys, assay, assay.adapters.http._app, assay.adapters.cli; "
        "print(sorted(m for m in sys.modules if m == 'scipy' or m.startswith('scipy.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_proxy_reaches_scipy_stats() -> None:
    from scipy import stats

    from assay.engine._core._scipy import sps
    from assay.engine._core._stats_sufficient import QUANTILE_BOUND_Z

    assert sps.norm is stats.norm
    assert abs(QUANTILE_BOUND_Z - float(stats.norm.ppf(0.975))) < 1e-12
