"""MAML-Rep, the paper's meta-learning baseline: MAML restricted to the PLN, on few-shot tasks.

A task is `ways` classes relabelled 0..ways-1 in the order they were drawn, `shots` support and
`query` query images of each. The PLN takes `inner_steps` plain SGD steps, each on the *whole*
support batch (batch updates, not OML's one image at a time); the meta-loss is the adapted PLN's
cross-entropy on the query images, back-propagated into the RLN and the PLN initialisation.

It is OML's objective (`model.meta_learner`) with a trajectory of `inner_steps` identical
batches, so it reuses that module's inner loop. What differs is only the cost: the support
images' RLN features are computed once and the same [B, F] tensor is the input of every inner
step, instead of running the RLN on `inner_steps` copies of the support set. The RLN does not
change inside the inner loop, so this is exact (tests/test_maml_rep.py checks it against the
brute-force recomputation of `model.reference`).

What the original few-shot code (khurramjaved96/mrcl 07eb050, 2019-08-25, `mrcl_few_shot.py`,
renamed `maml-rep_omniglot.py` in d80d0a0; `MetaLearingClassification.sample_few_shot_training_data`
and `forward`) did, and what is kept:
- 5 classes per task (`--tasks 5`), drawn without replacement from all 963 meta-training classes;
  for each, one shuffled pass over its 20 images: the first 5 are support, the next 5 query.
- Labels are rewritten to the class's position in the task (0..4), so the same 5 output units
  are used by every task and the loss is the cross-entropy over all output units.
- No output-row reset (the reset is commented out in the few-shot sampler).
- 5 inner steps (`--update_step 5`), each on the full 25-image support batch (the support tensor
  is repeated along the step axis); inner SGD of the PLN only (the RLN layers have `learn=False`).
- Meta-loss: the query loss after the last inner step only; Adam (`--meta_lr 1e-4`) over every
  parameter; element-wise clamp of the meta-gradient to +-5 (`clip_grad_params(norm=5)`).
- Inner lr `--update_lr 0.01`; first order (the inner gradients were taken without create_graph,
  as in all pre-2020 code).
What differs, and why (docs/maml_rep.md): the network is the preset's (e717f2c used OML's conv
net; 07eb050 switched the script to a 5-output MLP, `omniglot-fc`, which cannot learn
Split-Omniglot's 10-600 classes; Fig. 4 compares representations of one network), and the
gradient order follows the preset's `first_order` as OML's does, so the two objectives are
compared at the same order; `--first-order` gives the 2019 meta-gradient. The `cpu` preset's
rates and length are its own (experiment/omniglot_presets.py).
"""
import torch

from model.meta_learner import InnerLoopRule, MetaLoss, adapted_loss


def few_shot_loss(model, x_support, y_support, x_query, y_query, loss_fn, rule: InnerLoopRule,
                  inner_steps: int) -> MetaLoss:
    """The query loss after `inner_steps` SGD steps of the PLN, each on the whole support batch.

    x_support [B, ...], y_support [B]; x_query [Q, ...], y_query [Q]. Equal to
    `meta_loss(model, x_support.expand(inner_steps, ...), ...)`, with the RLN run once."""
    b = len(x_support)
    if rule.first_order:
        # First order: the inner gradients are constants, so nothing flows back through the
        # support features; they need no graph.
        with torch.no_grad():
            support_feats = model.rln(x_support)
        query_feats = model.rln(x_query)
    else:
        feats = model.rln(torch.cat([x_support, x_query]))
        support_feats, query_feats = feats[:b], feats[b:]
    steps_feats = support_feats.unsqueeze(0).expand(inner_steps, *support_feats.shape)  # a view, no copy
    steps_targets = y_support.unsqueeze(0).expand(inner_steps, *y_support.shape)
    return adapted_loss(model.pln, steps_feats, steps_targets, query_feats, y_query, loss_fn, rule)


def clamp_gradients(parameters, bound: float | None) -> None:
    """Clamp every .grad element-wise to [-bound, bound] (the original's meta-gradient clip); None: off."""
    if bound is None:
        return
    for p in parameters:
        if p.grad is not None:
            p.grad.clamp_(-bound, bound)
