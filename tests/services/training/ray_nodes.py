"""A Ray cluster of a head and worker nodes on this machine (`ray.cluster_utils.Cluster`, as Ray's own tests do).

Every node is its own raylet with its own resources and object store, bound to 127.0.0.1 (cluster mode stays
off, as for the servers: INTEGRATION.md). The head offers no CPUs, so work lands on the worker nodes only.
While the cluster is up this process is attached to it; afterwards it is re-attached to the Ray head it held
before (the session's), so the other test modules keep theirs.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

from alignline.infra.servers import RAY_CLIENT_ENV


@contextlib.contextmanager
def local_cluster(workers: int = 2, cpus_per_node: int = 1, head_port: int = 0):
    for key, value in RAY_CLIENT_ENV.items():  # read at `import ray`
        os.environ.setdefault(key, value)
    import ray
    from ray.cluster_utils import Cluster

    previous = ray.get_runtime_context().gcs_address if ray.is_initialized() else None
    saved_env = os.environ.get("RAY_ADDRESS")
    if previous:
        ray.shutdown()
    # Ray's helper actors call ray.init() without an address: RAY_ADDRESS (inherited by every raylet started from
    # this process) keeps them on this cluster rather than another data dir's head.
    head_port = head_port or 29000 + int(os.environ.get("ALIGNLINE_TEST_PORT_OFFSET", "0"))
    os.environ["RAY_ADDRESS"] = f"127.0.0.1:{head_port}"
    temp = tempfile.mkdtemp(prefix="al-rn-", dir="/tmp")  # socket paths must stay short
    # Cluster() records its address in <user temp>/ray/ray_current_cluster whatever temp_dir says; on a fresh machine
    # where no Ray ever ran, that folder does not exist yet
    from ray._common.utils import get_ray_address_file

    os.makedirs(os.path.dirname(get_ray_address_file(None)), exist_ok=True)
    cluster = Cluster(initialize_head=True, head_node_args=dict(
        num_cpus=0, node_ip_address="127.0.0.1", gcs_server_port=head_port, temp_dir=temp, include_dashboard=False))
    try:
        nodes = [cluster.add_node(num_cpus=cpus_per_node, node_ip_address="127.0.0.1",
                                  resources={f"worker_node_{i}": 1}) for i in range(workers)]
        ray.init(address=cluster.address, logging_level="WARNING")
        yield cluster, nodes
    finally:
        ray.shutdown()
        cluster.shutdown()
        if saved_env is None:
            os.environ.pop("RAY_ADDRESS", None)
        else:
            os.environ["RAY_ADDRESS"] = saved_env
        shutil.rmtree(temp, ignore_errors=True)
        if previous:
            ray.init(address=previous, logging_level="WARNING")
