"""Built-in XGBoost (SageMaker's ``sagemaker-xgboost`` image in algorithm mode): train.py, serve.py.

Model files (``xgboost-model``, ``xgboost-checkpoint.<i>``) have no extension, as in SageMaker's 1.3+
containers; they are written in xgboost's default UBJSON format and read back by content. With
``OPENSAGE_IMAGE_VERSION`` (``versions.py``) training and serving imitate that image version instead
(pickled Boosters up to 1.2-x, its hyperparameters, bodies and /ping behaviour).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any


def save_booster(booster: Any, target: Path) -> None:
    """Atomically save ``booster`` (UBJSON) under an extension-less name."""
    tmp = target.with_name(f".{target.name}.tmp.ubj")
    booster.save_model(str(tmp))
    os.replace(tmp, target)


def load_booster(path: Path) -> Any:
    """Load a Booster saved by ``save_model`` in any format (binary, UBJSON, JSON)."""
    import xgboost as xgb

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Unknown file format.*")
        return xgb.Booster(model_file=str(path))


def import_xgboost_fast() -> Any:
    """Import xgboost without letting it import scikit-learn.

    xgboost's ``compat`` module imports ``sklearn.base`` (and through it scipy.stats and pandas) at import
    time, about 1 s of every job's start (benchmarks/RESULTS.md), though ``xgb.train`` never needs it.
    Hiding sklearn during the import only disables xgboost's sklearn-style estimator classes in this
    process; sklearn itself imports normally afterwards (the metrics we compute with it still work).
    """
    import sys

    if "xgboost" in sys.modules or "sklearn" in sys.modules:
        import xgboost

        return xgboost
    sys.modules["sklearn"] = None  # type: ignore[assignment]  # makes `import sklearn` raise ImportError
    try:
        import xgboost
    finally:
        del sys.modules["sklearn"]
    return xgboost
