"""mmkernels inside PyTorch's machinery: autocast, pickling and deepcopy, DistributedDataParallel
(gloo, two processes), and torch.compile with inductor."""
import pickle

import pytest
import torch
from helpers import assert_within_budget, check_autocast_layers

import mmkernels
from mmkernels import reference as R


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_autocast_cpu_through_layers_and_ops(dtype):
    check_autocast_layers("cpu", dtype)
    # mixed float32 / low-precision arguments inside a region: all cast to the autocast dtype first
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(2, 6, 4, 16, generator=g), torch.randn(2, 11, 2, 16, generator=g),
               torch.randn(2, 11, 2, 8, generator=g))
    with torch.autocast("cpu", dtype=dtype):
        mixed = mmkernels.cross_attention(q, k.to(dtype), v)
    assert mixed.dtype == dtype
    low = [t.to(dtype) for t in (q, k, v)]
    assert_within_budget(mixed, R.cross_attention(*low), R.cross_attention(*(t.double() for t in low)),
                         "autocast cross_attention with mixed dtypes", dtype)


def test_models_pickle_and_deepcopy():
    import copy

    from mmkernels.models import AttentionFusion

    m = AttentionFusion({"a": ("sequence", 6), "b": ("vector", 3)}, 4, d_model=16).eval()
    x = {"a": torch.randn(2, 9, 6), "b": torch.randn(2, 3)}
    for clone in (pickle.loads(pickle.dumps(m)), copy.deepcopy(m)):
        assert torch.equal(clone(x), m(x))


def _ddp_worker(rank, world, init_file, batch, result_file):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from mmkernels.models import AttentionFusion

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = DDP(AttentionFusion({"a": ("sequence", 6), "b": ("image", 1)}, 3, d_model=16, dropout=0.0))
    inputs, lengths, labels = batch
    per = labels.shape[0] // world
    sl = slice(rank * per, (rank + 1) * per)
    out = model({k: v[sl] for k, v in inputs.items()}, {k: v[sl] for k, v in lengths.items()})
    torch.nn.functional.cross_entropy(out, labels[sl]).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    torch.save(grads, f"{result_file}.{rank}")
    # Deterministic teardown: without it one rank could destroy its gloo group (or exit) while the other
    # still had DDP's reducer and communication threads alive, and die in gloo with SIGABRT ("terminate
    # called without an active exception") about one run in three. Drop the DDP wrapper (its reducer
    # holds the group), wait for both ranks, then destroy.
    del model, out
    dist.barrier()
    dist.destroy_process_group()


def test_distributed_data_parallel_gloo_matches_single_process(tmp_path):
    import torch.multiprocessing as mp

    from mmkernels.models import AttentionFusion

    g = torch.Generator().manual_seed(3)
    batch = ({"a": torch.randn(8, 11, 6, generator=g), "b": torch.randn(8, 1, 8, 8, generator=g)},
             {"a": torch.tensor([11, 3, 7, 1, 11, 5, 2, 9])}, torch.randint(0, 3, (8,), generator=g))
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), batch, str(tmp_path / "grads")), nprocs=2, join=True)
    g0, g1 = torch.load(tmp_path / "grads.0"), torch.load(tmp_path / "grads.1")
    for a, b in zip(g0, g1):
        assert torch.equal(a, b)  # all-reduced gradients identical on both ranks
    torch.manual_seed(0)
    single = AttentionFusion({"a": ("sequence", 6), "b": ("image", 1)}, 3, d_model=16, dropout=0.0)
    inputs, lengths, labels = batch
    torch.nn.functional.cross_entropy(single(inputs, lengths), labels).backward()
    for a, p in zip(g0, single.parameters()):
        torch.testing.assert_close(a, p.grad, atol=1e-6, rtol=1e-5)


def test_torch_compile_inductor_fullgraph_both_ops_forward_backward():
    g = torch.Generator().manual_seed(7)
    q, k = torch.randn(2, 9, 4, 16, generator=g), torch.randn(2, 13, 2, 16, generator=g)
    kl, m = torch.tensor([13, 5]), torch.rand(2, 13, generator=g) < 0.2
    xs = [torch.randn(3, 5, generator=g), torch.randn(3, 7, generator=g)]
    w, b = torch.randn(4, 12, generator=g), torch.randn(4, generator=g)

    def f(q, k, x0, x1, w, b):
        o = mmkernels.cross_attention(q, k, k, kv_lengths=kl, key_padding_mask=m)
        return o.square().sum() + mmkernels.concat_linear([x0, x1], w, b, "gelu").sum()

    compiled = torch.compile(f, fullgraph=True)  # default backend: inductor
    results = []
    for fn in (f, compiled):
        args = [t.clone().requires_grad_() for t in (q, k, *xs, w, b)]
        loss = fn(*args)
        results.append([loss, *torch.autograd.grad(loss, args)])
    for a, c in zip(*results):
        torch.testing.assert_close(a, c)


def test_every_op_is_opchecked():
    # Each op test module names the ops its test_opcheck runs opcheck on; together they must cover the
    # namespace, so that a new op cannot ship without opcheck (inputs requiring grad included).
    import test_concat_linear
    import test_cross_attention

    ops = {name.split("::", 1)[1] for name in torch._C._dispatch_get_all_op_names() if name.startswith("mmkernels::")}
    assert ops == set(test_cross_attention.OPCHECKED) | set(test_concat_linear.OPCHECKED)
