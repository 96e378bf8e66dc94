"""ImageNet weights for a backbone: from a given file, the torch hub cache, or a download.

Clusters and CI often have no internet, so a missing file fails at once with what to do
instead of waiting on a download that cannot finish.
"""
import os
import socket

import torch
from torch import nn

from architectures.registry import Backbone
from errors import UserError

DOWNLOAD_HOST = "download.pytorch.org"
# The classifier is replaced by the embedding layer, so a file's own classifier is ignored:
# torchvision calls it fc, pretrainedmodels last_linear.
CLASSIFIER_PREFIXES = ("fc.", "last_linear.")


def load_imagenet_weights(resnet: nn.Module, backbone: Backbone, name: str,
                          pretrained_weights: str | None = None) -> None:
    if pretrained_weights is not None:
        if not os.path.isfile(pretrained_weights):
            raise UserError(f"--pretrained_weights {pretrained_weights}: no such file; "
                            f"give the path of a torchvision {name} state dict")
        state, source = _read_state_dict(pretrained_weights, name), pretrained_weights
    else:
        state, source = _cached_or_downloaded(backbone, name)
    _load_backbone_state(resnet, state, name, source)


def _cached_or_downloaded(backbone: Backbone, name: str) -> tuple[dict, str]:
    checkpoints = os.path.join(torch.hub.get_dir(), "checkpoints")
    url = backbone.weights.url
    expected_path = os.path.join(checkpoints, os.path.basename(url))
    for path in (expected_path, os.path.join(checkpoints, backbone.legacy_file)):
        if os.path.isfile(path):
            return _read_state_dict(path, name), path
    advice = (f"download {url} to {expected_path}, or pass --pretrained_weights PATH, "
              f"or --not_pretrained to start from random weights")
    try:
        with socket.create_connection((DOWNLOAD_HOST, 443), timeout=3):
            pass
    except OSError as error:
        raise UserError(f"ImageNet weights for {name} are not at {expected_path} and "
                        f"{DOWNLOAD_HOST} is unreachable ({error}); {advice}") from error
    try:
        return backbone.weights.get_state_dict(progress=True, check_hash=True), url
    except (OSError, RuntimeError) as error:
        raise UserError(f"downloading {url} failed ({_first_line(error)}); {advice}") from error


def _read_state_dict(path: str, name: str):
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load fails in many ways on files that are not tensors
        # Only the error's type: torch's own text advises weights_only=False, which is unsafe.
        raise UserError(f"{path} is not a state dict of a torchvision {name} (torch.load: "
                        f"{type(error).__name__}); give {name} ImageNet weights or --not_pretrained") from error
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    return state


def _load_backbone_state(resnet: nn.Module, state, name: str, source: str) -> None:
    if not isinstance(state, dict):
        raise UserError(f"{source} holds a {type(state).__name__}, not a state dict of a torchvision "
                        f"{name}; give {name} ImageNet weights or --not_pretrained")
    given = {key: value for key, value in state.items() if not key.startswith(CLASSIFIER_PREFIXES)}
    expected = {key: value.shape for key, value in resnet.state_dict().items()
                if not key.startswith(CLASSIFIER_PREFIXES)}
    problems = _mismatches(given, expected)
    if problems:
        raise UserError(f"{source} is not a state dict of a torchvision {name} ({problems}); "
                        f"give {name} ImageNet weights or --not_pretrained")
    # strict=False: the classifier is dropped, and num_batches_tracked may be absent.
    resnet.load_state_dict(given, strict=False)


def _mismatches(given: dict, expected: dict) -> str:
    # Files saved before PyTorch 0.4 lack num_batches_tracked; BatchNorm fills it in on load.
    missing = [key for key in expected
               if key not in given and not key.endswith("num_batches_tracked")]
    unexpected = [key for key in given if key not in expected]
    wrong_shape = [key for key in given if key in expected and
                   (not torch.is_tensor(given[key]) or given[key].shape != expected[key])]
    problems = [f"{len(keys)} {kind}, e.g. {keys[0]}" for kind, keys in
                (("missing keys", missing), ("unexpected keys", unexpected),
                 ("keys of the wrong shape", wrong_shape)) if keys]
    return "; ".join(problems)


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
