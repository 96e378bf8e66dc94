"""Any timm model as a backbone: --arch timm:<model name>[.<pretrained tag>], e.g.
timm:vit_small_patch16_224.dino, timm:deit_small_patch16_224, timm:vit_small_patch14_dinov2,
timm:convnext_tiny.

timm builds the model without its classifier (num_classes=0). Its forward_features gives the
feature map (B, C, H, W), or (B, H, W, C) for the models timm marks NHWC, or the tokens (B, N, C)
of a vision transformer. The input it expects (size, mean, std, interpolation, crop fraction)
comes from the model's pretrained config. Its weights come from --pretrained_weights, the
Hugging Face cache or the torch hub cache, or a download when the network can be reached; never
a hang when it cannot.
"""
import functools
import math
import os
import socket
from urllib.parse import urlparse

import torch

from architectures.registry import Backbone
from errors import UserError, first_line

PREFIX = "timm:"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")


def is_timm(name: str) -> bool:
    return name.startswith(PREFIX)


def _timm():
    # imported when a timm backbone is asked for: importing timm takes about a second
    import timm

    return timm


@functools.lru_cache(maxsize=None)
def pretrained_config(name: str) -> dict:
    """The pretrained config of timm model `name` (without the timm: prefix), or a UserError."""
    timm = _timm()
    model_name = name.split(".", 1)[0]
    if not timm.is_model(model_name):
        close = timm.list_models(f"*{model_name.split('_')[0]}*")[:5]
        raise UserError(f"timm has no model {model_name!r} ("
                        + (f"close: {', '.join(close)}; " if close else "") + "timm.list_models() lists them)")
    if "." in name and name not in timm.list_pretrained(name):
        tags = timm.list_pretrained(f"{model_name}.*")[:6]
        raise UserError(f"timm has no pretrained tag {name!r}; choose one of {', '.join(tags) or model_name}")
    config = timm.models.get_pretrained_cfg(name)
    if config is None:
        raise UserError(f"timm has no pretrained config for {name!r}; name it with a tag from "
                        f"timm.list_pretrained('{model_name}.*')")
    return config.to_dict()


def backbone(name: str) -> Backbone:
    """The Backbone record of timm model `name` (without the prefix)."""
    return _backbone(name)


@functools.lru_cache(maxsize=None)
def _backbone(name: str) -> Backbone:
    config = pretrained_config(name)
    size = config["input_size"][-1]
    preprocessing = {"crop_size": size, "resize_size": math.floor(size / config.get("crop_pct", 0.875)),
                     "mean": tuple(config["mean"]), "std": tuple(config["std"]), "channel_order": "RGB",
                     "input_range": 1.0, "interpolation": config.get("interpolation", "bilinear")}
    return Backbone(build=functools.partial(create, name), features=features, classifier=None, library="timm",
                    url=config.get("hf_hub_id") or config.get("url") or "", preprocessing=preprocessing)


def resize_for(name: str, crop_size: int) -> int:
    """The resize before a centre crop of `crop_size`, with the model's crop fraction."""
    return math.floor(crop_size / pretrained_config(name).get("crop_pct", 0.875))


def fixed_input_size(name: str) -> bool:
    """Whether the model is built for one input size (a vision transformer's position embedding)."""
    return bool(pretrained_config(name).get("fixed_input_size"))


def features(network, images):
    """The feature map as (B, C, H, W), or the tokens (B, N, C)."""
    output = network.forward_features(images)
    if output.dim() == 4 and getattr(network, "output_fmt", "NCHW") == "NHWC":
        output = output.permute(0, 3, 1, 2)
    return output


def has_tokens(network) -> bool:
    """A vision transformer: its features are tokens, the first num_prefix_tokens of them class or
    register tokens."""
    return hasattr(network, "num_prefix_tokens")


def create(name: str, image_size: int | None = None, pretrained: bool = False,
           pretrained_weights: str | None = None) -> torch.nn.Module:
    """timm model `name` without its classifier. A model of a fixed input size (a vision
    transformer) is built for `image_size` (default: its pretrained size) and takes other sizes too,
    its position embedding resampled."""
    timm = _timm()
    options = {"num_classes": 0}
    if fixed_input_size(name):
        options["dynamic_img_size"] = True
        if image_size:
            options["img_size"] = image_size
    source = None
    if pretrained_weights is not None:
        if not os.path.isfile(pretrained_weights):
            raise UserError(f"--pretrained_weights {pretrained_weights}: no such file; give the path of the "
                            f"weights of timm:{name} (.safetensors, .pth or .bin)")
        source = pretrained_weights
    elif pretrained:
        source = cached_weights(name) or _downloadable(name)
    try:
        if source is None:
            return timm.create_model(name, pretrained=False, **options)
        overlay = {} if source == "download" else {"file": source}
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **options)
    except TypeError as error:
        if "img_size" in str(error) or "dynamic_img_size" in str(error):
            raise UserError(f"timm:{name} takes no input size; drop --image_size") from None
        raise
    except (RuntimeError, ValueError, OSError, KeyError) as error:
        where = "downloaded weights" if source == "download" else source
        raise UserError(f"the weights in {where} do not load into timm:{name} ({first_line(error, 300)}); give its own "
                        "weights, or --not_pretrained") from None


def _hub_cache() -> str:
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE


def expected_files(name: str) -> list[str]:
    """Where the weights of timm model `name` would be cached: the Hugging Face hub cache, else
    the torch hub cache (for models timm loads from a URL)."""
    config = pretrained_config(name)
    files = []
    if config.get("hf_hub_id"):
        repo = config["hf_hub_id"].split("@")[0]
        files.append(os.path.join(_hub_cache(), f"models--{repo.replace('/', '--')}", "snapshots", "<revision>",
                                  config.get("hf_hub_filename") or WEIGHT_FILES[0]))
    if config.get("url"):
        files.append(os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(config["url"])))
    return files


def cached_weights(name: str) -> str | None:
    """The cached weights file of timm model `name`, or None."""
    from huggingface_hub import try_to_load_from_cache

    config = pretrained_config(name)
    if config.get("hf_hub_id"):
        repo, _, revision = config["hf_hub_id"].partition("@")
        for filename in (config.get("hf_hub_filename"),) + WEIGHT_FILES:
            if filename:
                found = try_to_load_from_cache(repo, filename, cache_dir=_hub_cache(), revision=revision or None)
                if isinstance(found, str) and os.path.isfile(found):
                    return found
    if config.get("url"):
        path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(config["url"]))
        if os.path.isfile(path):
            return path
    return None


def _downloadable(name: str) -> str:
    """"download" when the weights' host answers; else the one-line error that names the files looked for."""
    config = pretrained_config(name)
    host = "huggingface.co" if config.get("hf_hub_id") else urlparse(config.get("url") or "").hostname
    looked = " or ".join(expected_files(name)) or "nothing: timm names no weights for it"
    if not host:
        reason = "timm knows no place to download them from"
    else:
        try:
            with socket.create_connection((host, 443), timeout=3):
                return "download"
        except OSError as error:
            reason = f"{host} is unreachable ({error})"
    raise UserError(f"weights for timm:{name} are not cached (looked for {looked}) and {reason}; copy them there, "
                    "or pass --pretrained_weights PATH, or --not_pretrained to start from random weights")
