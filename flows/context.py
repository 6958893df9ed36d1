"""What a flow needs from the run config: the catalog, the registry, the servers' addresses.

Flows build these parts here and pass them into `storage`, `annotation` and
`services` functions, which never read the config or import Prefect themselves.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from alignline.config import RunConfig
from alignline.infra import paths as infra_paths
from alignline.storage import Catalog


@dataclass
class RunContext:
    cfg: RunConfig

    @property
    def home(self) -> Path:
        return self.cfg.home

    @cached_property
    def catalog(self) -> Catalog:
        return Catalog(self.home / "lake")

    @property
    def mlflow_uri(self) -> str:
        return self.cfg.servers.url(self.cfg.servers.mlflow_port)

    @cached_property
    def registry(self):
        from alignline.services.registry import Registry

        return Registry(self.mlflow_uri)

    @property
    def ray_address(self) -> str:
        return f"{self.cfg.servers.host}:{self.cfg.servers.ray_port}"

    @property
    def label_studio_url(self) -> str:
        return self.cfg.servers.url(self.cfg.servers.label_studio_port)

    def label_studio_token(self) -> str:
        return infra_paths.read_secret(self.home, "label-studio")["token"]

    def work_dir(self, *parts: str) -> Path:
        """Scratch space for a stage (checkpoints, downloads); under the data dir."""
        path = self.home.joinpath("work", *parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def launch_options(self, section, name: str):
        """How a recipe runs, from its config section (use_ray, num_workers, use_gpu, cpus_per_worker,
        max_failures): attached to this data dir's Ray head when `use_ray`, else in this process."""
        from alignline.services.training import LaunchOptions

        if section.use_ray:
            self.init_ray()
        return LaunchOptions(use_ray=section.use_ray, num_workers=section.num_workers, use_gpu=section.use_gpu,
                             cpus_per_worker=section.cpus_per_worker, storage_path=str(self.work_dir("ray")),
                             name=name, max_failures=getattr(section, "max_failures", 0))

    def init_ray(self) -> None:
        """Attach to this data dir's Ray head node (started by `alignline up`)."""
        from alignline.infra.servers import RAY_CLIENT_ENV

        # Read by Ray at import time: set before the first `import ray`.
        for key, value in RAY_CLIENT_ENV.items():
            os.environ.setdefault(key, value)
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
