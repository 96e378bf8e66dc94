"""The optimisation recipe of the ViT papers (--optim adamw, --scheduler cosine, --warmup_epochs,
--layer_decay, --clip_grad): every parameter's learning rate and weight decay, step by step,
against a plain re-computation of the rules."""
import math
import re

import pytest
import torch

import architectures
import parameters
from errors import SettingError
from training import optimisation
from training.optimisation import OptimisationSettings
from training.run import build_criterion
from training.step import TrainingStep


def planned_factor(step, warmup, total):
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


def vit_depth(name, blocks=12):
    """The depth of a ViT parameter: 0 for the patch and position embeddings and the class token,
    i + 1 for block i, and the final norm with the last block."""
    match = re.match(r"blocks\.(\d+)\.", name)
    if match:
        return int(match.group(1)) + 1
    return blocks if name.startswith("norm.") else 0


def test_adamw_cosine_warmup_and_layer_decay_give_each_parameter_its_planned_rate():
    lr, head_lr, decay, layer_decay, warmup, total = 3e-5, 1e-3, 0.05, 0.7, 3, 10
    torch.manual_seed(0)
    model = architectures.select("timm:vit_tiny_patch16_224_normalize", 8, pretrained=False, image_size=32)
    opt = parameters.parse(["--loss", "proxyanchor", "--embed_dim", "8"])
    criterion = build_criterion(opt, 4)
    settings = OptimisationSettings(optim="adamw", lr=lr, fc_lr=head_lr, decay=decay, layer_decay=layer_decay,
                                    scheduler="cosine", warmup_epochs=warmup)
    optimizer = optimisation.build_optimizer(model, criterion, settings)
    schedule = optimisation.schedule(optimizer, settings, steps_per_epoch=1, n_epochs=total)
    assert isinstance(optimizer, torch.optim.AdamW)
    group_of = {id(parameter): group for group in optimizer.param_groups for parameter in group["params"]}
    proxies = [parameter for parameter in criterion.parameters()]
    proxy_lr = criterion.optim_groups()[0]["lr"]

    plan = {}  # id(parameter): (base learning rate, weight decay)
    for name, parameter in model.named_backbone_parameters():
        undecayed = parameter.ndim <= 1 or name in ("cls_token", "pos_embed")
        plan[id(parameter)] = (lr * layer_decay ** (13 - vit_depth(name)), 0.0 if undecayed else decay)
    head = dict(model.model.last_linear.named_parameters())
    plan[id(head["weight"])], plan[id(head["bias"])] = (head_lr, decay), (head_lr, 0.0)
    for proxy in proxies:
        plan[id(proxy)] = (proxy_lr, 0.0)
    assert len(plan) == len(list(model.parameters())) + len(proxies) == len(group_of)

    for step in range(total):
        factor = planned_factor(step, warmup, total)
        for parameter_id, (base, weight_decay) in plan.items():
            group = group_of[parameter_id]
            assert group["lr"] == pytest.approx(base * factor, rel=1e-12, abs=0), step
            assert group["weight_decay"] == weight_decay
        optimizer.step()
        schedule.after_step()
    assert schedule.factor() == pytest.approx(0.0, abs=1e-12)


def test_layer_decay_of_a_resnet_goes_by_its_blocks_and_a_backbone_without_blocks_is_refused():
    model = architectures.select("resnet18", 8, pretrained=False)
    criterion = build_criterion(parameters.parse([]), 4)
    optimizer = optimisation.build_optimizer(model, criterion, OptimisationSettings(lr=1.0, decay=0.0, layer_decay=0.5))
    lr_of = {id(parameter): group["lr"] for group in optimizer.param_groups for parameter in group["params"]}
    named = dict(model.model.named_parameters())
    # the stem at depth 0, then layer1.0 ... layer4.1 at 1 ... 8: the head sits at 9
    assert lr_of[id(named["conv1.weight"])] == 0.5 ** 9
    assert lr_of[id(named["layer1.0.conv1.weight"])] == 0.5 ** 8
    assert lr_of[id(named["layer4.1.bn2.bias"])] == 0.5
    assert lr_of[id(named["last_linear.weight"])] == 1.0
    with pytest.raises(SettingError, match="arch googlenet has no layer groups") as refused:
        optimisation.build_optimizer(architectures.select("googlenet", 8, pretrained=False), criterion,
                                     OptimisationSettings(lr=1.0, decay=0.0, layer_decay=0.5))
    assert "--arch googlenet" in parameters.flags_named(refused.value)


def test_the_step_schedule_is_the_released_multistep_one():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([parameter], lr=1.0)
    schedule = optimisation.schedule(optimizer, OptimisationSettings(tau=(2, 3), gamma=0.3), 5, 4)
    rates = []
    for _ in range(4):
        for _ in range(5):
            schedule.after_step()  # a step schedule moves after epochs only
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.after_epoch()
    assert rates == pytest.approx([1.0, 1.0, 0.3, 0.09])


def test_a_resumed_cosine_schedule_goes_on_where_it_stopped():
    def fresh():
        parameter = torch.nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.AdamW([parameter], lr=1.0)
        settings = OptimisationSettings(scheduler="cosine", warmup_epochs=4)
        return optimizer, optimisation.schedule(optimizer, settings, steps_per_epoch=1, n_epochs=20)

    optimizer, schedule = fresh()
    for _ in range(7):
        optimizer.step()
        schedule.after_step()
    state = torch.load(_saved({"optimizer": optimizer.state_dict(), "scheduler": schedule.state_dict()}),
                       weights_only=True)  # as checkpoint_last.pth keeps them
    resumed_optimizer, resumed = fresh()
    resumed_optimizer.load_state_dict(state["optimizer"])
    resumed.load_state_dict(state["scheduler"])
    assert resumed_optimizer.param_groups[0]["lr"] == pytest.approx(planned_factor(7, 4, 20))
    resumed.after_step()
    assert resumed_optimizer.param_groups[0]["lr"] == pytest.approx(planned_factor(8, 4, 20))


def _saved(state):
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


def test_clip_grad_bounds_the_gradient_norm_of_the_step():
    torch.manual_seed(0)
    model = architectures.select("timm:vit_tiny_patch16_224_normalize", 8, pretrained=False, image_size=32)
    criterion = build_criterion(parameters.parse(["--embed_dim", "8"]), 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    step = TrainingStep(model, None, criterion, optimizer, clip_grad=1e-3)
    images, labels = torch.randn(8, 3, 32, 32), torch.arange(4).repeat_interleave(2)
    step(images, labels, epoch=0)
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]))
    assert norm == pytest.approx(1e-3, rel=1e-4)
