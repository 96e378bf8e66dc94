"""Image preprocessing: the training augmentations and the evaluation resize + centre crop."""
from dataclasses import dataclass

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
AUGMENTATIONS = ("base", "adv", "big", "red")
CHANNEL_ORDERS = ("RGB", "BGR")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")  # torchvision's InterpolationMode values


def _transforms():
    # imported when a transform is built: importing torchvision imports torchvision.ops and
    # torch._dynamo, seconds that every command's --help would wait
    from torchvision import transforms

    return transforms


@dataclass(frozen=True)
class ToInputRange:
    """[0, 1] tensor pixels to [0, input_range] (255 for networks ported from Caffe)."""
    input_range: float

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return image * self.input_range


class ToBGR:
    """RGB tensor channels in BGR order."""

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return image.flip(0)


@dataclass(frozen=True)
class Preprocessing:
    """Sizes and normalisation for all splits of a dataset."""
    crop_size: int = 224
    resize_size: int = 256
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    flip: bool = True  # off where a mirrored image belongs to another class (digits)
    crop_scale: tuple = (0.08, 1.0)
    # The input a backbone's weights were trained on: BN-Inception, ported from Caffe, expects BGR
    # pixels in [0, 255], with mean and std given in that order and scale.
    channel_order: str = "RGB"
    input_range: float = 1.0
    # the resampling of resizes and crops: bilinear (torchvision's), bicubic for timm's ViTs and ConvNeXts
    interpolation: str = "bilinear"

    def __post_init__(self):
        if self.channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"channel_order must be one of {', '.join(CHANNEL_ORDERS)}, not {self.channel_order!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, not {self.interpolation!r}")

    @property
    def _mode(self):
        return _transforms().InterpolationMode(self.interpolation)

    def training(self, augmentation: str):
        T = _transforms()
        crop = self._crop(augmentation)
        if augmentation == "red":
            steps = [T.Resize(self._resize(crop), interpolation=self._mode), T.RandomCrop(crop)]
        else:
            steps = [T.RandomResizedCrop(crop, scale=self.crop_scale, interpolation=self._mode)]
        if self.flip:
            steps.append(T.RandomHorizontalFlip())
        if augmentation == "adv":
            steps += [T.ColorJitter(0.2, 0.2, 0.2, 0.2), T.RandomGrayscale(0.2)]
        return self._to_normalised_tensor(steps)

    def evaluation(self, augmentation: str):
        T = _transforms()
        crop = self._crop(augmentation)
        return self._to_normalised_tensor([T.Resize(self._resize(crop), interpolation=self._mode), T.CenterCrop(crop)])

    def _crop(self, augmentation: str) -> int:
        # "big" trains and evaluates on 256-pixel crops where the others use 224, as the reference does
        return round(self.crop_size * 256 / 224) if augmentation == "big" else self.crop_size

    def _resize(self, crop: int) -> int:
        # a crop larger than the resized image would be padded with black borders
        return max(self.resize_size, crop)

    def _to_normalised_tensor(self, steps: list):
        T = _transforms()
        steps = [*steps, T.ToTensor()]
        if self.input_range != 1:
            steps.append(ToInputRange(self.input_range))
        if self.channel_order == "BGR":
            steps.append(ToBGR())
        return T.Compose([*steps, T.Normalize(self.mean, self.std)])
