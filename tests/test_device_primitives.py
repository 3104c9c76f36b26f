"""Conformance of the device primitives with their documented semantics.

Each primitive runs in a one-warp kernel (csrc/common/device/conformance/) on per-lane inputs; the
expected per-lane results are built here, independently of the C++ code, from the PTX ISA 9.0 / CUDA
Programming Guide text (docs/research/cuda-host-emulation.md): mma fragment layouts (PTX
9.7.14.5.8), ldmatrix lanes and fragments (9.7.14.5.15), shuffle source lanes, votes,
cp.async zero-fill, round-to-nearest-even conversions.

The sm_90a primitives run in one-warpgroup kernels written on CuTe (conformance_sm90.cu): TMA box
loads into each swizzled layout (the image in shared memory is derived here from the PTX ISA's swizzle
rule: the 16-byte chunk index, address bits 4..6, XORed with address bits 7..9; out-of-bounds elements
zero), and wgmma with both operands in shared memory (each swizzle and majorness, CuTe's descriptors) or
A from registers, checked as the matrix product of the logical operands.

"cpu" runs the host emulation (builds with MMKERNELS_CUDA_EMULATION=ON). "cuda" runs the same kernels
on the GPU, and test_hardware_matches_emulation compares hardware with the emulation directly: the first
thing to run whenever a GPU is available.
"""
import pytest
import torch

import mmkernels

from conftest import HAS_CUDA, HAS_SM90

C = mmkernels.ops._C
MMA_BF16, MMA_F16, LDMATRIX, SHFL, VOTE, CP_ASYNC, CONVERT, WGMMA, TMA = range(9)

# "cpu": the emulation runs the primitives on CPU tensors; "cuda": the hardware (conftest's rule)
DEVICES = (["cpu"] if C.with_emulation else []) + (["cuda"] if HAS_CUDA else [])
pytestmark = pytest.mark.skipif(not DEVICES, reason="needs the emulation (MMKERNELS_CUDA_EMULATION=ON) or a GPU")


def run(primitive, in0, in1=None, in2=None, *, out_shape, out_dtype=torch.int32, n=0, mode=0, arg=0, device="cpu"):
    to = lambda t: None if t is None else t.contiguous().to(device)
    out = torch.zeros(out_shape, dtype=out_dtype, device=device)
    torch.ops.mmkernels_testing.conformance(primitive, to(in0), to(in1), to(in2), out, n, mode, arg)
    return out.cpu()


def u32(x):
    """int64 values in [0, 2^32) as int32 storage with the same bits."""
    x = torch.as_tensor(x, dtype=torch.int64)
    return torch.where(x >= 2**31, x - 2**32, x).to(torch.int32)


def bits16(t):
    return t.contiguous().view(torch.int16).to(torch.int64) & 0xFFFF


def as_u64(t):
    return t.to(torch.int64) & 0xFFFFFFFF


# ---- mma ---------------------------------------------------------------------------------------------


def mma_fragments(A_bits, B_bits, Cm):
    """Per-lane registers of A (16x16 row), B (16x8 col), C (16x8) for m16n8k16 (PTX 9.7.14.5.8)."""
    a = torch.zeros(32, 4, dtype=torch.int64)
    b = torch.zeros(32, 2, dtype=torch.int64)
    c = torch.zeros(32, 4)
    pair = lambda lo, hi: lo | (hi << 16)
    for lane in range(32):
        g, t = lane // 4, lane % 4
        a[lane, 0] = pair(A_bits[g, 2 * t], A_bits[g, 2 * t + 1])
        a[lane, 1] = pair(A_bits[g + 8, 2 * t], A_bits[g + 8, 2 * t + 1])
        a[lane, 2] = pair(A_bits[g, 2 * t + 8], A_bits[g, 2 * t + 9])
        a[lane, 3] = pair(A_bits[g + 8, 2 * t + 8], A_bits[g + 8, 2 * t + 9])
        b[lane, 0] = pair(B_bits[2 * t, g], B_bits[2 * t + 1, g])
        b[lane, 1] = pair(B_bits[2 * t + 8, g], B_bits[2 * t + 9, g])
        c[lane] = torch.stack([Cm[g, 2 * t], Cm[g, 2 * t + 1], Cm[g + 8, 2 * t], Cm[g + 8, 2 * t + 1]])
    return u32(a), u32(b), c


def d_matrix(d):
    """Assembles the 16x8 D from per-lane accumulators (same layout as C)."""
    D = torch.zeros(16, 8, dtype=d.dtype)
    for lane in range(32):
        g, t = lane // 4, lane % 4
        D[g, 2 * t], D[g, 2 * t + 1], D[g + 8, 2 * t], D[g + 8, 2 * t + 1] = d[lane]
    return D


def mma_case(dtype, seed):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(16, 16, generator=g).to(dtype)
    B = torch.randn(16, 8, generator=g).to(dtype)
    Cm = torch.randn(16, 8, generator=g)
    expected = (A.double() @ B.double() + Cm.double())
    return A, B, Cm, expected


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_mma_m16n8k16_is_the_matrix_product_of_the_documented_fragments(dtype, device):
    for seed in range(3):
        A, B, Cm, expected = mma_case(dtype, seed)
        a, b, c = mma_fragments(bits16(A), bits16(B), Cm)
        prim = MMA_BF16 if dtype == torch.bfloat16 else MMA_F16
        d = run(prim, a, b, c, out_shape=(32, 4), out_dtype=torch.float32, device=device)
        D = d_matrix(d).double()
        if device == "cpu":  # the emulation: exact products, one rounding of the sum
            assert torch.equal(D.float(), expected.float())
        else:  # hardware: accumulation order and rounding are unspecified (PTX 9.7.14.5.14)
            torch.testing.assert_close(D, expected, rtol=1e-5, atol=1e-5)


# ---- ldmatrix ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("num", [1, 2, 4])
@pytest.mark.parametrize("trans", [False, True])
def test_ldmatrix_delivers_the_documented_elements(num, trans, device):
    g = torch.Generator().manual_seed(num * 2 + trans)
    tile_bytes = 2048
    words = torch.randint(0, 2**16, (tile_bytes // 2,), generator=g)  # 16-bit elements
    tile = u32(words[0::2] | (words[1::2] << 16))
    rows = torch.randperm(tile_bytes // 16, generator=g)[:32] * 16  # distinct 16-byte aligned row addresses
    out = as_u64(run(LDMATRIX, tile, rows.to(torch.int32), out_shape=(32, 4), n=tile_bytes, mode=num, arg=int(trans),
                     device=device))
    M = [[words[rows[8 * j + r] // 2 + torch.arange(8)] for r in range(8)] for j in range(num)]  # M[j][row][col]
    for lane in range(32):
        g_, c = lane // 4, 2 * (lane % 4)
        for j in range(num):
            lo, hi = (M[j][c][g_], M[j][c + 1][g_]) if trans else (M[j][g_][c], M[j][g_][c + 1])
            assert out[lane, j].item() == (lo | (hi << 16)).item(), f"lane {lane} matrix {j}"


# ---- shuffles and votes ------------------------------------------------------------------------------


def expected_shuffle(values, args, mode, width):
    out = []
    for lane in range(32):
        s, e = lane & ~(width - 1), (lane & ~(width - 1)) + width - 1
        a = args[lane]
        if mode == 0:
            src = s + (a & (width - 1))
        elif mode == 1:
            src = lane - (a & 31)
            src = lane if src < s else src
        elif mode == 2:
            src = lane + (a & 31)
            src = lane if src > e else src
        else:
            src = lane ^ (a & 31)
            src = lane if src > e else src
        out.append(values[src])
    return out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", [0, 1, 2, 3], ids=["idx", "up", "down", "xor"])
@pytest.mark.parametrize("width", [32, 16, 8, 4, 2, 1])
def test_shuffle_source_lanes(mode, width, device):
    g = torch.Generator().manual_seed(mode * 64 + width)
    values = torch.randint(0, 2**32, (32,), generator=g)
    args = torch.randint(0, 40 if mode == 0 else 32, (32,), generator=g)
    if mode == 3:  # xor with one mask for the warp, as used in reductions
        args = torch.full((32,), int(args[0]) % max(width, 1))
    else:
        args = torch.full((32,), int(args[0])) if mode in (1, 2) else args
    out = as_u64(run(SHFL, u32(values), args.to(torch.int32), out_shape=(32,), mode=mode, arg=width, device=device))
    assert out.tolist() == expected_shuffle(values.tolist(), args.tolist(), mode, width)


@pytest.mark.parametrize("device", DEVICES)
def test_votes(device):
    g = torch.Generator().manual_seed(3)
    for preds in (torch.randint(0, 2, (32,), generator=g), torch.ones(32, dtype=torch.int64), torch.zeros(32, dtype=torch.int64)):
        ballot = sum(1 << i for i, p in enumerate(preds.tolist()) if p)
        expect = [ballot, int(ballot != 0), int(ballot == 0xFFFFFFFF)]
        for mode in range(3):
            out = as_u64(run(VOTE, preds.to(torch.int32), out_shape=(32,), mode=mode, device=device))
            assert out.tolist() == [expect[mode]] * 32


# ---- cp.async ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_cp_async_copies_and_zero_fills(device):
    g = torch.Generator().manual_seed(5)
    src = torch.randint(0, 256, (1024,), generator=g, dtype=torch.int64).to(torch.uint8)
    offsets = torch.randint(0, 1024 // 16, (32,), generator=g) * 16
    sizes = torch.randint(0, 17, (32,), generator=g)
    sizes[:3] = torch.tensor([0, 16, 7])
    spec = torch.stack([offsets, sizes], 1).to(torch.int32)
    out = run(CP_ASYNC, src, spec, out_shape=(128,), n=1024, device=device).view(torch.uint8)
    expected = torch.zeros(512, dtype=torch.uint8)
    for lane in range(32):
        o, s = int(offsets[lane]), int(sizes[lane])
        expected[16 * lane:16 * lane + s] = src[o:o + s]
    assert torch.equal(out, expected)


# ---- conversions -------------------------------------------------------------------------------------


def conversion_inputs():
    g = torch.Generator().manual_seed(9)
    special = torch.tensor([0.0, -0.0, 1.0, 1.00390625, 1.01171875, 65504.0, 65519.0, 65520.0, 1e-8, -3e-6, 6e-8,
                            2.0**-24, 2.0**-25, 1.5 * 2.0**-25, 3.4e38, float("inf"), float("-inf"), float("nan")])
    return torch.cat([special, torch.randn(4000, generator=g) * torch.logspace(-10, 10, 4000).float()])


@pytest.mark.parametrize("device", DEVICES)
def test_conversions_round_to_nearest_even(device):
    x = conversion_inputs()
    out = as_u64(run(CONVERT, x, out_shape=(x.numel(),), n=x.numel(), device=device))
    bf, hf = out & 0xFFFF, out >> 16
    nan = torch.isnan(x)
    assert torch.equal(bf[~nan], bits16(x.to(torch.bfloat16))[~nan])
    assert torch.equal(hf[~nan], bits16(x.to(torch.float16))[~nan])
    # NaN stays NaN (the bit pattern is unspecified on the device)
    assert ((bf[nan] & 0x7F80) == 0x7F80).all() and ((bf[nan] & 0x7F) != 0).all()
    assert ((hf[nan] & 0x7C00) == 0x7C00).all() and ((hf[nan] & 0x3FF) != 0).all()


# ---- sm_90a: TMA and wgmma ------------------------------------------------------------------------------

SM90_DEVICES = (["cpu"] if C.with_emulation else []) + (["cuda"] if HAS_SM90 else [])
TMA_BOXES = [(40, 100, 104, 3, 5), (20, 70, 72, -2, 60), (5, 24, 24, 2, -3)]  # rows, cols, stride, row0, col0


def tma_image(g, rows, cols, swizzle, row0, col0):
    """The box's shared-memory bytes after a TMA load (PTX 9.7.9.25.5.1 and the tensor-map swizzle modes):
    elements row-major in the box, each 16-byte chunk at address bits 4..6 XOR bits 7..9 (128-byte
    swizzle; 7..8 for 64, 7 for 32), elements outside the tensor zero."""
    R, Cc = g.shape[0], g.shape[1]
    mask = {128: 7, 64: 3, 32: 1, 0: 0}[swizzle]
    img = torch.zeros(rows * cols, dtype=torch.int16)
    for r in range(rows):
        for c in range(cols):
            o = (r * cols + c) * 2
            a = o ^ (((o >> 7) & mask) << 4)
            rr, cc = row0 + r, col0 + c
            img[a // 2] = g[rr, cc] if (0 <= rr < R and 0 <= cc < Cc) else 0
    return img


def run_tma(case, g, box, device):
    R, Cc, ld, r0, c0 = box
    rows, cols, _ = C._TMA_CASES[case]
    spec = torch.tensor([R, Cc, ld, r0, c0], dtype=torch.int32)
    return run(TMA, g, spec, out_shape=(rows * cols // 2,), mode=case, device=device).view(torch.int16)


@pytest.mark.parametrize("device", SM90_DEVICES)
@pytest.mark.parametrize("case", range(len(C._TMA_CASES)), ids=lambda i: "box{}x{}-sw{}".format(*C._TMA_CASES[i]))
def test_tma_box_load_swizzles_and_zero_fills(case, device):
    rows, cols, swizzle = C._TMA_CASES[case]
    for box in TMA_BOXES:
        R, Cc, ld, r0, c0 = box
        g = (torch.randperm(R * ld, generator=torch.Generator().manual_seed(case)) % 30000 + 1).to(torch.int16).view(R, ld)
        got = run_tma(case, g, box, device)
        assert torch.equal(got, tma_image(g[:, :Cc], rows, cols, swizzle, r0, c0)), f"box {box}"


def wgmma_operands(case, seed):
    n, swizzle, a_mn, b_mn, a_regs, f16 = C._WGMMA_CASES[case]
    g = torch.Generator().manual_seed(seed)
    dtype = torch.float16 if f16 else torch.bfloat16
    A = torch.randn(64, 64, generator=g).to(dtype)
    B = torch.randn(n, 64, generator=g).to(dtype)
    stored = lambda M, mn: (M.t() if mn else M).contiguous().view(torch.int16)  # MN-major: rows of M / N
    return A, B, stored(A, a_mn), stored(B, b_mn)


def wgmma_name(i):
    n, sw, a_mn, b_mn, a_regs, f16 = C._WGMMA_CASES[i]
    return f"n{n}-sw{sw}-A{'mn' if a_mn else 'k'}{'-regs' if a_regs else ''}-B{'mn' if b_mn else 'k'}{'-f16' if f16 else ''}"


@pytest.mark.parametrize("device", SM90_DEVICES)
@pytest.mark.parametrize("case", range(len(C._WGMMA_CASES)), ids=wgmma_name)
def test_wgmma_is_the_product_of_its_operands(case, device):
    n = C._WGMMA_CASES[case][0]
    A, B, a, b = wgmma_operands(case, case)
    D = run(WGMMA, a, b, out_shape=(64, n), out_dtype=torch.float32, mode=case, device=device)
    ref = A.double() @ B.double().T
    # float32 accumulation of 64 exact products: a few float32 ulps of the absolute sum
    bound = 64 * 2**-23 * (A.double().abs() @ B.double().abs().T) + 1e-30
    assert ((D.double() - ref).abs() <= bound).all(), f"max error {(D.double() - ref).abs().max():.3e}"


@pytest.mark.cuda
@pytest.mark.skipif(not (C.with_emulation and HAS_SM90), reason="needs an sm_90 GPU and a build with the emulation")
def test_hopper_hardware_matches_emulation():
    for case in range(len(C._WGMMA_CASES)):
        n = C._WGMMA_CASES[case][0]
        _, _, a, b = wgmma_operands(case, 100 + case)
        emu = run(WGMMA, a, b, out_shape=(64, n), out_dtype=torch.float32, mode=case, device="cpu")
        gpu = run(WGMMA, a, b, out_shape=(64, n), out_dtype=torch.float32, mode=case, device="cuda")
        torch.testing.assert_close(gpu, emu, rtol=1e-5, atol=1e-5, msg=wgmma_name(case))
    for case in range(len(C._TMA_CASES)):
        for box in TMA_BOXES:
            g = torch.randint(-30000, 30000, (box[0], box[2]), generator=torch.Generator().manual_seed(7), dtype=torch.int16)
            assert torch.equal(run_tma(case, g, box, "cuda"), run_tma(case, g, box, "cpu")), (case, box)


# ---- hardware vs emulation ---------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.skipif(not C.with_emulation, reason="needs a build with the emulation too")
def test_hardware_matches_emulation():
    for dtype, prim in ((torch.bfloat16, MMA_BF16), (torch.float16, MMA_F16)):
        A, B, Cm, _ = mma_case(dtype, 11)
        a, b, c = mma_fragments(bits16(A), bits16(B), Cm)
        emu = run(prim, a, b, c, out_shape=(32, 4), out_dtype=torch.float32, device="cpu")
        gpu = run(prim, a, b, c, out_shape=(32, 4), out_dtype=torch.float32, device="cuda")
        torch.testing.assert_close(gpu, emu, rtol=1e-5, atol=1e-5)
    x = conversion_inputs()
    emu = run(CONVERT, x, out_shape=(x.numel(),), n=x.numel(), device="cpu")
    gpu = run(CONVERT, x, out_shape=(x.numel(),), n=x.numel(), device="cuda")
    ok = ~torch.isnan(x)
    assert torch.equal(gpu[ok], emu[ok])
    g = torch.Generator().manual_seed(1)
    words = torch.randint(0, 2**16, (1024,), generator=g)
    tile = u32(words[0::2] | (words[1::2] << 16))
    rows = (torch.randperm(128, generator=g)[:32] * 16).to(torch.int32)
    for num in (1, 2, 4):
        for trans in (0, 1):
            emu = run(LDMATRIX, tile, rows, out_shape=(32, 4), n=2048, mode=num, arg=trans, device="cpu")
            gpu = run(LDMATRIX, tile, rows, out_shape=(32, 4), n=2048, mode=num, arg=trans, device="cuda")
            assert torch.equal(gpu[:, :num], emu[:, :num])
