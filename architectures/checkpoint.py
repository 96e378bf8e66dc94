"""What network a checkpoint holds: recorded as arch, head, embed_dim, pooling and image_size,
checked when loading."""
import torch
from torch import nn

from architectures.pretrained import mismatches
from errors import UserError

DESCRIPTION = ("arch", "head", "embed_dim", "pooling", "image_size")
# what checkpoints written before --head, --pooling and --image_size existed hold
DEFAULTS = {"head": "linear", "pooling": "auto", "image_size": None}


def describe(network: nn.Module) -> dict:
    """{"arch", "head", "embed_dim", "pooling", "image_size"}: stored in every checkpoint, enough to
    build the network again."""
    return {key: getattr(network, key) for key in DESCRIPTION}


def recorded(checkpoint: dict) -> dict:
    """The description a checkpoint records (the defaults for what it predates)."""
    return {key: checkpoint.get(key, DEFAULTS.get(key)) for key in DESCRIPTION}


def as_flags(description: dict) -> str:
    """arch, head and embed_dim as flags, pooling and image_size where not their defaults."""
    return " ".join(f"--{key} {description[key]}" for key in DESCRIPTION
                    if key in ("arch", "head", "embed_dim") or description[key] != DEFAULTS[key])


def load_weights(network: nn.Module, checkpoint: dict, source: str) -> None:
    """Load checkpoint["network"] into `network`, or say in one line which network `source` holds."""
    stored = recorded(checkpoint)
    wanted = describe(network)
    known = {key: value for key, value in stored.items() if value is not None or key == "image_size"}
    if any(wanted[key] != value for key, value in known.items()):
        raise UserError(f"{source} holds {as_flags(stored)}, not {as_flags(wanted)}; "
                        "give the flags of the run that wrote it")
    state = checkpoint.get("network")
    if not isinstance(state, dict):
        raise UserError(f"{source} has no network weights (no 'network' state dict)")
    problems = mismatches(state, {key: value.shape for key, value in network.state_dict().items()})
    if problems:
        raise UserError(f"{source} says it holds {as_flags(stored)} but its weights do not fit that network "
                        f"({problems}); they hold {_weights_description(state)}")
    # strict=False: files from before PyTorch 0.4 lack num_batches_tracked, BatchNorm fills it in.
    network.load_state_dict(state, strict=False)


def _weights_description(state: dict) -> str:
    """Head and embed_dim as far as the weights tell."""
    projection = state.get("model.last_linear.weight")
    embed_dim = projection.shape[0] if torch.is_tensor(projection) and projection.dim() == 2 else "?"
    if "after_projection.running_mean" in state:
        head = "bn1d"
    elif "before_projection.mlp.0.weight" in state:
        head = "skip"
    elif "before_projection.0.weight" in state:
        head = "mlp"
    else:
        head = "linear"
    return f"a {head} head with embed_dim {embed_dim}"
