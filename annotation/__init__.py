"""annotation: Label Studio projects, labeling configs, task import and annotation export."""
from .projects import connect, ensure_project, import_tasks, iter_tasks, task_key

__all__ = ["connect", "ensure_project", "import_tasks", "iter_tasks", "task_key"]
