"""Connecting to Ray with all traffic on loopback unless told otherwise (``lsr serve --cluster``).

``connect("local")`` starts a one-machine Ray runtime inside this process (no dashboard); any
other address joins an existing cluster (``ray start --head`` on the head node). The environment
variables set by :func:`loopback_env` keep Ray on 127.0.0.1 and stop it reporting usage over the
network; every test and script sets them before ray starts.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

NAMESPACE = "lsr"


class RayMissing(ModuleNotFoundError):
    """The ``cluster`` extra is not installed."""


def require_ray() -> Any:
    """The ``ray`` module, or :class:`RayMissing` saying what to install."""
    try:
        import ray
    except ImportError:
        raise RayMissing("the cluster mode needs Ray: pip install 'lsr[cluster]' (ray[data]==2.60.0)") from None
    return ray


def loopback_env(tmp: str | Path | None = None) -> dict[str, str]:
    """Set (and return) the variables that keep Ray local and quiet: bind to 127.0.0.1, no usage
    reports, temporary files under ``tmp`` (default: a folder under the system temp dir)."""
    tmp = Path(tmp) if tmp is not None else Path(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()) / "lsr-ray"
    tmp.mkdir(parents=True, exist_ok=True)
    env = {
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_TMPDIR": str(tmp),
        "TMPDIR": str(tmp),
    }
    for k, v in env.items():
        os.environ.setdefault(k, v)
    return {k: os.environ[k] for k in env}


def connect(address: str, *, num_cpus: int | None = None, num_gpus: int | None = None) -> Any:
    """Join the Ray cluster at ``address`` ("auto", "HOST:PORT") or start a local one ("local")."""
    ray = require_ray()
    loopback_env()
    if ray.is_initialized():
        return ray
    if address == "local":
        ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, namespace=NAMESPACE,
                 _node_ip_address="127.0.0.1", log_to_driver=True, configure_logging=False)
    else:
        # A head started with `ray start` uses token auth in Ray 2.60: export RAY_AUTH_MODE=token
        # (the token is read from ~/.ray/auth_token). Not set here: forcing it on a cluster that was
        # started otherwise makes Ray Data's actors fail at creation (docs/cluster.md).
        ray.init(address=address, namespace=NAMESPACE, configure_logging=False)
    log.info("connected to Ray (%s): %s", address, ray.cluster_resources())
    return ray
