"""Built-in learners."""

from sparsekit import hookimpl
from sparsekit_plugins.learners.anil import ANILLearner
from sparsekit_plugins.learners.fomaml import FOMAMLLearner
from sparsekit_plugins.learners.maml import MAMLLearner
from sparsekit_plugins.learners.mtl import MTLLearner


@hookimpl
def sparsekit_register_learners(register):
    register(MTLLearner)
    register(MAMLLearner)
    register(FOMAMLLearner)
    register(ANILLearner)
