import io
import pickle

import pytest
import torch
from torch import nn

import mmkernels
from mmkernels.nn import ConcatLinear, CrossModalAttention


def test_cross_modal_attention_shapes_masks_and_gqa():
    torch.manual_seed(0)
    m = CrossModalAttention(32, 8, kdim=20, vdim=12, num_kv_heads=2)
    q, k, v = torch.randn(3, 7, 32), torch.randn(3, 11, 20), torch.randn(3, 11, 12)
    mask = torch.zeros(3, 11, dtype=torch.bool)
    mask[1, 5:] = True
    out = m(q, k, v, key_padding_mask=mask, kv_lengths=torch.tensor([11, 11, 0]))
    assert out.shape == (3, 7, 32)
    # batch 2 has no keys: attention output is zero, so the layer returns out_proj.bias
    torch.testing.assert_close(out[2], m.out_proj.bias.expand(7, 32))
    with mmkernels.use_reference_ops():
        ref = m(q, k, v, key_padding_mask=mask, kv_lengths=torch.tensor([11, 11, 0]))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kdim", [None, 24])
def test_from_torch_matches_multihead_attention(kdim):
    torch.manual_seed(1)
    mha = nn.MultiheadAttention(32, 4, batch_first=True, kdim=kdim, vdim=kdim).eval()
    ours = CrossModalAttention.from_torch(mha)
    q = torch.randn(2, 5, 32)
    k = torch.randn(2, 9, kdim or 32)
    mask = torch.zeros(2, 9, dtype=torch.bool)
    mask[0, 6:] = True
    expected, _ = mha(q, k, k, key_padding_mask=mask, need_weights=False)
    torch.testing.assert_close(ours(q, k, key_padding_mask=mask), expected, atol=1e-5, rtol=1e-5)


def test_from_torch_rejects_unsupported():
    with pytest.raises(ValueError, match="batch_first"):
        CrossModalAttention.from_torch(nn.MultiheadAttention(8, 2))
    with pytest.raises(TypeError):
        CrossModalAttention.from_torch(nn.Linear(3, 3))


def test_cross_modal_attention_bad_config_and_inputs():
    with pytest.raises(ValueError, match="multiple of num_heads"):
        CrossModalAttention(30, 4)
    with pytest.raises(ValueError, match="num_kv_heads"):
        CrossModalAttention(32, 4, num_kv_heads=3)
    m = CrossModalAttention(16, 2)
    with pytest.raises(ValueError, match="query must be"):
        m(torch.randn(2, 3, 15), torch.randn(2, 4, 16))


def test_concat_linear_state_dict_moves_to_and_from_linear():
    torch.manual_seed(2)
    lin = nn.Linear(12, 7)
    cl = ConcatLinear([5, 3, 4], 7, activation="none")
    cl.load_state_dict(lin.state_dict())
    xs = [torch.randn(6, d) for d in (5, 3, 4)]
    torch.testing.assert_close(cl(*xs), lin(torch.cat(xs, -1)), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(cl(xs), cl(*xs))  # a single list is accepted too
    lin2 = nn.Linear(12, 7)
    lin2.load_state_dict(cl.state_dict())
    assert torch.equal(lin2.weight, lin.weight)
    cl2 = ConcatLinear.from_linear(lin, [5, 3, 4], activation="gelu")
    torch.testing.assert_close(cl2(*xs), torch.nn.functional.gelu(lin(torch.cat(xs, -1))), atol=1e-6, rtol=1e-6)


def test_concat_linear_errors():
    with pytest.raises(ValueError, match="in_features"):
        ConcatLinear([], 3)
    with pytest.raises(ValueError, match="activation"):
        ConcatLinear([2], 3, activation="tanh")
    m = ConcatLinear([2, 3], 4)
    with pytest.raises(ValueError, match="expected 2 inputs"):
        m(torch.randn(1, 2))
    with pytest.raises(ValueError, match=r"inputs\[1\] must be a tensor \(\.\.\., 3\)"):
        m(torch.randn(1, 2), torch.randn(1, 4))


def test_modules_pickle_and_state_dict_roundtrip():
    for m in (CrossModalAttention(16, 4, num_kv_heads=2), ConcatLinear([3, 5], 6, activation="silu")):
        buf = io.BytesIO()
        torch.save(m.state_dict(), buf)
        buf.seek(0)
        clone = pickle.loads(pickle.dumps(m))
        clone.load_state_dict(torch.load(buf))
        for a, b in zip(m.state_dict().values(), clone.state_dict().values()):
            assert torch.equal(a, b)
