"""Plain-text tables: results, plugin kinds, and the fields of configs and components."""

from __future__ import annotations

import difflib
import inspect
import json
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from sparsekit.errors import PluginError
from sparsekit.registry import KINDS, get_registry
from sparsekit.reporting.columns import EFFICIENCY_COLUMNS, arrow, record_columns
from sparsekit.runs.record import RunRecord


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}×"


def _lam_cell(result: RunRecord) -> str:
    lam = result.final_lam
    if lam is None:
        return "—"
    if isinstance(lam, list):
        return f"{sum(lam) / len(lam):.3g} (mean of {len(lam)})"
    learned = result.config.get("lam") == "learned"
    return f"{lam:.3g}" + (" (learned)" if learned else "")


def results_table(rows: Sequence[tuple[str, RunRecord]]) -> str:
    """One row per labelled result: every task's metrics, λ, % group and % parameter sparsity.

    Columns are the union of the results' task metrics, in first-seen order. When any result
    carries efficiency figures, three columns follow: the compression ratio CR, the FLOPs
    speed-up Sp and the measured speed-up (see :mod:`sparsekit.nn.efficiency`).
    """
    columns = record_columns(result for _, result in rows)
    header = ["run"] + [f"{t}/{m} {arrow(up)}" for t, m, up in columns]
    header += ["λ", "group sp. %", "param. sp. %"]
    with_efficiency = any(result.efficiency for _, result in rows)
    if with_efficiency:
        header += [title for _, title in EFFICIENCY_COLUMNS]
    body = []
    for label, result in rows:
        cells = [label]
        for task, metric, _ in columns:
            value = result.metrics.get(task, {}).get(metric)
            cells.append("—" if value is None else f"{value:.4f}")
        cells += [
            _lam_cell(result),
            f"{100 * result.sparsity['group']:.1f}",
            f"{100 * result.sparsity['parameter']:.1f}",
        ]
        if with_efficiency:
            cells += [_ratio(result.efficiency.get(key)) for key, _ in EFFICIENCY_COLUMNS]
        body.append(cells)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule, *map(line, body)])


def kinds_markdown() -> str:
    """The plugin kinds as Markdown: per kind its hook, interface, built-in components and the
    interface's docstring, the kind's contract (``sparsekit plugins --markdown``)."""
    registry = get_registry()
    parts = []
    for kind in KINDS.values():
        rows = [r for r in registry.rows(kind.name) if r.distribution == "sparsekit"]
        default = next((r.name for r in rows if registry.get(kind.name, r.name).is_default), None)
        names = ", ".join(f"`{r.name}`" + (" (default)" if r.name == default else "") for r in rows)
        contract = inspect.cleandoc(kind.interface.__doc__ or "")
        contract = "\n".join(
            line for line in contract.splitlines() if not line.startswith(f"Kind ``{kind.name}``")
        ).strip()
        parts.append(
            f"### `{kind.name}`\n\n"
            f"Hook `{kind.hook}`, interface `sparsekit.interfaces.{kind.interface.__name__}`; "
            f"built-in components: {names or 'none'}.\n\n"
            f"{contract}\n"
        )
    return "\n".join(parts)


def _type_name(annotation: Any) -> str:
    if annotation is Any:
        return "component"
    if isinstance(annotation, type):
        return annotation.__name__
    text = str(annotation)
    for module in ("typing.", "pathlib.", "sparsekit.config."):
        text = text.replace(module, "")
    return text.replace("Any | None", "component | None").replace("Any", "component")


def field_rows(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(name, type, default, description) of every field of a pydantic model, from its schema.

    A field holding another model (always present) is expanded into dotted rows
    (``optimizer.lr``); an optional one (``finetune``) is one row.
    """
    rows = []
    documented = attribute_docs(model)
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows += field_rows(annotation, f"{prefix}{name}.")
            continue
        if info.is_required():
            default = "(required)"
        else:
            value = info.get_default(call_default_factory=True)
            default = "None" if value is None else json.dumps(value, default=str)
        description = info.description or documented.get(name, "")
        rows.append((prefix + name, _type_name(annotation), default, description))
    return rows


def attribute_docs(cls: type) -> dict[str, str]:
    """The ``Attributes:`` section of a class's Google-style docstring, as {name: text}."""
    docs: dict[str, str] = {}
    lines = inspect.cleandoc(cls.__doc__ or "").splitlines()
    if "Attributes:" not in lines:
        return docs
    current = None
    for line in lines[lines.index("Attributes:") + 1 :]:
        if line and not line.startswith(" "):
            break  # the next section
        text = line.strip()
        head, sep, rest = text.partition(": ")
        if line.startswith("    ") and not line.startswith("     ") and sep and " " not in head:
            current, docs[head] = head, rest
        elif current is not None and text:
            docs[current] += " " + text
    return docs


def fields_text(model: type[BaseModel]) -> str:
    """:func:`field_rows` as aligned text: name, type and default, the description below."""
    rows = field_rows(model)
    if not rows:
        return "  (no parameters)"
    name_w = max(len(r[0]) for r in rows)
    type_w = min(max(len(r[1]) for r in rows), 28)  # a longer type pushes its default right
    lines = []
    for name, kind, default, description in rows:
        lines.append(f"  {name:<{name_w}}  {kind:<{type_w}}  default {default}")
        if description:
            lines.append(f"  {'':<{name_w}}  {description}")
    return "\n".join(lines)


def component_params_text(name: str, kind: str | None = None) -> str:
    """Every component named ``name`` (of ``kind``, or of any kind): its origin, summary and
    Config fields (``sparsekit plugins --params NAME``).

    Raises:
        PluginError: no component of that name (of that kind).
    """
    registry = get_registry()
    kinds = [kind] if kind is not None else registry.kinds()
    found = [k for k in kinds if name in registry.names(k)]
    if not found:
        if kind is not None:
            registry.get(kind, name)  # raises with the closest names
        known = sorted({n for k in kinds for n in registry.names(k)})
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.4)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise PluginError(f"no plugin named {name!r}.{hint} `sparsekit plugins` lists them all.")
    parts = []
    for k in found:
        cls = registry.get(k, name)
        row = next(r for r in registry.rows(k) if r.name == name)
        summary = inspect.cleandoc(cls.__doc__ or "").split("\n\n")[0].replace("\n", " ")
        parts.append(
            f"{k} {name} ({row.distribution} {row.version})\n  {summary}\n"
            f"parameters ({k}: {{name: {name}, ...}}):\n{fields_text(cls.Config)}"
        )
    return "\n\n".join(parts)
