"""What each script family checks before it creates a run folder or starts work: the run folder's
name and parent, the training intervals, and the memory its sizes need, estimated from the config.

The estimates count the large arrays of one step (samples, activations kept for backward, the
inner loop's fast weights) and the network with its Adam state, in bytes; they are meant to be
right within a factor of about two, enough to refuse a size typed with three zeros too many
before it makes the machine swap (the single checks of one value live in utils/bounds.py).
"""
from experiment.omniglot_presets import OmniglotConfig
from experiment.sine_presets import SineConfig
from model.anml import anml_shapes
from model.networks import conv_output_size, sine_layer_sizes
from utils import bounds
from utils.errors import UserError

F32 = 4
OMNIGLOT_BACKGROUND_CLASSES = 964  # the whole background split is decoded, whatever --n-classes
OMNIGLOT_IMAGES_PER_CLASS = 20
FEATURE_CHUNK = 256                # experiment.evaluation.features.feature_bank's forward batch
# Figures of the representation study: 20 rows of the 9-wide grid (the original drew 9 x 4), and
# as many projection classes as the colour map has distinct colours.
MAX_MAPS = 180
MAX_PROJECTION_CLASSES = 20


# --- every script that writes a run folder --------------------------------------------------------

def run_folder(args, need_bytes: int = bounds.MIN_FREE_BYTES) -> None:
    """--name is one folder name and --results-dir can take a new run folder of `need_bytes`; a
    --cache-dir, where a script has one, is not a file (a cache that cannot be written would only
    be skipped with a warning, every run recomputing it)."""
    bounds.run_name(args.name)
    bounds.writable_folder("--results-dir", args.results_dir, need_bytes)
    if getattr(args, "cache_dir", None) is not None:
        bounds.folder_path("--cache-dir", args.cache_dir)


DEFAULT_INTERVALS = {"log_every": 50, "save_every": 1000}


def training_intervals(args) -> None:
    """--log-every and --save-every are at least 1, and a checkpoint falls on a metrics line: a
    resumed run logs from its checkpoint's step, so the windows must end there. A --save-every the
    log interval does not divide is refused, not rounded; the default 1000 becomes the largest
    multiple of --log-every below it (experiment.training.loop.intervals)."""
    log, save = getattr(args, "log_every", None), getattr(args, "save_every", None)
    for flag, value in (("--log-every", log), ("--save-every", save)):
        if value is not None:
            bounds.at_least(flag, value)
    if save is not None and not getattr(args, "resume", None):  # a resumed run's are checked against its own
        log = log or DEFAULT_INTERVALS["log_every"]
        if save % log:
            raise UserError(f"--save-every {save} is not a multiple of --log-every {log}: a checkpoint must fall on a "
                            f"metrics line, so that a resumed run logs what the uninterrupted one would; give "
                            f"--save-every {max(log, save // log * log)} or a --log-every that divides {save}")


# --- the flags of one method --------------------------------------------------------------------------

def method_flags(given: dict, method: str, fields: dict, also: tuple = ()) -> None:
    """Refuse the first flag of `given` ({dest: (flag, value[, as typed])}, experiment.config.
    given_flags) that `method` does not read; `also`: other readers in use (the trajectory
    evaluation) that make a flag apply."""
    for dest, (flag, *_) in sorted(given.items()):
        users = fields.get(dest)
        if users and method not in users and not set(also) & set(users):
            methods = [u for u in users if " " not in u]
            others = "".join(f" (and the {u}, with --eval-protocol trajectory)" for u in users if " " in u)
            raise UserError(f"{flag} is read by --method {' or '.join(methods)}{others} only; with --method {method} "
                            "it would be silently ignored: drop it")


# --- a checkpoint's network -------------------------------------------------------------------------

def n_params(cfg) -> int:
    """Parameters of the network a config describes, without building it."""
    return sine_params(cfg) if isinstance(cfg, SineConfig) else sum(omniglot_params(cfg))


def checkpoint_network(cfg, payload: dict) -> None:
    """Before the network a checkpoint's config describes is built: it needs no more parameters than
    the checkpoint's weights hold (buffers, such as a normalisation's statistics, come on top). A
    config whose sizes were changed (channels 1e6, width 1e8, image size 1e5) would otherwise make
    torch ask for gigabytes to terabytes before the shapes are compared (checkpoint.load_weights)."""
    need = n_params(cfg)
    held = sum(int(t.numel()) for t in payload["state_dict"].values())
    if need > held:
        raise UserError(f"'{payload.get('path', 'the checkpoint')}' does not fit the network its config describes: "
                        f"the config's sizes need {need:,} parameters, its weights hold {held:,}")


def _linear_params(sizes) -> int:
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def checkpoint_bytes(n_params: int) -> int:
    """A training checkpoint: weights and Adam's two moments, twice while the new one is written."""
    return 2 * 3 * F32 * n_params + bounds.MIN_FREE_BYTES


# --- sine -------------------------------------------------------------------------------------------

def _sine_sample_bytes(cfg: SineConfig) -> int:
    # x and y drawn as float64, the encoded input and the target as float32
    return F32 * (cfg.capacity + 1) + 3 * 8 + F32


def sine_params(cfg: SineConfig) -> int:
    return _linear_params(sine_layer_sizes(cfg.arch, cfg.width, cfg.capacity))


def sine_training(cfg: SineConfig) -> None:
    sizes = sine_layer_sizes(cfg.arch, cfg.width, cfg.capacity)
    rln_units, pln_units = sum(sizes[1:cfg.rln + 1]), sum(sizes[cfg.rln + 1:])
    n_params = _linear_params(sizes)
    network = (f"--width {cfg.width} with --capacity {cfg.capacity}", "the network and its Adam state",
               4 * F32 * n_params)
    if cfg.method == "oml":
        samples = cfg.tasks * (cfg.update_step * cfg.batch_size + cfg.meta_batch)
        steps = cfg.tasks * cfg.update_step
        copies = 2 if cfg.first_order else 3  # each step's fast weights and gradient (+ its graph)
        step = (samples * (_sine_sample_bytes(cfg) + 2 * F32 * rln_units)
                + steps * (copies * F32 * _linear_params(sizes[cfg.rln:]) + 2 * F32 * cfg.batch_size * pln_units))
        parts = [(f"--tasks {cfg.tasks} x (--update_step {cfg.update_step} x --batch-size {cfg.batch_size} + --meta-batch "
                  f"{cfg.meta_batch}) samples of --capacity {cfg.capacity}",
                  "the trajectory of one meta-step and its inner-loop graph", step), network]
    else:
        samples = cfg.iid_functions * cfg.iid_samples
        heads = -(-cfg.n_train_functions // cfg.capacity) * (sizes[-2] + 1)
        step = samples * (_sine_sample_bytes(cfg) + 2 * F32 * (rln_units + pln_units))
        parts = [(f"{samples} samples per update (inputs of --capacity {cfg.capacity})", "one i.i.d. update", step),
                 network[:2] + (network[2] + 4 * F32 * heads,)]
    bounds.fits_in_memory(parts)


def sine_evaluation(cfg: SineConfig, protocol) -> None:
    """experiment.evaluation.sine.evaluate: a batch of runs (or all search runs) drawn and featurised at once."""
    sizes = sine_layer_sizes(cfg.arch, cfg.width, cfg.capacity)
    runs = max(min(protocol.run_batch, protocol.runs), protocol.search_runs)
    samples = cfg.tasks * (protocol.batches_per_function * protocol.batch_size + protocol.test_samples)
    per_run = samples * (_sine_sample_bytes(cfg) + F32 * sizes[cfg.rln])
    sequential = not protocol.iid and protocol.epochs == 1
    order_steps = cfg.tasks * protocol.batches_per_function * (1 if sequential else protocol.epochs * (cfg.tasks + 1) / 2)
    per_run += 8 * order_steps + 3 * F32 * _linear_params(sizes[cfg.rln:])
    bounds.fits_in_memory([
        (f"--run-batch {runs} x --tasks {cfg.tasks} x (--update_step {protocol.batches_per_function} x --batch-size "
         f"{protocol.batch_size} + --test-samples {protocol.test_samples})",
         "the samples and features of one batch of runs", runs * per_run),
        (f"--width {cfg.width}", "the network", F32 * _linear_params(sizes))])


# --- Omniglot ---------------------------------------------------------------------------------------

def _omniglot_shapes(cfg: OmniglotConfig):
    """(units of each convolution's output per image, features, RLN params, PLN params)."""
    if cfg.method == "anml":
        return anml_shapes(cfg.image_size, cfg.channels, cfg.nm_channels, cfg.n_outputs)
    side, units, in_ch, conv_params = cfg.image_size, [], 1, 0
    for stride in cfg.strides:
        side = (side - 3) // stride + 1
        units.append(cfg.channels * side * side)
        conv_params += in_ch * cfg.channels * 9 + cfg.channels
        in_ch = cfg.channels
    features = cfg.channels * conv_output_size(cfg.image_size, cfg.strides) ** 2
    sizes = [features, cfg.pln_hidden, cfg.n_outputs] if cfg.pln_hidden else [features, cfg.n_outputs]
    return units, features, conv_params, _linear_params(sizes)


def omniglot_params(cfg: OmniglotConfig) -> tuple[int, int]:
    """(RLN, PLN) parameter counts, without building the network."""
    return _omniglot_shapes(cfg)[2:]


def omniglot_images_bytes(image_size: int, n_classes: int = OMNIGLOT_BACKGROUND_CLASSES) -> int:
    return n_classes * OMNIGLOT_IMAGES_PER_CLASS * image_size * image_size


def _image_part(cfg: OmniglotConfig, n_classes: int = OMNIGLOT_BACKGROUND_CLASSES):
    return (f"--image-size {cfg.image_size}", f"{n_classes} classes x 20 decoded images",
            omniglot_images_bytes(cfg.image_size, n_classes))


def omniglot_training(cfg: OmniglotConfig) -> None:
    units, _, conv_params, pln_params = _omniglot_shapes(cfg)
    per_image = F32 * cfg.image_size ** 2 + 2 * F32 * sum(units)  # input, conv and ReLU outputs
    # A CPU convolution unfolds its input (im2col): up to 9 x channels values per output position of
    # the largest layer, for every image of the step at once. Without it the estimate of MAML-Rep
    # --ways 963 on the cpu network was 3.1 GiB; the run peaked at 9.4 GB resident (8.7 above Python).
    workspace = 9 * F32 * max(units)
    if cfg.method in ("oml", "anml"):
        if cfg.method == "anml":  # its fast weights are the body and the head: bounded by all parameters
            pln_params += conv_params
        images = (cfg.tasks * (cfg.update_step * (1 + cfg.meta_repeats_trajectory) + cfg.held_out) + cfg.meta_random)
        steps = cfg.tasks * cfg.update_step
        backward = 1 if cfg.first_order else 2  # second order keeps the double-backward graph too
        step = images * (per_image * backward + workspace) + steps * (2 if cfg.first_order else 3) * F32 * pln_params
        what = (f"--tasks {cfg.tasks} x --update_step {cfg.update_step} with --meta-random {cfg.meta_random}, "
                f"--channels {cfg.channels}, --image-size {cfg.image_size}")
    elif cfg.method == "maml-rep":  # the support set's features once, reused by every inner step
        images = cfg.ways * (cfg.shots + cfg.query)
        backward = 1 if cfg.first_order else 2
        step = (images * (per_image * backward + workspace)
                + cfg.inner_steps * (2 if cfg.first_order else 3) * F32 * pln_params)
        what = (f"--ways {cfg.ways} x (--shots {cfg.shots} + --query {cfg.query}), --inner-steps {cfg.inner_steps}, "
                f"--channels {cfg.channels}, --image-size {cfg.image_size}")
    else:
        step = cfg.iid_batch * (per_image + workspace)
        what = f"--iid-batch {cfg.iid_batch} with --channels {cfg.channels}, --image-size {cfg.image_size}"
    bounds.fits_in_memory([(what, "the activations of one training step", step), _image_part(cfg),
                           (f"--channels {cfg.channels}", "the network and its Adam state",
                            4 * F32 * (conv_params + pln_params))])


def omniglot_evaluation(cfg: OmniglotConfig, protocol, n_classes: int, scratch: bool = False) -> None:
    """After the evaluation split is loaded (n_classes), before features are computed."""
    units, features, conv_params, pln_params = _omniglot_shapes(cfg)
    runs = min(protocol.run_batch, protocol.runs)
    if scratch:  # a whole network per run, trained one image at a time
        learner = runs * 4 * F32 * (conv_params + pln_params) + 4 * F32 * sum(units)
        bank = ("--scratch", "the evaluation images as floats", F32 * n_classes * 20 * cfg.image_size ** 2)
    else:
        learner = runs * 4 * F32 * pln_params  # weights, gradient, Adam's moments per run
        bank = (f"--channels {cfg.channels} x --image-size {cfg.image_size}",
                f"the features of {n_classes} classes x 20 images",
                F32 * n_classes * 20 * features + FEATURE_CHUNK * 2 * F32 * max(units))  # no_grad: two layers at a time
    bounds.fits_in_memory([bank, (f"--run-batch {runs}", "the PLNs trained together", learner)])


# --- the representation study -------------------------------------------------------------------------

def study_flags(args) -> None:
    """visualize_representations.py's counts, before any checkpoint or image is read."""
    if args.images is not None:
        bounds.at_least("--images", args.images)
    bounds.at_least("--maps", args.maps, 1, MAX_MAPS, "each map is a panel of the figure; the original drew 36")
    if args.classes is not None:
        bounds.at_least("--classes", args.classes, 1, MAX_PROJECTION_CLASSES,
                        "the projection's colour map has that many distinct colours")
    bounds.at_least("--batch-size", args.batch_size)
    bounds.seed(args.seed)


def omniglot_study(cfg: OmniglotConfig, args, n_classes: int) -> None:
    """n_classes: background classes the study reads (at most 900, as the original)."""
    total = n_classes * OMNIGLOT_IMAGES_PER_CLASS
    if args.images is not None and args.images > total:
        raise UserError(f"--images {args.images} exceeds the {total} images of background classes 0-{n_classes - 1}")
    if args.classes is not None and args.classes > n_classes:
        raise UserError(f"--classes {args.classes} exceeds the {n_classes} background classes the study reads")
    units, features, _, _ = _omniglot_shapes(cfg)
    n_inputs = args.images or total
    batch = min(args.batch_size, n_inputs)
    bounds.fits_in_memory([
        (f"--batch-size {args.batch_size}", "one forward pass of the convolutions",
         batch * (F32 * cfg.image_size ** 2 + 2 * F32 * max(units))),
        (f"--images {n_inputs}", "the representations",
         n_inputs * features + min(args.classes or n_classes, n_classes) * 20 * F32 * features),
        _image_part(cfg)])


def sine_study(cfg: SineConfig, args, n_inputs: int) -> None:
    slots = cfg.tasks if cfg.slot_mode == "position" else cfg.capacity
    if args.classes is not None and args.classes > slots:
        raise UserError(f"--classes {args.classes} exceeds the {slots} task slots this checkpoint's inputs use "
                        f"(slot mode {cfg.slot_mode!r})")
    sizes = sine_layer_sizes(cfg.arch, cfg.width, cfg.capacity)
    rep = sizes[cfg.rln]
    # inputs, the binary representation, and the projected inputs' float representation (+ PCA copies)
    per_input = _sine_sample_bytes(cfg) + rep + 3 * F32 * rep
    batch = min(args.batch_size, n_inputs)
    bounds.fits_in_memory([(f"--images {n_inputs}", "the inputs and their representations", n_inputs * per_input),
                           (f"--batch-size {args.batch_size}", "one forward pass",
                            batch * 2 * F32 * sum(sizes[1:cfg.rln + 1]))])
