"""Built-in loss combiners."""

from sparsekit import hookimpl
from sparsekit_plugins.loss_combiners.equal import EqualCombiner
from sparsekit_plugins.loss_combiners.uncertainty import UncertaintyCombiner


@hookimpl
def sparsekit_register_loss_combiners(register):
    register(UncertaintyCombiner)
    register(EqualCombiner)
