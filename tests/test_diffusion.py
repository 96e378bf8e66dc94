import numpy as np
import pytest
import torch
from torch.nn import functional as F

import diffusion
from tests import reference


def teacher_batch(size=12, dim=8, seed=0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(size, dim, generator=generator, dtype=dtype), dim=1)


@pytest.mark.parametrize("w,diffusion_tau,kd_tau", [(0.99, 1.0, 1.0), (0.3, 1.0, 1.0), (0.5, 0.005, 1.0),
                                                    (0.5, 0.1, 0.5), (0.0, 1.0, 2.0)])
def test_soft_targets_match_dense_closed_form(w, diffusion_tau, kd_tau):
    teacher = teacher_batch()
    expected = reference.diffused_target(teacher, kd_tau, w, diffusion_tau)
    got = diffusion.soft_targets(teacher, kd_tau=kd_tau, w=w, diffusion_tau=diffusion_tau)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-9, atol=1e-12)
    got32 = diffusion.soft_targets(teacher.float(), kd_tau=kd_tau, w=w, diffusion_tau=diffusion_tau)
    np.testing.assert_allclose(got32.numpy(), expected, atol=1e-5)


def test_closed_form_is_the_limit_of_the_iteration():
    teacher, w = teacher_batch(), 0.9
    similarity = teacher @ teacher.T
    q = torch.softmax(similarity, dim=1)
    transition = torch.softmax(similarity.masked_fill(torch.eye(len(teacher), dtype=torch.bool), float("-inf")), 1)
    iterate = q
    for _ in range(400):
        iterate = w * transition @ iterate + (1 - w) * q
    torch.testing.assert_close(diffusion.soft_targets(teacher, w=w), iterate, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("case", ["identical", "two", "antipodal"])
def test_degenerate_batches_give_finite_distributions(case):
    teacher = {"identical": torch.ones(6, 4) / 2, "two": teacher_batch(2, dtype=torch.float32),
               "antipodal": torch.tensor([[1.0, 0], [-1.0, 0], [1.0, 0], [-1.0, 0]])}[case]
    for diffusion_tau in (1.0, 0.005):
        target = diffusion.soft_targets(teacher, w=0.99, diffusion_tau=diffusion_tau)
        assert torch.isfinite(target).all() and (target >= 0).all()
        torch.testing.assert_close(target.sum(dim=1), torch.ones(len(teacher)))


def test_bfloat16_input_gives_float32_target_without_gradient():
    teacher = teacher_batch(dtype=torch.float32).requires_grad_()
    full = diffusion.soft_targets(teacher, w=0.99)
    half = diffusion.soft_targets(teacher.bfloat16(), w=0.99)
    assert half.dtype == torch.float32 and not half.requires_grad and not full.requires_grad
    torch.testing.assert_close(half, full, atol=2e-2, rtol=0)
