"""``import``: a data set made by a callable of the user's own code, named by its import path.

``target: "package.module:make_dataset"`` names a callable that ``kwargs`` are passed to. It
returns a data set provider (``sparsekit.data.from_tensors(...)``, ``from_dataset(...)`` or any
:class:`~sparsekit.interfaces.DatasetProvider`), or a pair ``(torch_dataset, tasks)`` that
:func:`sparsekit.data.from_dataset` splits by its default seeded split. The callable runs once per
provider, when the run first asks for the tasks or data. A run records the path and the
arguments, so it is rebuilt like any configured data set: reloaded, fine-tuned and run in sweeps
(every worker process must be able to import the module).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import Field
from torch.utils.data import Dataset

from sparsekit.data import from_dataset
from sparsekit.errors import ConfigError
from sparsekit.interfaces import ComponentConfig, DatasetProvider
from sparsekit.tasks import Task
from sparsekit_plugins.models.import_model import ImportTarget, load_target


class ImportedData(DatasetProvider):
    """The data set that ``target(**kwargs)`` returns; this provider hands every call on to it."""

    name: ClassVar[str] = "import"

    class Config(ComponentConfig):
        """Configuration of :class:`ImportedData`.

        Attributes:
            target: ``"package.module:callable"`` returning the data set.
            kwargs: keyword arguments of the callable.
        """

        target: ImportTarget
        kwargs: dict[str, Any] = Field(default_factory=dict)

    config: Config

    def __init__(self, config: ComponentConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self._provider: DatasetProvider | None = None

    @classmethod
    def example_params(cls, workdir: Any) -> dict[str, Any]:
        """The built-in shapes, small, by their path, for the contract test suite."""
        target = "sparsekit_plugins.datasets.shapes:ShapesProvider"
        return {
            "target": target,
            "kwargs": {"image_size": 16, "n_train": 8, "n_val": 4, "n_test": 4},
        }

    def provider(self) -> DatasetProvider:
        """The data set ``target(**kwargs)`` made (on first use).

        Raises:
            ConfigError: the callable fails or returns neither a provider nor a
                ``(Dataset, tasks)`` pair.
        """
        if self._provider is None:
            self._provider = self._make()
        return self._provider

    def _make(self) -> DatasetProvider:
        cfg = self.config
        try:
            made = load_target(cfg.target)(**cfg.kwargs)
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - the user's code may fail in any way
            raise ConfigError(
                f"{cfg.target}(**{cfg.kwargs}) failed: {type(exc).__name__}: {exc}"
            ) from exc
        if isinstance(made, DatasetProvider):
            return made
        if (
            isinstance(made, tuple)
            and len(made) == 2
            and isinstance(made[0], Dataset)
            and all(isinstance(t, Task) for t in made[1])
        ):
            return from_dataset(made[0], made[1])
        raise ConfigError(
            f"{cfg.target} must return a data set provider (sparsekit.data.from_tensors, "
            f"from_dataset) or a (torch Dataset, [tasks]) pair, got {type(made).__name__}"
        )

    @property
    def in_channels(self) -> int:  # type: ignore[override]
        """Channels of the images of the data set made."""
        return self.provider().in_channels

    def tasks(self) -> list[Task]:
        return self.provider().tasks()

    def load(self, split: str, tasks: Sequence[str]) -> Dataset:
        return self.provider().load(split, tasks)
