"""Muon, spectral decay and QK-Clip on FSDP2 row shards: 2 gloo ranks (forked by the test, CPU,
1 thread each) train 3 steps, each on its half of the batch, and their full weights must equal
one process's on the whole batch within 1e-6 (fp32 Newton-Schulz). Covers both distributed
designs, uneven and empty shards, fused expert stacks (no collective), the plan's optimizers on a
sharded zoo GPT, and the refusal of placements other than Shard(0)."""
from __future__ import annotations

import functools
from unittest import mock

import pytest
import torch
from torch import nn

pytest.importorskip("torch.distributed.fsdp")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("needs torch.distributed with gloo", allow_module_level=True)

from mutransfer.bench._ranks import run_on_ranks  # noqa: E402
from mutransfer.optim import Muon, QKClip  # noqa: E402
from mutransfer.optim._shards import TRAFFIC, is_dtensor  # noqa: E402

WORLD, STEPS, ATOL = 2, 3, 1e-6
FP32 = torch.float32
DESIGNS = ["owner", "gather"]


# ---------------------------------------------------------------------- helpers (run in ranks)
def _shard(model: nn.Module, world: int) -> nn.Module:
    """FSDP2 as users wrap: each Linear, then the root (which takes the remaining parameters)."""
    if world == 1:
        return model
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (world,))
    for m in model.modules():
        if isinstance(m, nn.Linear):
            fully_shard(m, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def _full_params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: (p.full_tensor() if is_dtensor(p) else p).detach().clone()
            for n, p in model.named_parameters()}


def _mine(batch: torch.Tensor, rank: int, world: int, split: bool = False) -> torch.Tensor:
    """This rank's batch: the whole batch (FSDP2's average of equal gradients is then exact, so
    any difference from one process is the optimizer's), or with ``split`` its equal share
    (the ranks' average is the whole batch's gradient, up to rounding)."""
    return batch.chunk(world)[rank] if split else batch


def _on_rank(rank: int, world: int, scenario, kwargs: dict):
    return scenario(rank=rank, world=world, **kwargs)


def _both(scenario, **kwargs):
    """(one process's result, the ranks' results) of ``scenario``."""
    ranks = run_on_ranks(_on_rank, WORLD, scenario, kwargs)
    torch.manual_seed(0)
    return scenario(rank=0, world=1, **kwargs), ranks


# The key bias's exact gradient is zero (softmax ignores a shift shared by a query's logits), so
# its float gradient is rounding noise, which Adam turns into +-lr steps: a 1e-7 change anywhere
# (spectral decay's summed power iteration) flips them. It is left out where weights may differ.
NOISE = ("attn.k.bias",)


def _assert_same(one: dict, sharded: dict, skip: tuple[str, ...] = ()) -> float:
    assert one.keys() == sharded.keys()
    worst = max(float((one[n] - sharded[n]).abs().max()) for n in one if not n.endswith(skip))
    assert worst <= ATOL, f"sharded weights differ from one process by {worst:.3g}"
    return worst


# ---------------------------------------------------------------------- scenarios
class Uneven(nn.Module):
    """Linear layers whose row counts split unevenly over 2 ranks (33, 17) or leave one rank
    empty (1 row), plus an even one (4)."""

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(6, 33), nn.ReLU(), nn.Linear(33, 1), nn.Tanh(),
                                    nn.Linear(1, 17), nn.ReLU(), nn.Linear(17, 4))

    def forward(self, x):
        return self.layers(x)


def _uneven_scenario(rank, world, design="owner", weight_decay=0.0, decay="decoupled"):
    torch.manual_seed(0)
    model = _shard(Uneven(), world)
    named = dict(model.named_parameters())
    weights = [n for n in named if n.endswith("weight")]
    biases = [n for n in named if n.endswith("bias")]
    opt = Muon([{"params": [named[n] for n in weights], "names": weights},
                {"params": [named[n] for n in biases], "use_muon": False, "lr": 1e-2}],
               lr=0.05, ns_dtype=FP32, distributed=design, weight_decay=weight_decay, decay=decay)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(4, 6, generator=g), torch.randn(4, 4, generator=g)
    TRAFFIC.reset()
    for _ in range(STEPS):
        (model(_mine(x, rank, world)) - _mine(y, rank, world)).square().mean().backward()
        opt.step()
        opt.zero_grad()
    state = opt.state_dict()["state"]
    buffers = [s["momentum_buffer"] for s in state.values() if "momentum_buffer" in s]
    return {"params": _full_params(model), "calls": TRAFFIC.calls,
            "buffers": [(type(b).__name__, tuple(getattr(b, "placements", ())),
                         tuple(b.to_local().shape) if is_dtensor(b) else tuple(b.shape))
                        for b in buffers]}


def _gpt_plan(optimizer: str):
    from mutransfer.core import parametrize
    from mutransfer.models import zoo

    return parametrize(functools.partial(zoo.gpt, depth=1, seq_len=8), width=32, base_width=16,
                       optimizer=optimizer, seed=0)


def _gpt_scenario(rank, world, optimizer="muon", design="owner", decay="decoupled",
                  weight_decay=0.0, tau=None, split=False):
    torch.manual_seed(0)  # the model's init draws from the global RNG
    plan = _gpt_plan(optimizer)
    model = _shard(plan.model, world)
    extra = {"ns_dtype": FP32, "distributed": design} if optimizer == "muon" else {}
    lr = 0.02 if optimizer == "muon" else 3e-3
    opt = plan.optimizer(lr, model=model, weight_decay=weight_decay, decay=decay, **extra)
    clip = QKClip(model, tau) if tau is not None else None
    ids = torch.randint(0, 256, (4, 9), generator=torch.Generator().manual_seed(2))
    logits, local = [], []
    for _ in range(STEPS):
        batch = _mine(ids, rank, world, split)
        out = model(batch[:, :-1])
        nn.functional.cross_entropy(out.flatten(0, 1), batch[:, 1:].flatten()).backward()
        opt.step()
        opt.zero_grad()
        if clip is not None:
            local.append({k: v.clone() for k, v in clip._running.items()})  # this rank's own
            clip.clip_()
            logits.append({k: v.clone() for k, v in clip.max_logits.items()})
    state = opt.state_dict()["state"]
    return {"params": _full_params(model), "logits": logits, "local": local,
            "state_types": sorted({type(v).__name__ for s in state.values() for k, v in s.items()
                                   if k != "step" and k != "spectral_v"})}


class Experts(nn.Module):
    """A fused expert stack (E, out, in): expert e maps x to W[e] x."""

    def __init__(self, experts: int):
        super().__init__()
        self.w = nn.Parameter(torch.randn(experts, 5, 6) / 6 ** 0.5)

    def forward(self, x):
        return torch.einsum("bi,eoi->beo", x, self.w)


COLLECTIVES = ("all_reduce", "all_gather", "all_gather_single", "all_gather_into_tensor",
               "all_to_all_single", "broadcast", "gather", "scatter", "reduce_scatter_tensor")


def _experts_scenario(rank, world, experts=3, design="owner"):
    torch.manual_seed(0)
    model = Experts(experts)
    if world > 1:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        fully_shard(model, mesh=init_device_mesh("cpu", (world,)))
    opt = Muon([{"params": [model.w], "expert_dims": 1}], lr=0.05, ns_dtype=FP32,
               distributed=design)
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(3))
    calls = 0
    for _ in range(STEPS):
        model(_mine(x, rank, world)).square().mean().backward()
        TRAFFIC.reset()
        # any collective inside the step fails the rank (and an unmatched one would hang)
        with mock.patch.multiple("torch.distributed",
                                 **{n: mock.DEFAULT for n in COLLECTIVES
                                    if hasattr(torch.distributed, n)}) as patched:
            for fake in patched.values():
                fake.side_effect = AssertionError("Muon issued a collective for experts")
            opt.step()
        calls += TRAFFIC.calls
        opt.zero_grad()
    held = tuple(model.w.to_local().shape) if is_dtensor(model.w) else tuple(model.w.shape)
    return {"params": _full_params(model), "calls": calls, "held": held}


def _conv_scenario(rank, world, design="owner"):
    """A conv weight (msign of (out, in*k*k)), a 7-row and a 1-row matrix, placed by hand with
    distribute_tensor; plain momentum and spectral decay; fixed seeded gradients."""
    g = torch.Generator().manual_seed(0)
    fulls = [torch.randn(s, generator=g) for s in [(5, 3, 3, 3), (7, 4), (1, 9)]]
    grads = [[torch.randn(f.shape, generator=g) for f in fulls] for _ in range(STEPS)]
    place = lambda t: t  # noqa: E731
    if world > 1:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.tensor import Shard, distribute_tensor

        mesh = init_device_mesh("cpu", (world,))
        place = lambda t: distribute_tensor(t, mesh, [Shard(0)])  # noqa: E731
    params = [nn.Parameter(place(f)) for f in fulls]
    opt = Muon(params, lr=0.1, nesterov=False, weight_decay=0.3, decay="spectral",
               ns_dtype=FP32, distributed=design)
    for step in range(STEPS):
        for p, grad in zip(params, grads[step]):
            p.grad = place(grad)
        opt.step()
    return {"params": {str(i): (p.full_tensor() if is_dtensor(p) else p).detach()
                       for i, p in enumerate(params)}}


def _refusal_scenario(rank, world):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    from mutransfer.optim import spectral_decay_

    mesh = init_device_mesh("cpu", (world,))
    messages = []
    for placement in (Shard(1), Replicate()):
        w = nn.Parameter(distribute_tensor(torch.randn(8, 6), mesh, [placement]))
        for make in (lambda: Muon([{"params": [w], "names": ["blocks.0.mlp.fc.weight"]}]),
                     lambda: Muon([{"params": [w], "use_muon": False, "weight_decay": 0.1,
                                    "decay": "spectral"}]),
                     lambda: spectral_decay_([w], [{}], 0.1)):
            try:
                make()
                messages.append(None)
            except ValueError as err:
                messages.append(str(err))
    w = nn.Parameter(distribute_tensor(torch.randn(8, 6), mesh, [Shard(0)]))
    w.grad = distribute_tensor(torch.randn(8, 6), mesh, [Replicate()])
    try:
        Muon([w]).step()
        messages.append(None)
    except ValueError as err:
        messages.append(str(err))
    return messages


# ---------------------------------------------------------------------- tests
@pytest.mark.parametrize("design", DESIGNS)
def test_muon_on_uneven_and_empty_shards_equals_one_process(design):
    one, ranks = _both(_uneven_scenario, design=design)
    _assert_same(one["params"], ranks[0]["params"])
    _assert_same(ranks[0]["params"], ranks[1]["params"])
    assert one["calls"] == 0 and ranks[0]["calls"] == STEPS * (2 if design == "owner" else 1)
    # momentum buffers stay row shards: rank 1 holds 16 of 33 rows and none of the 1-row matrix
    assert [b[0] for b in ranks[1]["buffers"]] == ["DTensor"] * 4
    assert [b[2][0] for b in ranks[1]["buffers"]] == [16, 0, 8, 2]
    assert [b[2][0] for b in ranks[0]["buffers"]] == [17, 1, 9, 2]


@pytest.mark.parametrize("design", DESIGNS)
def test_plan_muon_on_a_sharded_gpt_equals_one_process(design):
    one, ranks = _both(_gpt_scenario, design=design)
    _assert_same(one["params"], ranks[0]["params"])
    assert ranks[0]["state_types"] == ["DTensor"]  # momentum and AdamW moments, all sharded


def test_spectral_decay_in_muon_on_shards_equals_one_process():
    one, ranks = _both(_uneven_scenario, weight_decay=0.5, decay="spectral")
    _assert_same(one["params"], ranks[0]["params"])
    _assert_same(ranks[0]["params"], ranks[1]["params"])
    plain, _ = _both(_uneven_scenario)
    assert max(float((one["params"][n] - plain["params"][n]).abs().max())
               for n in plain["params"]) > 1e-3  # the decay did act


@pytest.mark.parametrize("optimizer", ["muon", "adamw"])
def test_plan_spectral_decay_on_a_sharded_gpt_equals_one_process(optimizer):
    """Muon (its own decay, and its AdamW groups' matrices) and torch AdamW + SpectralDecayHook."""
    one, ranks = _both(_gpt_scenario, optimizer=optimizer, decay="spectral", weight_decay=0.5)
    _assert_same(one["params"], ranks[0]["params"], skip=NOISE)


@pytest.mark.parametrize("optimizer, split", [("sgd", True), ("muon", False)])
def test_qk_clip_on_a_sharded_gpt_equals_one_process(optimizer, split):
    """Split batches: each rank records the max logits of its half, so the ranks must take the
    max over both to clip like one process (SGD, whose step does not amplify the rounding of
    averaged gradients); Muon on the same batch: exact."""
    one, ranks = _both(_gpt_scenario, optimizer=optimizer, tau=0.5, split=split)
    _assert_same(one["params"], ranks[0]["params"])
    for step in range(STEPS):  # the ranks' max logits are the whole batch's, on both ranks
        for name, s in one["logits"][step].items():
            torch.testing.assert_close(ranks[0]["logits"][step][name], s, atol=1e-6, rtol=0)
            assert torch.equal(ranks[0]["logits"][step][name], ranks[1]["logits"][step][name])
            if split:  # the ranks' own records differed: the all-reduce mattered
                assert not torch.equal(ranks[0]["local"][step][name], ranks[1]["local"][step][name])
    assert all(bool((s > 0.5).any()) for s in one["logits"][0].values())  # it did clip


@pytest.mark.parametrize("design", DESIGNS)
def test_conv_weights_and_plain_momentum_on_shards_equal_one_process(design):
    one, ranks = _both(_conv_scenario, design=design)
    _assert_same(one["params"], ranks[0]["params"])


@pytest.mark.parametrize("experts", [3, 1])  # 3: uneven (2 and 1 experts); 1: rank 1 holds none
def test_expert_stacks_are_orthogonalized_locally_without_collectives(experts):
    one, ranks = _both(_experts_scenario, experts=experts)
    _assert_same(one["params"], ranks[0]["params"])
    assert [r["calls"] for r in ranks] == [0, 0]
    assert [r["held"][0] for r in ranks] == ([2, 1] if experts == 3 else [1, 0])


def test_placements_other_than_row_shards_are_refused():
    for messages in run_on_ranks(_on_rank, WORLD, _refusal_scenario, {}):
        assert None not in messages, messages
        for message in messages[:-1]:
            assert "Shard(0) on a 1-D mesh" in message and "fully_shard" in message
        assert "'blocks.0.mlp.fc.weight'" in messages[0] and "Shard(dim=1)" in messages[0]
        assert "'use_muon': False" in messages[0] and "decay='decoupled'" in messages[1]
        assert "Replicate()" in messages[3]
        assert "has a gradient placed (Replicate(),)" in messages[-1]


def test_bad_distributed_design_names_the_choices():
    with pytest.raises(ValueError, match=r"distributed must be one of 'owner', 'gather'.*'ring'"):
        Muon([nn.Parameter(torch.randn(4, 4))], distributed="ring")


def test_muon_sharded_benchmark_prints_a_table(capsys):
    from mutransfer import bench

    assert bench.main(["muon-sharded", "--device", "cpu", "--ranks", "2", "--width", "32",
                       "--depth", "1", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    for word in ("one process", "owner", "gather", "MB_sent_per_step", "x_gather"):
        assert word in out


def test_muon_sharded_benchmark_refuses_one_rank():
    from mutransfer import bench

    with pytest.raises(SystemExit, match="--ranks must list world sizes >= 2"):
        bench.main(["muon-sharded", "--device", "cpu", "--ranks", "1"])
