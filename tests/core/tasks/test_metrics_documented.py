"""Every metric and every reported figure has its definition in docs/."""

import re
from pathlib import Path

import pytest

from sparsekit import tasks as task_module
from sparsekit.tasks import Task

DOCS = (
    next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file()) / "docs"
)


def _sections(text: str) -> dict[str, str]:
    """``## heading`` → its body, for one markdown file."""
    parts = re.split(r"^## ", text, flags=re.MULTILINE)
    return {part.splitlines()[0]: part for part in parts[1:]}


TASK_CLASSES = sorted(
    (
        cls
        for cls in vars(task_module).values()
        if isinstance(cls, type) and issubclass(cls, Task) and cls is not Task
    ),
    key=lambda cls: cls.__name__,
)


@pytest.mark.parametrize("cls", TASK_CLASSES, ids=lambda cls: cls.__name__)
def test_every_task_metric_is_defined_in_its_section_of_metrics_md(cls: type[Task]) -> None:
    sections = _sections((DOCS / "metrics.md").read_text(encoding="utf-8"))
    own = [body for heading, body in sections.items() if f"`{cls.__name__}(" in heading]
    assert len(own) == 1, f"docs/metrics.md needs one section headed by `{cls.__name__}(...)`"
    body = own[0]
    assert "**Loss**" in body, f"{cls.__name__}: the loss is not defined"
    for metric, higher_is_better in cls.metrics.items():
        arrow = "↑" if higher_is_better else "↓"
        assert re.search(rf"`{metric}` \({arrow}", body), (
            f"{cls.__name__}: metric {metric!r} ({arrow}) is not defined in its section"
        )


def test_reported_figures_are_defined_in_experiments_md() -> None:
    text = (DOCS / "experiments.md").read_text(encoding="utf-8")
    for figure in (
        "`group`",
        "`parameter`",
        "`setup_s`",
        "`train_s`",
        "`test_s`",
        "`total_s`",
        "`train_loss`",
        "`val_loss`",
        "`active_before`",
        "`active_after`",
        "`best_step`",
    ):
        assert figure in text, f"{figure} is not defined in docs/experiments.md"
    penalties = (DOCS / "penalties.md").read_text(encoding="utf-8")
    assert "% group sparsity" in penalties and "% parameter sparsity" in penalties
