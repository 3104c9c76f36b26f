"""mmkernels beyond one process: FSDP2, tensor parallelism and DTensor on 2 gloo ranks (CPU).

Each scenario below is one function run twice: on the 2 ranks (``mesh`` given: the model or the tensors
are sharded) and in this pytest process (``mesh=None``: the same computation on one process). Both
return full tensors (DTensors gathered), which must agree: float64 throughout, so the only differences
are the rounding of differently-blocked sums (1e-12 is ~4000 ulps of the values here, far below any
real error), plus one float32 run of the tensor-parallel layer with float32's tolerance.

The ranks are spawned once for the whole module (starting them costs most of the time) and run every
scenario, each caught on its own, so that one failure shows as its own test. A rendezvous file in the
test's temporary directory replaces a TCP port (no port to pick or collide on), and a deadline turns
a hang into a failure.
"""
import os
import time
import traceback
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import mmkernels
from mmkernels.nn import ConcatLinear, CrossModalAttention

WORLD = 2
DEADLINE_S = 120
F64 = torch.float64


def _seeded(seed):
    return torch.Generator().manual_seed(seed)


def _full(t):
    """The global value of a (possibly distributed) tensor, detached."""
    from torch.distributed.tensor import DTensor

    return (t.full_tensor() if isinstance(t, DTensor) else t).detach().clone()


# ---------------------------------------------------------------------------------------------------
# Scenarios: fn(mesh) -> {name: tensor or str}. mesh None = the single-process run.

def _tp_plan():
    """The Megatron attention layout (README, "Distributed")."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

    return {"q_proj": ColwiseParallel(), "k_proj": ColwiseParallel(), "v_proj": ColwiseParallel(),
            "out_proj": RowwiseParallel()}


def tensor_parallel_attention(mesh, dtype=F64):
    """CrossModalAttention (grouped-query, kdim != embed_dim) under the Megatron attention plan: forward,
    input gradients and parameter gradients."""
    torch.manual_seed(0)
    attn = CrossModalAttention(32, 4, num_kv_heads=2, kdim=12, dtype=dtype)
    seen = {}
    if mesh is not None:
        from torch.distributed.tensor.parallel import parallelize_module

        parallelize_module(attn, mesh, _tp_plan())
        attn.q_proj.register_forward_hook(lambda m, i, out: seen.update(q_proj_output=out))
    g = _seeded(1)
    x = torch.randn(3, 5, 32, generator=g, dtype=dtype, requires_grad=True)
    kv = torch.randn(3, 7, 12, generator=g, dtype=dtype, requires_grad=True)
    out = attn(x, kv, kv_lengths=torch.tensor([7, 2, 5]), key_padding_mask=torch.rand(3, 7, generator=g) < 0.3)
    out.backward(torch.randn(out.shape, generator=g, dtype=dtype))
    result = {"out": _full(out), "x.grad": _full(x.grad), "kv.grad": _full(kv.grad)}
    result.update({f"{n}.grad": _full(p.grad) for n, p in attn.named_parameters()})
    if mesh is not None:  # ColwiseParallel hands the layer plain local tensors: a slice of the heads
        q = seen["q_proj_output"]
        result["q_proj output"] = f"{type(q).__name__} {tuple(q.shape)}"
    return result


def tensor_parallel_attention_f32(mesh):
    return tensor_parallel_attention(mesh, torch.float32)


def colwise_concat_linear(module, mesh):
    """ConcatLinear column-parallel (README, "Distributed"): ColwiseParallel takes nn.Linear only, so the
    same layout through distribute_module: weight and bias Shard(0), every input Replicate, y Shard(-1)."""
    from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_module, distribute_tensor

    def shard_out_features(name, mod, mesh):
        for n, p in list(mod.named_parameters(recurse=False)):
            mod.register_parameter(n, torch.nn.Parameter(distribute_tensor(p, mesh, [Shard(0)])))

    def replicate_inputs(mod, inputs, mesh):
        return tuple(DTensor.from_local(x, mesh, [Replicate()]) for x in inputs)

    distribute_module(module, mesh, shard_out_features, input_fn=replicate_inputs)


def tensor_parallel_concat_linear(mesh):
    torch.manual_seed(0)
    cl = ConcatLinear([6, 3], 10, activation="gelu", dtype=F64)
    if mesh is not None:
        colwise_concat_linear(cl, mesh)
    g = _seeded(2)
    xs = [torch.randn(4, 5, d, generator=g, dtype=F64, requires_grad=True) for d in (6, 3)]
    y = cl(*xs)
    grad = torch.randn(4, 5, 10, generator=g, dtype=F64)
    if mesh is not None:
        from torch.distributed.tensor import distribute_tensor

        assert str(y.placements) == "(Shard(dim=2),)", y.placements
        grad = distribute_tensor(grad, mesh, y.placements)
    y.backward(grad)
    return {"y": _full(y), "x0.grad": _full(xs[0].grad), "x1.grad": _full(xs[1].grad),
            **{f"{n}.grad": _full(p.grad) for n, p in cl.named_parameters()}}


def tensor_parallel_indivisible_kv_heads(mesh):
    """num_kv_heads=1 cannot be split over 2 ranks: a clear error, not a wrong result."""
    torch.manual_seed(0)
    attn = CrossModalAttention(32, 4, num_kv_heads=1, dtype=F64)
    if mesh is not None:
        from torch.distributed.tensor.parallel import parallelize_module

        parallelize_module(attn, mesh, _tp_plan())
    try:
        attn(torch.randn(2, 3, 32, dtype=F64), torch.randn(2, 4, 32, dtype=F64))
    except RuntimeError as e:
        return {"error": str(e)}
    return {"error": ""}


def fsdp2_training(mesh):
    """Three SGD steps of a fusion model (CrossModalAttention + ConcatLinear inside) with FSDP2 on the
    ranks (each rank half the batch, per-block and root fully_shard) vs the whole batch on one process."""
    from mmkernels.models import AttentionFusion

    torch.manual_seed(0)
    model = AttentionFusion({"a": ("sequence", 6), "b": ("sequence", 3)}, 3, d_model=16, dropout=0.0).to(F64)
    g = _seeded(3)
    inputs = {"a": torch.randn(8, 11, 6, generator=g, dtype=F64), "b": torch.randn(8, 5, 3, generator=g, dtype=F64)}
    lengths = {"a": torch.tensor([11, 3, 7, 1, 11, 5, 2, 9]), "b": torch.tensor([5, 2, 4, 5, 1, 3, 5, 4])}
    # one sample of each rank's half misses each modality: the learned "missing" embeddings train too
    present = {"a": torch.tensor([1, 1, 0, 1, 1, 1, 1, 0]).bool(), "b": torch.tensor([0, 1, 1, 1, 1, 0, 1, 1]).bool()}
    labels = torch.randint(0, 3, (8,), generator=g)
    if mesh is not None:
        from torch.distributed.fsdp import fully_shard

        for block in model.fusion.blocks.values():
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        rows = slice(mesh.get_local_rank() * 4, mesh.get_local_rank() * 4 + 4)
        inputs, lengths, present = [{k: v[rows] for k, v in d.items()} for d in (inputs, lengths, present)]
        labels = labels[rows]
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    result, losses = {}, []
    for step in range(3):
        loss = torch.nn.functional.cross_entropy(model(inputs, lengths, present), labels)
        loss.backward()  # FSDP2 averages the gradients over the ranks: the whole batch's mean loss
        if step == 0:
            result.update({f"{n}.grad": _full(p.grad) for n, p in model.named_parameters()})
        opt.step()
        opt.zero_grad()
        if mesh is not None:
            dist.all_reduce(loss := loss.detach().clone(), op=dist.ReduceOp.AVG)
        losses.append(loss.detach())
    result["losses"] = torch.stack(losses)
    result.update({n: _full(p) for n, p in model.named_parameters()})
    return result


# DTensor: the ops on distributed inputs. (name, placements of q, k, v, of the masks (None: plain tensors,
# taken as replicated), is_causal, H, Hkv, expected placement of the output: the rule that runs
# without redistributing, or None where the layout must be redistributed first.)
def _attention_layouts():
    from torch.distributed.tensor import Replicate, Shard

    R = Replicate()
    return [
        ("heads", (Shard(2),) * 3, R, False, 4, 2, Shard(2)),
        ("heads causal", (Shard(2),) * 3, R, True, 4, 2, Shard(2)),
        ("heads, plain masks", (Shard(2),) * 3, None, False, 4, 2, Shard(2)),
        ("batch, plain masks", (Shard(0),) * 3, None, False, 4, 2, Shard(0)),
        ("batch (uneven)", (Shard(0),) * 3, Shard(0), True, 4, 2, Shard(0)),
        ("queries", (Shard(1), R, R), R, False, 4, 2, Shard(1)),
        ("replicated", (R,) * 3, R, False, 4, 1, R),
        # Hkv = 3 heads cannot be split evenly: grouped-query groups would break, so it is redistributed
        ("heads, Hkv not divisible", (Shard(2),) * 3, R, False, 6, 3, None),
        # causal: a query shard's diagonal depends on the global Lq, so it is redistributed
        ("queries causal", (Shard(1), R, R), R, True, 4, 2, None),
    ]


def dtensor_cross_attention(mesh):
    from torch.distributed.tensor import distribute_tensor

    result = {}
    for name, qkv_placements, mask_placement, causal, H, Hkv, _ in _attention_layouts():
        g = _seeded(5)
        B = 5  # odd: uneven batch shards
        q = torch.randn(B, 6, H, 8, generator=g, dtype=F64)
        k, v = torch.randn(B, 9, Hkv, 8, generator=g, dtype=F64), torch.randn(B, 9, Hkv, 5, generator=g, dtype=F64)
        kl, m = torch.tensor([9, 4, 0, 7, 9]), torch.rand(B, 9, generator=g) < 0.25
        grad = torch.randn(B, 6, H, 5, generator=g, dtype=F64)
        if mesh is not None:
            q, k, v = [distribute_tensor(t, mesh, [p]) for t, p in zip((q, k, v), qkv_placements)]
            if mask_placement is not None:
                kl, m = [distribute_tensor(t, mesh, [mask_placement]) for t in (kl, m)]
        q, k, v = [t.requires_grad_() for t in (q, k, v)]
        out = mmkernels.cross_attention(q, k, v, kv_lengths=kl, key_padding_mask=m, is_causal=causal)
        if mesh is not None:
            result[f"{name}: placement"] = str(out.placements[0])
            grad = distribute_tensor(grad, mesh, out.placements)
        out.backward(grad)
        result.update({f"{name}: {n}": _full(t) for n, t in (("out", out), ("dq", q.grad), ("dk", k.grad),
                                                                ("dv", v.grad))})
    return result


# (name, placements of the inputs, of weight and bias, activation, bias, which of (inputs..., weight, bias)
# need grad, expected output placement)
def _concat_linear_layouts():
    from torch.distributed.tensor import Replicate, Shard

    R, every = Replicate(), (True,) * 4
    return [
        # three times the same layout and tensors with other gradients asked for: the backward op's empty
        # outputs differ, so DTensor must not reuse the sharding decided (and cached) for an earlier one
        ("output features, bias frozen", R, Shard(0), "gelu", True, (True, True, True, False), Shard(2)),
        ("output features, input 0 and weight frozen", R, Shard(0), "gelu", True, (False, True, False, True), Shard(2)),
        ("output features", R, Shard(0), "gelu", True, every, Shard(2)),
        ("output features, no activation, no bias", R, Shard(0), "none", False, every, Shard(2)),
        ("leading dim 0", Shard(0), R, "silu", True, every, Shard(0)),
        ("leading dim 1, frozen weight and input 0", Shard(1), R, "relu", True, (False, True, False, True), Shard(1)),
        ("replicated", R, R, "gelu_tanh", True, every, R),
        # the inputs sharded on their last (concatenated) dim: no rule, redistributed
        ("inputs sharded on features", Shard(2), R, "gelu", True, every, None),
    ]


def dtensor_concat_linear(mesh):
    from torch.distributed.tensor import distribute_tensor

    result = {}
    for name, x_placement, w_placement, act, has_bias, needs, _ in _concat_linear_layouts():
        g = _seeded(7)
        xs = [torch.randn(5, 4, 6, generator=g, dtype=F64), torch.randn(5, 4, 4, generator=g, dtype=F64)]
        w, b = torch.randn(7, 10, generator=g, dtype=F64), torch.randn(7, generator=g, dtype=F64)
        grad = torch.randn(5, 4, 7, generator=g, dtype=F64)
        if mesh is not None:
            xs = [distribute_tensor(x, mesh, [x_placement]) for x in xs]
            w, b = [distribute_tensor(t, mesh, [w_placement]) for t in (w, b)]
        x0, x1, w, b = [t.requires_grad_(n) for t, n in zip((*xs, w, b), needs)]
        y = mmkernels.concat_linear([x0, x1], w, b if has_bias else None, act)
        if mesh is not None:
            result[f"{name}: placement"] = str(y.placements[0])
            grad = distribute_tensor(grad, mesh, y.placements)
        y.backward(grad)
        result[f"{name}: y"] = _full(y)
        result.update({f"{name}: d{n}": _full(t.grad) for n, t in zip(("x0", "x1", "w", "b"), (x0, x1, w, b))
                       if t.grad is not None})
    return result


SCENARIOS = {f.__name__: f for f in (
    tensor_parallel_attention, tensor_parallel_attention_f32, tensor_parallel_concat_linear,
    tensor_parallel_indivisible_kv_heads, fsdp2_training, dtensor_cross_attention, dtensor_concat_linear)}


# ---------------------------------------------------------------------------------------------------
# The 2-rank run


def _rank_main(rank, init_file, out_dir):
    from torch.distributed.device_mesh import init_device_mesh

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD,
                            timeout=timedelta(seconds=30))
    mesh = init_device_mesh("cpu", (WORLD,))
    results = {}
    for name, scenario in SCENARIOS.items():
        try:
            results[name] = scenario(mesh)
        except Exception:
            results[name] = traceback.format_exc()
        dist.barrier()  # the ranks stay in step: a scenario failing on one rank cannot hang the next
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """Each rank's results: {scenario: {name: tensor or str} or a traceback}."""
    d = tmp_path_factory.mktemp("distributed")
    ctx = mp.start_processes(_rank_main, args=(str(d / "rendezvous"), str(d)), nprocs=WORLD, join=False,
                             start_method="spawn")
    deadline = time.monotonic() + DEADLINE_S
    try:
        while not ctx.join(timeout=1.0):
            if time.monotonic() > deadline:
                pytest.fail(f"the {WORLD} ranks did not finish within {DEADLINE_S} s (a hang)")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
    return [torch.load(d / f"rank{r}.pt") for r in range(WORLD)]


def _per_rank(ranks, scenario):
    results = [r[scenario] for r in ranks]
    for rank, res in enumerate(results):
        assert isinstance(res, dict), f"{scenario} failed on rank {rank}:\n{res}"
    return results


def _assert_matches_one_process(ranks, scenario, rtol=1e-12, atol=1e-12):
    single = SCENARIOS[scenario](None)
    for rank, res in enumerate(_per_rank(ranks, scenario)):
        tensors = {k: v for k, v in res.items() if isinstance(v, torch.Tensor)}
        assert set(tensors) == set(single), f"rank {rank}: {sorted(set(tensors) ^ set(single))}"
        for key, expected in single.items():
            assert expected.abs().max() > 0, f"{key}: a zero reference proves nothing"
            torch.testing.assert_close(tensors[key], expected, rtol=rtol, atol=atol,
                                       msg=lambda m: f"rank {rank}, {key}: {m}")
    return _per_rank(ranks, scenario)


def test_tensor_parallel_cross_modal_attention_matches_one_process(ranks):
    for rank, res in enumerate(_assert_matches_one_process(ranks, "tensor_parallel_attention")):
        # each rank's q_proj output is a plain tensor holding its half of the 4 heads (2 x 8 features)
        assert res["q_proj output"] == "Tensor (3, 5, 16)", f"rank {rank}: {res['q_proj output']}"


def test_tensor_parallel_float32_within_float32_rounding(ranks):
    # float32: sums split across ranks round differently; a few ulps of values of order 1 (eps 1.2e-7).
    _assert_matches_one_process(ranks, "tensor_parallel_attention_f32", rtol=1e-5, atol=1e-6)


def test_tensor_parallel_concat_linear_matches_one_process(ranks):
    _assert_matches_one_process(ranks, "tensor_parallel_concat_linear")


def test_tensor_parallel_refuses_kv_heads_it_cannot_split(ranks):
    assert SCENARIOS["tensor_parallel_indivisible_kv_heads"](None) == {"error": ""}  # fine on one process
    for res in _per_rank(ranks, "tensor_parallel_indivisible_kv_heads"):
        assert "k_proj gives 4 features per position" in res["error"]
        assert "num_kv_heads=1 must both be divisible by the number of shards" in res["error"]


def test_fsdp2_training_matches_one_process(ranks):
    _assert_matches_one_process(ranks, "fsdp2_training")


def test_dtensor_cross_attention_matches_one_process(ranks):
    results = _assert_matches_one_process(ranks, "dtensor_cross_attention")
    for name, *_, expected in _attention_layouts():
        for res in results:  # where a rule fits the layout, it ran in place (no redistribution first)
            if expected is not None:
                assert res[f"{name}: placement"] == str(expected), (name, res[f"{name}: placement"])


def test_dtensor_concat_linear_matches_one_process(ranks):
    results = _assert_matches_one_process(ranks, "dtensor_concat_linear")
    for name, *_, expected in _concat_linear_layouts():
        for res in results:  # as for attention
            if expected is not None:
                assert res[f"{name}: placement"] == str(expected), (name, res[f"{name}: placement"])


def test_every_op_gets_sharding_rules_when_dtensor_loads():
    # In a fresh process: importing mmkernels leaves DTensor (~0.6 s to import) unloaded; importing
    # DTensor afterwards registers the rules of every op in the namespace.
    import subprocess
    import sys

    code = ("import sys, torch, mmkernels\n"
            "assert 'torch.distributed.tensor' not in sys.modules\n"
            "from torch.distributed.tensor import DTensor\n"
            "rules = DTensor._op_dispatcher.sharding_propagator.op_strategy_funcs\n"
            "print(sorted(op.name() for op in rules if op.namespace == 'mmkernels'))\n"
            "print(sorted(n for n in torch._C._dispatch_get_all_op_names() if n.startswith('mmkernels::')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    with_rules, ops = out.stdout.splitlines()
    assert with_rules == ops and "mmkernels::concat_linear_bwd" in ops, out.stdout
