"""`--device auto|cpu|cuda` resolved once, with a clear error for a missing GPU."""
import torch

from utils.errors import UserError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name} was asked for, but torch sees no CUDA device (use --device cpu or auto)")
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise UserError(f"--device {name!r} is not a device torch knows ({err})") from None
