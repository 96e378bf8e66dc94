"""training.TrainingStep's speed options: mixed precision, channels-last and torch.compile give the
step of the plain float32 network (within the precision's rounding)."""
import copy

import pytest
import torch

import architectures
import parameters
from training.run import build_criterion
from training.step import TrainingStep


def convnet():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, bias=False), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 8))


def vit():
    return architectures.select("timm:vit_tiny_patch16_224_normalize", 8, pretrained=False, image_size=16)


def step_result(amp=None, compile=False, channels_last=False, network=convnet, clip_grad=0.0):
    opt = parameters.parse(["--n_epochs", "2", "--PSD", "--OBDP", "--kd_lambda", "10"])
    torch.manual_seed(0)
    model = network()
    teacher = copy.deepcopy(model).eval().requires_grad_(False)
    with torch.no_grad():
        for parameter in teacher.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    criterion = build_criterion(opt, 4)
    step = TrainingStep(model, teacher, criterion, torch.optim.SGD(model.parameters(), lr=0.0), amp=amp,
                             compile=compile, channels_last=channels_last, clip_grad=clip_grad)
    images = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    loss = step(images, torch.arange(4).repeat_interleave(2), epoch=1)
    assert loss.dtype == torch.float32 and criterion.last_terms["kd"] > 0
    return loss.item(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("amp,channels_last", [("bf16", False), ("fp16", True), (None, True)])
def test_mixed_precision_and_channels_last_follow_the_float32_step(amp, channels_last):
    loss, gradients = step_result()
    loss_amp, gradients_amp = step_result(amp=amp, channels_last=channels_last)
    if amp is None:
        assert loss_amp == pytest.approx(loss, abs=1e-6)
        for got, expected in zip(gradients_amp, gradients):
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
        return
    # Rounding the activations to 8 (bf16) or 11 (fp16) bits moves the gradients, not their direction.
    assert loss_amp == pytest.approx(loss, rel={"fp16": 1e-3, "bf16": 1e-2}[amp])
    for got, expected in zip(gradients_amp, gradients):
        cosine = torch.nn.functional.cosine_similarity(got.flatten(), expected.flatten(), dim=0)
        assert got.dtype == torch.float32 and cosine > 0.98


@pytest.mark.slow
def test_compiled_step_equals_the_eager_step():
    loss, gradients = step_result()
    loss_compiled, gradients_compiled = step_result(compile=True)
    assert loss_compiled == pytest.approx(loss, abs=1e-6)
    for got, expected in zip(gradients_compiled, gradients):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("amp, compile", [("bf16", False), pytest.param(None, True, marks=pytest.mark.slow)])
def test_a_vision_transformer_step_in_bf16_or_compiled_follows_the_float32_step(amp, compile):
    """The ViT recipe's step (gradient clipping included) under --amp bf16 and --compile."""
    loss, gradients = step_result(network=vit, clip_grad=0.5)
    loss_other, gradients_other = step_result(amp=amp, compile=compile, network=vit, clip_grad=0.5)
    assert loss_other == pytest.approx(loss, rel=1e-2 if amp else 1e-5)
    for got, expected in zip(gradients_other, gradients):
        cosine = torch.nn.functional.cosine_similarity(got.flatten(), expected.flatten(), dim=0)
        assert got.dtype == torch.float32 and cosine > (0.95 if amp else 0.9999)
    assert torch.cat([g.flatten() for g in gradients_other]).norm() <= 0.5 + 1e-4
