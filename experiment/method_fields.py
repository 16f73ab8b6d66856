"""Which config fields each method reads: the scripts refuse a flag its method ignores
(experiment/limits.py), and an aggregate does not split a method's seeds on a field it ignores
(experiment/aggregate.py). Plain data, so that the aggregate imports no torch."""

# The config fields only some methods read (the others ignore them); a flag of one given with another
# method is refused, not silently ignored. The shared ones (network, data, --steps, --seed) are absent,
# and so are --tasks, --class-split and --meta-random: validate() bounds them by --n-classes for every
# method, so a baseline on few classes may need them set to pass.
OMNIGLOT_METHOD_FIELDS = {
    **dict.fromkeys(("update_step", "held_out", "reset", "update_lr", "meta_lr"), ("oml", "anml")),
    "first_order": ("oml", "anml", "maml-rep"),
    "nm_channels": ("anml",),
    **dict.fromkeys(("iid_batch", "iid_lr", "iid_epochs"), ("pretraining", "srnn")),
    "srnn_beta": ("srnn",),
    **dict.fromkeys(("ways", "shots", "query", "inner_steps", "maml_update_lr", "maml_meta_lr", "maml_clip",
                     "maml_steps"), ("maml-rep",)),
}
# Sine: the evaluation after training (any method) reads tasks, capacity and the slot layout, and
# its `trajectory` protocol the inner loop's update_step, batch_size, update_lr and inner_clip.
SINE_METHOD_FIELDS = {
    **dict.fromkeys(("meta_lr", "meta_batch", "first_order"), ("oml",)),
    **dict.fromkeys(("update_step", "batch_size", "update_lr", "inner_clip"), ("oml", "trajectory evaluation")),
    "iid_lr": ("pretraining", "srnn"),
    "srnn_beta": ("srnn",),
}


def fields_not_read(method: str, fields: dict) -> set[str]:
    """The fields of `fields` that training `method` never reads. A field an evaluation also reads
    (a reader named with a space, "trajectory evaluation") counts as read by every method."""
    return {name for name, users in fields.items() if method not in users and not any(" " in u for u in users)}
