"""Built-in learners."""

from sparsekit import hookimpl
from sparsekit_plugins.learners.mtl import MTLLearner


@hookimpl
def sparsekit_register_learners(register):
    register(MTLLearner)
