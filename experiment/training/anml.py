"""The ANML meta-training step on Split-Omniglot (model/anml.py; settings and sources: docs/anml.md).

ANML samples as the 2019 OML code did, which it was built from: one class per meta-step, its 20
images one inner step each, and a meta set of random images plus that class's images again, with
the class's output row re-initialised first (`OMLTraining.batch`). What differs is the step: the
inner loop adapts the whole prediction network (body and head) under the NM network's gates, and
Adam updates both networks' initial weights from the meta-loss (`model.anml.anml_meta_loss`).
"""
from experiment.training.omniglot import OMLTraining
from model.anml import anml_meta_loss


class ANMLTraining(OMLTraining):
    divergence_hint = "lower --meta_lr or --update_lr"

    def step(self) -> dict:
        batch = self.batch()
        out = anml_meta_loss(self.model, *batch, self.rule)
        self.update(out.loss)
        y_meta = batch.y_meta
        correct = (out.outputs.argmax(1) == y_meta).float()
        metrics = {"loss": out.loss.item(), "meta_loss_before": out.before.item(),
                   "accuracy_after": correct.mean().item(),
                   # the gate's openness on the meta set: its mean, and the share of units it passes above one half
                   "gate_mean": out.gate.mean().item(), "gate_open": (out.gate > 0.5).float().mean().item()}
        n_random = self.cfg.meta_random
        if n_random and len(y_meta) > n_random:  # both parts present: remembering vs learning
            metrics["accuracy_after_random"] = correct[:n_random].mean().item()
            metrics["accuracy_after_trajectory_classes"] = correct[n_random:].mean().item()
        return metrics

