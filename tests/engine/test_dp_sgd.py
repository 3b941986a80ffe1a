import pytest
import torch
import torch.nn.functional as F
from torch import nn

from federated_core.engine.dp_sgd import DpSgdStep, dp_sgd_schedule, per_sample_gradients


class _Regression(nn.Module):
    def __init__(self, one_hot: bool = False):
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.one_hot = one_hot

    def forward(self, x, y):
        out = self.lin(x)
        if self.one_hot:  # F.one_hot has no vmap batching rule: exercises the per-example fallback
            out = out + F.one_hot(y, 2).to(out.dtype)
        return ((out - y[:, None].to(out.dtype)) ** 2).sum(dim=1)


def _manual(model, x, y):
    grads = {n: [] for n, _ in model.named_parameters()}
    for i in range(x.shape[0]):
        model.zero_grad()
        model(x[i : i + 1], y[i : i + 1]).sum().backward()
        for n, p in model.named_parameters():
            grads[n].append(p.grad.clone())
    return {n: torch.stack(g) for n, g in grads.items()}


@pytest.mark.parametrize("one_hot", [False, True])
def test_per_sample_gradients_match_one_backward_per_example(one_hot):
    torch.manual_seed(0)
    model = _Regression(one_hot)
    x, y = torch.randn(5, 3), torch.tensor([0, 1, 1, 0, 1])
    grads, losses = per_sample_gradients(model, x, y)
    expected = _manual(model, x, y)
    for n in expected:
        assert torch.allclose(grads[n], expected[n], atol=1e-6)
    assert torch.allclose(losses, model(x, y).detach(), atol=1e-6)
    empty, none = per_sample_gradients(model, x[:0], y[:0])
    assert empty["lin.weight"].shape == (0, 2, 3) and none.numel() == 0


def test_dp_sgd_step_clips_each_example_and_adds_seeded_noise():
    torch.manual_seed(1)
    model = _Regression()
    x, y = torch.randn(4, 3) * 5, torch.tensor([0, 1, 1, 0])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = _manual(model, x, y)
    clip, sigma, lr, batch = 0.5, 0.8, 0.1, 4
    step = DpSgdStep(model, lr=lr, momentum=0.0, weight_decay=0.0, noise_multiplier=sigma, max_grad_norm=clip,
                     expected_batch_size=batch, generator=torch.Generator().manual_seed(7))
    step.step(x, y)
    norms = torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in grads.values()))
    factor = (clip / (norms + 1e-6)).clamp(max=1.0)
    noise_gen = torch.Generator().manual_seed(7)
    for name, p in model.named_parameters():  # opacus draws the noise parameter by parameter
        noise = torch.normal(0.0, sigma * clip, size=p.shape, generator=noise_gen)
        summed = torch.einsum("i,i...->...", factor, grads[name])
        expected = before[name] - lr * (summed + noise) / batch
        assert torch.allclose(p.detach(), expected, atol=1e-5)
    assert (norms > clip).any()  # the example really exercised clipping


def test_dp_sgd_schedule():
    assert dp_sgd_schedule(100, 10, 2) == (0.1, 20)
    assert dp_sgd_schedule(9, 4, 1) == (4 / 9, 2)
    assert dp_sgd_schedule(3, 32, 1) == (1.0, 1)
    with pytest.raises(ValueError, match="num_examples"):
        dp_sgd_schedule(0, 4, 1)


def test_calibrated_noise_matches_opacus():
    from opacus.accountants.utils import get_noise_multiplier

    from federated_core.engine.dp_sgd import calibrate_noise_multiplier, dp_sgd_event

    ours = calibrate_noise_multiplier(2.0, 1e-5, sampling_probability=0.05, steps=200)
    reference = get_noise_multiplier(target_epsilon=2.0, target_delta=1e-5, sample_rate=0.05, steps=200, accountant="rdp")
    assert ours == pytest.approx(reference, rel=0.03)
    from accountants import epsilon as eps

    assert eps(dp_sgd_event(ours, 0.05, 200), 1e-5, accountant="rdp") <= 2.0
    with pytest.raises(ValueError, match="target_epsilon"):
        calibrate_noise_multiplier(-1.0, 1e-5, 0.05, 10)
