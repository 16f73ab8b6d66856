"""`--device auto|cpu|cuda[:N]` resolved once, with a clear error for a missing GPU, and the CUDA
arithmetic policy (`--tf32`) applied in the same place.

CUDA policy. By default a GPU computes in true float32 with deterministic cuDNN algorithms (TF32
off for matmuls and convolutions, no autotuning: torch's own default leaves cuDNN convolutions
on TF32), `torch.use_deterministic_algorithms` and a fixed cuBLAS workspace
(`CUBLAS_WORKSPACE_CONFIG=:4096:8` unless already set), so a CUDA run gives the CPU's numbers up to
float32 rounding (tests/test_gpu_path.py) and one seed gives one result. Not yet checked on a GPU
by this repository's own runs: no session so far was lent one. `--tf32` trades that for speed: TF32 matmuls and convolutions
(10-bit mantissas: ~1e-3 relative error per product, carried through the second-order inner
loop) and cuDNN's autotuner (fastest kernels for the fixed shapes of a meta-step, chosen anew in
each process, so reruns may differ in the last digits). On a CPU the flag changes nothing.
"""
import os

import torch

from utils.errors import UserError


def resolve_device(name: str = "auto", *, tf32: bool = False) -> torch.device:
    if name == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name} was asked for, but torch sees no CUDA device (use --device cpu or auto)")
    else:
        try:
            device = torch.device(name)
        except RuntimeError as err:
            raise UserError(f"--device {name!r} is not a device torch knows ({err})") from None
    if device.type == "cuda":
        set_cuda_math(tf32)
    return device


# cuBLAS reuses workspaces across streams unless given a fixed one, and then its reductions may
# differ run to run; it reads this when its first handle is made, so set it before any CUDA matmul.
CUBLAS_WORKSPACE = ":4096:8"


def set_cuda_math(tf32: bool) -> None:
    """Process-wide switches: TF32 and cuDNN autotuning together, or neither (deterministic cuDNN,
    deterministic algorithms, a fixed cuBLAS workspace). warn_only: an op with no deterministic CUDA
    kernel prints torch's warning naming it instead of stopping the run; then "same seed, same
    bytes" does not hold for that run, and the warning says so."""
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = tf32
    torch.backends.cudnn.deterministic = not tf32
    if not tf32:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)  # a user's own setting wins
    torch.use_deterministic_algorithms(not tf32, warn_only=True)


def cuda_math(device: torch.device) -> str | None:
    """What the run's metadata records: the arithmetic a CUDA device was set to, None on a CPU."""
    if torch.device(device).type != "cuda":
        return None
    return "tf32+autotune" if torch.backends.cudnn.allow_tf32 else "float32, deterministic cuDNN"
