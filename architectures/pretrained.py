"""ImageNet weights for a backbone: from a given file, the torch hub cache, or a download.

Clusters and CI often have no internet, so a missing file fails at once with what to do
instead of waiting on a download that cannot finish.
"""
import os
import socket
from urllib.parse import urlparse

import torch
from torch import nn

from architectures.registry import Backbone
from errors import UserError, first_line

# The classifier is replaced by the embedding head, so a file's own classifier is ignored:
# torchvision calls it fc, pretrainedmodels last_linear.
CLASSIFIER_PREFIXES = ("fc.", "last_linear.")


def load_imagenet_weights(network: nn.Module, backbone: Backbone, name: str,
                          pretrained_weights: str | None = None) -> None:
    if pretrained_weights is not None:
        if not os.path.isfile(pretrained_weights):
            raise UserError(f"--pretrained_weights {pretrained_weights}: no such file; "
                            f"give the path of a {backbone.library} {name} state dict")
        state, source = _read_state_dict(pretrained_weights, backbone, name), pretrained_weights
    else:
        state, source = _cached_or_downloaded(backbone, name)
    _load_backbone_state(network, state, backbone, name, source)


def expected_file(backbone: Backbone) -> str:
    """Where the torch hub cache keeps the backbone's ImageNet weights."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(backbone.url))


def _cached_or_downloaded(backbone: Backbone, name: str) -> tuple[dict, str]:
    expected_path = expected_file(backbone)
    for path in (expected_path, *(os.path.join(os.path.dirname(expected_path), file)
                                  for file in backbone.other_files)):
        if os.path.isfile(path):
            return _read_state_dict(path, backbone, name), path
    advice = (f"download {backbone.url} to {expected_path}, or pass --pretrained_weights PATH, "
              f"or --not_pretrained to start from random weights")
    address = urlparse(backbone.url)
    host, port = address.hostname, address.port or (443 if address.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=3):
            pass
    except OSError as error:
        raise UserError(f"ImageNet weights for {name} are not at {expected_path} and "
                        f"{host} is unreachable ({error}); {advice}") from error
    try:
        state = torch.hub.load_state_dict_from_url(backbone.url, map_location="cpu", progress=True,
                                                   check_hash=True, weights_only=True)
    except Exception as error:  # network, hash and unpickling errors alike
        raise UserError(f"downloading {backbone.url} failed ({first_line(error, limit=None)}); {advice}") from error
    return state, backbone.url


def _read_state_dict(path: str, backbone: Backbone, name: str):
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load fails in many ways on files that are not tensors
        # Only the error's type: torch's own text advises weights_only=False, which is unsafe.
        raise UserError(f"{path} is not a state dict of a {backbone.library} {name} (torch.load: "
                        f"{type(error).__name__}); give {name} ImageNet weights or --not_pretrained") from error
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    return state


def _load_backbone_state(network: nn.Module, state, backbone: Backbone, name: str, source: str) -> None:
    not_this = f"not a state dict of a {backbone.library} {name}"
    if not isinstance(state, dict):
        raise UserError(f"{source} holds a {type(state).__name__}, {not_this}; "
                        f"give {name} ImageNet weights or --not_pretrained")
    ignored = CLASSIFIER_PREFIXES + backbone.unused_weights
    given = {key: value for key, value in state.items() if not key.startswith(ignored)}
    expected = {key: value.shape for key, value in network.state_dict().items() if not key.startswith(ignored)}
    problems = mismatches(given, expected)
    if problems:
        raise UserError(f"{source} is {not_this} ({problems}); give {name} ImageNet weights or --not_pretrained")
    # strict=False: the classifier is dropped, and num_batches_tracked may be absent.
    network.load_state_dict(given, strict=False)


def mismatches(given: dict, expected: dict) -> str:
    """The keys of a state dict `given` that do not fit the shapes `expected`, summarised ("" if none)."""
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

