"""pytest-benchmark suite over the same cases as ``python -m mmkernels.bench`` (the regression gate).

    pip install pytest-benchmark
    # record a baseline for this machine (saved under .benchmarks/<machine id>/)
    pytest benchmarks/test_bench.py --benchmark-autosave
    # later: fail if any case got more than 10% slower (median) than the last saved run
    pytest benchmarks/test_bench.py --benchmark-compare --benchmark-compare-fail=median:10%

Each benchmark synchronises CUDA inside the timed call, so GPU timings are complete. The committed
cross-machine figures live in benchmarks/results/ (written by ``python -m mmkernels.bench``).
"""
import pytest
import torch

from mmkernels.bench.cases import OURS, attention_case, attention_shapes, concat_linear_case, concat_linear_shapes

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DTYPES = [torch.float32, torch.bfloat16]


def _run(benchmark, case, impl, device):
    fn = case.impls[impl]
    state = {"i": 0}

    def call():
        fn(state["i"])
        state["i"] += 1
        if device.type == "cuda":
            torch.cuda.synchronize()

    call()  # warm-up (and the trial that a peer accepts the input)
    benchmark.extra_info.update(case=case.name, dtype=str(case.dtype), mode=case.mode, impl=impl, flops=case.flops)
    benchmark.pedantic(call, rounds=10, warmup_rounds=2, iterations=1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", [OURS, "sdpa"])
@pytest.mark.parametrize("shape_idx", range(4))
def test_attention(benchmark, device, dtype, mode, impl, shape_idx):
    dev = torch.device(device)
    shapes = attention_shapes(dev, quick=True)
    if shape_idx >= len(shapes):
        pytest.skip("no such shape on this device")
    case = attention_case(shapes[shape_idx], dtype, mode, dev, with_compile=False)
    _run(benchmark, case, impl, dev)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", [OURS, "eager_cat_linear"])
@pytest.mark.parametrize("shape_idx", range(3))
def test_concat_linear(benchmark, device, dtype, mode, impl, shape_idx):
    dev = torch.device(device)
    shapes = concat_linear_shapes(dev, quick=True)
    if shape_idx >= len(shapes):
        pytest.skip("no such shape on this device")
    case = concat_linear_case(shapes[shape_idx], dtype, mode, dev, with_compile=False)
    _run(benchmark, case, impl, dev)
