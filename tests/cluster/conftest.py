"""One simulated multi-node Ray cluster (``ray.cluster_utils.Cluster``: a head and two workers, one
CPU each, no dashboard) for the whole folder; everything on 127.0.0.1, Ray's files in a fresh
temporary folder. Skipped, with the reason, where the ``cluster`` extra (ray) is not installed."""

from __future__ import annotations

import os
import tempfile

import pytest

# before ray is imported anywhere: bind to loopback, never report usage, keep Ray's files in a temp folder
_TMP = tempfile.mkdtemp(prefix="lsr-ray-")
os.environ.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0", RAY_TMPDIR=_TMP,
                  RAY_DEDUP_LOGS="0")


@pytest.fixture(scope="session")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="the cluster tests need the 'cluster' extra: pip install 'lsr[cluster]'")
    from ray.cluster_utils import Cluster

    old_tmpdir = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = _TMP  # cluster_utils wants a writable <TMPDIR>/ray; only while the cluster runs
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, namespace="lsr", log_to_driver=False)
    yield cluster, workers
    ray.shutdown()
    cluster.shutdown()
    if old_tmpdir is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = old_tmpdir
