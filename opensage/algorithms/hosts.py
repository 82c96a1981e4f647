"""Which host of a multi-instance job trains a first-party built-in (linear-learner, kmeans, pca, ...).

There is no reduction across hosts for these here: the training reconciler gives algo-1 every shard of a
ShardedByS3Key channel (``runner/training.py`` ``reads_every_shard``), algo-1 trains on all the data and its
model is the job's; the other hosts end at once instead of training on a shard for nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path

from opensage.algorithms.content import read_json

log = logging.getLogger("opensage.algorithms")


def trains_here(resourceconfig: Path, model_dir: Path) -> bool:
    """True on the host that trains (algo-1, or the only one); otherwise logs why not and returns False."""
    config = read_json(resourceconfig, {})
    hosts = [str(h) for h in (config.get("hosts") or []) if h] if isinstance(config, dict) else []
    current = str(config.get("current_host") or "") if isinstance(config, dict) else ""
    if len(hosts) < 2 or not current or current == hosts[0]:
        return True
    model_dir.mkdir(parents=True, exist_ok=True)
    log.info("Host %s: %s reads every shard and trains on all the data; nothing to do here", current, hosts[0])
    return False
