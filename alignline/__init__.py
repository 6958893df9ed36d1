"""alignline: the Llama 2 alignment recipe as an assembly line.

The design card keeps the packages at the top of the repository; they install
under this one namespace (setup.py's package map), so an import name finds its
folder by dropping `alignline.`:

| import name | folder | owns |
|---|---|---|
| `alignline.config` | `alignline/config/` | the typed run config and presets |
| `alignline.storage` | `storage/` | catalog, data contracts (`storage/schemas.py`), data dir layout, corpus steps |
| `alignline.annotation` | `annotation/` | Label Studio projects, task import, harvest, scripted annotator |
| `alignline.services` | `services/` | models, training recipes, generation, evaluation, MLflow tracking + registry |
| `alignline.infra` | `infra/` | how the servers start and stop, secrets |
| `alignline.flows` | `flows/` | Prefect flows (wiring only) and the CLI |

e.g. `alignline.services.training.sft` is `services/training/sft.py`.
"""
__version__ = "0.1.0"
