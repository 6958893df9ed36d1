"""What a flow needs from the run config: the data dir, the catalog, the registry, the servers' addresses.

Flows build these parts here and pass plain values (paths, refs, config
sections, URIs) into their tasks, which call `storage`, `annotation` and
`services`; those never read the run config or import Prefect themselves.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from alignline.config import RunConfig
from alignline.infra import paths as infra_paths
from alignline.storage import Catalog, DataDir


def label_studio_token(home: str | Path) -> str:
    """The admin API token `alignline up` generated (read where it is used: never a task or flow parameter)."""
    return infra_paths.read_secret(Path(home), "label-studio")["token"]


@dataclass
class RunContext:
    cfg: RunConfig

    @cached_property
    def data(self) -> DataDir:
        return DataDir(self.cfg.home)

    @cached_property
    def catalog(self) -> Catalog:
        return Catalog(self.data.lake)

    @property
    def mlflow_uri(self) -> str:
        return self.cfg.servers.mlflow_uri or self.cfg.servers.url(self.cfg.servers.mlflow_port)

    @cached_property
    def registry(self):
        from alignline.services.registry import Registry

        return Registry(self.mlflow_uri)

    @property
    def ray_address(self) -> str:
        """The configured Ray head (servers.ray_address), else this data dir's head started by `alignline up`."""
        return self.cfg.servers.ray_address or f"{self.cfg.servers.host}:{self.cfg.servers.ray_port}"

    @property
    def label_studio_url(self) -> str:
        return self.cfg.servers.url(self.cfg.servers.label_studio_port)

    def label_studio_token(self) -> str:
        return label_studio_token(self.cfg.home)

    def work(self, stage: str, *sections: str, key: str = "") -> str:
        """A stage's work dir, keyed on the config sections it reads and its inputs (`key`): same inputs, same
        folder, so a rerun resumes from its checkpoints; an unrelated setting changed keeps it."""
        name = "-".join(p for p in (self.cfg.digest(*sections), key) if p)
        return str(self.data.work(stage, name))

    def launch_options(self, section, name: str):
        """How a recipe runs, from its config section (use_ray, num_workers, use_gpu, cpus_per_worker,
        max_failures, sharding, placement_strategy): attached to the configured Ray head when `use_ray`, else in
        this process; run storage is servers.train_storage (a folder or s3://...) or the data dir's ray/ folder."""
        from alignline.services.training import LaunchOptions

        if section.use_ray:
            self.init_ray()
        return LaunchOptions(use_ray=section.use_ray, num_workers=section.num_workers, use_gpu=section.use_gpu,
                             cpus_per_worker=section.cpus_per_worker,
                             storage_path=self.cfg.servers.train_storage or str(self.data.ray_storage),
                             storage_endpoint=self.cfg.servers.train_storage_endpoint,
                             name=name, max_failures=getattr(section, "max_failures", 0),
                             sharding=getattr(section, "sharding", "none"),
                             placement_strategy=getattr(section, "placement_strategy", "PACK"))

    def init_ray(self) -> None:
        """Attach to the configured Ray head node (this data dir's, started by `alignline up`, unless
        servers.ray_address names another); multi-node mode on when that head is not on this machine."""
        from alignline.infra.servers import ray_client_env

        # Read by Ray at import time: set before the first `import ray`.
        env = ray_client_env(self.ray_address)
        for key, value in env.items():
            os.environ.setdefault(key, value)
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"]
        import ray

        if ray.is_initialized():
            attached = ray.get_runtime_context().gcs_address
            if attached != self.ray_address:  # work would silently land on another data dir's cluster
                raise RuntimeError(f"this process is attached to the Ray cluster at {attached}, but the config's head is "
                                   f"{self.ray_address} (servers.ray_port): run one data dir per process, or "
                                   "ray.shutdown() first")
        os.environ["RAY_ADDRESS"] = self.ray_address  # for ray.init() calls made inside libraries
        if not ray.is_initialized():
            ray.init(address=self.ray_address, log_to_driver=True, logging_level="WARNING")
