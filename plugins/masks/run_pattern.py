"""``run_pattern`` (alias ``meta``): the zero pattern a run learned, loaded from its run directory.

The pattern is read from the backbone of the run's saved model (``sparsekit.Result.load``): at
channel granularity its entirely-zero input-channel groups, at element granularity its zero
weights. The run must have the same backbone (layer names and shapes) as the experiment.

The criterion ranks every entry of the pattern before every entry outside it, and within each
part by current magnitude (RMS of the group, ``|w|`` of the element, as ``magnitude`` does). So at
the pattern's own sparsity (``target: {from_run: ...}`` with the same run) the mask is exactly the
pattern, up to one group where the prefix of the ranking ends; at the intermediate sparsities of
a schedule it is the subset of the pattern whose weights are currently smallest, growing towards
the whole pattern (entries already masked stay masked); and a target beyond the pattern's
sparsity adds the lowest-magnitude entries outside it.

References:
    Upadhyay et al., "Meta-Sparsity: Learning Optimal Sparse Structures in Multi-task Networks
    through Meta-learning" (Table 5, the meta mask).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from sparsekit.errors import ConfigError
from sparsekit.interfaces import ComponentConfig, MaskCriterion
from sparsekit.nn import backbone_conv_weights
from sparsekit.nn.groups import Granularity, zero_channel_groups
from sparsekit.runs.store import CHECKPOINT_FILE, Result
from sparsekit_plugins.masks.magnitude import magnitude_scores


def learned_zeros(run_dir: Path) -> dict[str, Tensor]:
    """The backbone conv weights of the model saved in ``run_dir``, by name (on the CPU).

    Raises:
        ConfigError: ``run_dir`` holds no saved result with a model.
    """
    try:
        result = Result.load(run_dir)
    except FileNotFoundError as exc:
        raise ConfigError(f"mask 'run_pattern': {exc}") from None
    if result.model is None:
        raise ConfigError(
            f"mask 'run_pattern': the run {str(run_dir)!r} has no {CHECKPOINT_FILE} to read the "
            "pattern from"
        )
    return {n: w.detach().cpu() for n, w in backbone_conv_weights(result.model).items()}


class RunPatternMask(MaskCriterion):
    """The zero pattern of a meta-sparsity run first, then the lowest magnitudes.

    References:
        Upadhyay et al., "Meta-Sparsity" (Table 5, the meta mask).
    """

    name: ClassVar[str] = "run_pattern"
    #: Its name in the Table 5 configs written before the rename.
    aliases: ClassVar[tuple[str, ...]] = ("meta",)

    class Config(ComponentConfig):
        """Configuration of :class:`RunPatternMask`.

        Attributes:
            from_run: the run directory of the meta-sparsity run (with ``result.json`` and
                ``model.pt``).
        """

        from_run: Path

    config: Config

    def __init__(self, config: ComponentConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self._learned: dict[str, Tensor] | None = None

    @classmethod
    def example_params(cls, workdir: Path) -> dict[str, Any]:
        """A saved run of the contract suite's model with some zero groups and elements."""
        from sparsekit.testing import save_contract_run  # pytest, which it needs, is optional

        return {"from_run": str(save_contract_run(workdir / "meta_run"))}

    def pattern(self, weights: Mapping[str, Tensor], granularity: Granularity) -> dict[str, Tensor]:
        """The learned zeros matching ``weights``: ``[C_in]`` groups or element-shaped, bool.

        Raises:
            ConfigError: the run's backbone differs from ``weights`` in names or shapes.
        """
        if self._learned is None:
            self._learned = learned_zeros(self.config.from_run)
        learned = self._learned
        shapes = {n: tuple(w.shape) for n, w in weights.items()}
        theirs = {n: tuple(w.shape) for n, w in learned.items()}
        if shapes != theirs:
            raise ConfigError(
                f"mask 'run_pattern': the backbone of run {str(self.config.from_run)!r} does not "
                f"match this model's (layers and shapes differ); use a run of the same model"
            )
        if granularity == "element":
            return {n: learned[n].eq(0) for n in weights}
        return {n: zero_channel_groups(learned[n]) for n in weights}

    def scores(
        self, weights: Mapping[str, Tensor], granularity: Granularity, generator: torch.Generator
    ) -> dict[str, Tensor]:
        """Magnitude scores, shifted below every other for the entries of the learned pattern."""
        pattern = self.pattern(weights, granularity)
        base = {n: s.double().cpu() for n, s in magnitude_scores(weights, granularity).items()}
        shift = 1.0 + max((float(s.max()) for s in base.values() if s.numel()), default=0.0)
        return {n: base[n] - shift * pattern[n].double() for n in weights}
