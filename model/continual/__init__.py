"""Online continual-learning methods of the paper's Table 2, one update rule per module.

    models.py     what a learner trains: a linear head on cached features (closed form) or a whole
                  network (autograd); both give a batch's mean cross-entropy gradient
    sgd.py        Online and Approx IID: one plain SGD step per incoming sample
    reservoir.py  ER-Reservoir (Chaudhry et al. 2019): a reservoir buffer and the replay step
    mer.py        MER (Riemer et al. 2019, Algorithm 1): Reptile within and across replay batches
    ewc.py        EWC (Kirkpatrick et al. 2017, Eq. 3): a diagonal-Fisher penalty per finished task

Every learner has the same three calls, so the protocol (experiment/evaluation/table2.py) drives
them alike: `observe(params, x, y)` for one incoming sample (x [1, ...], y [1]), `end_task(params,
xs, ys)` after a task's samples, and nothing else. `params` is a list of tensors updated in place.
Randomness (buffer sampling) comes from a numpy Generator the caller passes in.
"""
from typing import Protocol, runtime_checkable

from model.continual.ewc import EWC
from model.continual.mer import MER
from model.continual.models import LearnerModel
from model.continual.reservoir import ExperienceReplay, Reservoir
from model.continual.sgd import Online


@runtime_checkable
class ContinualLearner(Protocol):
    """What the Table 2 protocol drives (experiment/evaluation/table2.py `train_run`); built as
    `cls(model: LearnerModel, lr, rng=numpy Generator, **hyperparameters)`."""

    def observe(self, params: list, x, y) -> None:
        """Learn one incoming sample (x [1, ...], y [1]); `params` updated in place."""

    def end_task(self, params: list, xs, ys) -> None:
        """A task ended; xs, ys are its samples (a no-op for all but EWC)."""


LEARNERS: dict[str, type[ContinualLearner]] = {"online": Online, "iid": Online, "er": ExperienceReplay, "mer": MER,
                                               "ewc": EWC}

__all__ = ["EWC", "LEARNERS", "MER", "ContinualLearner", "ExperienceReplay", "LearnerModel", "Online", "Reservoir"]
