"""Pure torch building blocks: the multi-task network and everything sparsity does to it.

No registry and no run-directory I/O live here: the multi-task net and its heads
(:mod:`~sparsekit.nn.multitask`, :mod:`~sparsekit.nn.heads`), channel-group math
(:mod:`~sparsekit.nn.groups`), masks held at zero (:mod:`~sparsekit.nn.masking`), the proximal
optimiser (:mod:`~sparsekit.nn.optim`), sparsity statistics (:mod:`~sparsekit.nn.sparsity`),
removal of zeroed channels (:mod:`~sparsekit.nn.compaction`) and efficiency figures
(:mod:`~sparsekit.nn.efficiency`).
"""

from sparsekit.nn.multitask import MultiTaskNet, backbone_conv_weights

__all__ = ["MultiTaskNet", "backbone_conv_weights"]
