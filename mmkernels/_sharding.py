"""DTensor sharding rules for every operator in ``torch.ops.mmkernels`` (forward and backward).

With these rules the ops accept ``DTensor`` arguments: DTensor picks the cheapest rule below for the
inputs' placements, redistributes the inputs that do not match it (all-gather, all-to-all, ...), runs
the op on each rank's local shards and wraps the results with the rule's output placements. An input
layout no rule covers is therefore redistributed, never computed on shards that would give a wrong
answer. Each rule is written for one mesh dimension; DTensor combines them over the mesh's dimensions.

``cross_attention_fwd`` / ``cross_attention_bwd`` (q, k, v, out and their gradients are ``(B, L, H, D)``,
lse is ``(B, H, Lq)``):

- replicated: everything ``Replicate``;
- heads: q, k, v, out, grad_out and dq, dk, dv ``Shard(2)``, lse ``Shard(1)``, ``kv_lengths`` and
  ``key_padding_mask`` (per batch) ``Replicate``. Only where the number of shards divides both H and
  Hkv, so that each rank holds whole grouped-query groups (query head h reads kv head h // (H // Hkv));
- batch: every tensor ``Shard(0)`` (lse too, ``kv_lengths``, ``key_padding_mask``);
- queries (not causal: the causal diagonal depends on the global Lq): q, out, grad_out, dq ``Shard(1)``,
  lse ``Shard(2)``, k, v and the masks ``Replicate``; dk and dv are then partial sums (``Partial``).

``concat_linear_fwd`` / ``concat_linear_bwd`` (inputs ``(..., d_i)``, weight ``(N, K)``, y and z ``(..., N)``):

- replicated;
- output features (Megatron column parallel): weight and bias ``Shard(0)``, inputs ``Replicate``, y, z,
  grad_out ``Shard(-1)``; dW, db ``Shard(0)``, each input's gradient ``Partial``;
- leading dims: every input, y, z, grad_out ``Shard(j)`` for a leading dim j, weight and bias
  ``Replicate``; input gradients ``Shard(j)``, dW and db ``Partial``.

Outputs that are empty placeholders (z without an activation, gradients not asked for) are ``Replicate``.

Why ``register_op_strategy`` rather than ``torch.distributed.tensor.experimental.register_sharding``
(torch 2.13): ``register_sharding`` builds DTensor's sharding cache key from the arguments from the
first ``int`` one on, so ``is_causal`` (no ``int`` in the attention ops: the query rule depends on it)
and ``concat_linear_bwd``'s ``has_bias`` (a ``bool`` before its first ``int``; it decides whether
grad_bias is empty) would be left out and a cached decision reused for a call it does not fit
(tests/test_distributed.py fails with such a key); and its rules cannot be checked once combined
over a multi-dimensional mesh (heads cut on two mesh dims must still divide H and Hkv).
``register_op_strategy`` with ``expand_to_full_mesh_op_strategy``, what ``register_sharding`` is built
on and what PyTorch's own ops use, takes the cache key and a validity callback explicitly. Both sit
in private-prefixed torch modules: tests/test_distributed.py is what tells a torch upgrade broke them.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import warnings

import torch

__all__ = ["register_sharding_rules", "replicate_plain_masks"]

_REGISTERED = False


def _shard_count(spec, dim: int) -> int:
    """How many pieces ``spec``'s placements cut tensor dim ``dim`` into (1 when not sharded on it)."""
    n = 1
    for mesh_dim, p in enumerate(spec.placements):
        if p.is_shard(dim):
            n *= spec.mesh.size(mesh_dim)
    return n


def replicate_plain_masks(q, *masks):
    """``kv_lengths`` / ``key_padding_mask`` given as plain tensors next to a DTensor ``q``: as replicated
    DTensors on q's mesh. A plain mask holds the full per-batch value on every rank (its shape has been
    checked against q's global batch), and DTensor refuses to mix plain tensors into an op, forward and
    backward alike."""
    if type(q) is torch.Tensor:
        return masks
    dtensor = sys.modules.get("torch.distributed.tensor")
    if dtensor is None or not isinstance(q, dtensor.DTensor):
        return masks
    replicated = [dtensor.Replicate()] * q.device_mesh.ndim
    return tuple(m if m is None or isinstance(m, dtensor.DTensor)
                 else dtensor.DTensor.from_local(m, q.device_mesh, replicated, run_check=False) for m in masks)


def register_sharding_rules() -> None:
    """Registers the rules with DTensor (idempotent); runs by itself when ``torch.distributed.tensor`` is
    imported, before or after mmkernels (``register_when_dtensor_loads``)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from torch.distributed.tensor import Partial, Replicate, Shard
    from torch.distributed.tensor._op_schema import RuntimeSchemaInfo
    from torch.distributed.tensor._ops.utils import expand_to_full_mesh_op_strategy, register_op_strategy

    R, P = Replicate(), Partial()
    ops = torch.ops.mmkernels

    def expand(op_schema, n_outputs, rules, is_valid=None):
        return expand_to_full_mesh_op_strategy(op_schema.get_mesh_from_args(), op_schema, rules,
                                               input_index=n_outputs, is_valid_strategy_cb=is_valid)

    def optional(arg, placement):  # an optional tensor argument: no placement when it is absent
        return None if arg is None else placement

    def arg(op_schema, index, name, default):  # the dispatcher drops trailing arguments equal to their default
        args = op_schema.args_schema
        return args[index] if len(args) > index else op_schema.kwargs_schema.get(name, default)

    def heads_kept_whole(q_index, k_index):
        """Validity of a combined rule: the head dim of q and k is cut into the same number of pieces,
        dividing both H and Hkv (so each rank holds whole grouped-query groups)."""
        def check(input_specs, output_specs):
            q, k = input_specs[q_index], input_specs[k_index]
            shards = _shard_count(q, 2)
            H, Hkv = q.tensor_meta.shape[2], k.tensor_meta.shape[2]
            return _shard_count(k, 2) == shards and H % shards == 0 and Hkv % shards == 0

        return check

    # -- cross_attention: rules as (outputs, inputs before the masks, placement of both masks) ----------
    def attention(op_schema, n_outputs, rules, masks_at, q_index, k_index):
        kv_lengths, key_padding_mask = op_schema.args_schema[masks_at], op_schema.args_schema[masks_at + 1]
        rows = [outs + ins + [optional(kv_lengths, m), optional(key_padding_mask, m)] for outs, ins, m in rules]
        return expand(op_schema, n_outputs, rows, heads_kept_whole(q_index, k_index))

    # From scale on, the arguments are part of DTensor's cache key: the query rule depends on is_causal.
    @register_op_strategy(ops.cross_attention_fwd.default, schema_info=RuntimeSchemaInfo(5, needs_pytree=True))
    def _cross_attention_fwd(op_schema):  # (q, k, v, kv_lengths?, key_padding_mask?, scale, is_causal) -> (out, lse)
        S0, S1, S2 = Shard(0), Shard(1), Shard(2)
        rules = [
            ([R, R], [R, R, R], R),  # replicated
            ([S2, S1], [S2, S2, S2], R),  # heads
            ([S0, S0], [S0, S0, S0], S0),  # batch
        ]
        if not arg(op_schema, 6, "is_causal", False):  # queries (the causal diagonal depends on the global Lq)
            rules.append(([S1, S2], [S1, R, R], R))
        return attention(op_schema, 2, rules, masks_at=3, q_index=0, k_index=1)

    @register_op_strategy(ops.cross_attention_bwd.default, schema_info=RuntimeSchemaInfo(8, needs_pytree=True))
    def _cross_attention_bwd(op_schema):
        # (grad_out, q, k, v, out, lse, kv_lengths?, key_padding_mask?, scale, is_causal) -> (dq, dk, dv)
        S0, S1, S2 = Shard(0), Shard(1), Shard(2)
        rules = [
            ([R, R, R], [R, R, R, R, R, R], R),
            ([S2, S2, S2], [S2, S2, S2, S2, S2, S1], R),
            ([S0, S0, S0], [S0, S0, S0, S0, S0, S0], S0),
        ]
        if not arg(op_schema, 9, "is_causal", False):  # dk, dv: partial sums over the query shards
            rules.append(([S1, P, P], [S1, S1, R, R, S1, S2], R))
        return attention(op_schema, 3, rules, masks_at=6, q_index=1, k_index=2)

    # -- concat_linear --------------------------------------------------------------------------------
    def leading_dims(xs):
        return range(xs[0].ndim - 1)

    # From activation on, the arguments are part of the cache key: they decide whether z is stored.
    @register_op_strategy(ops.concat_linear_fwd.default, schema_info=RuntimeSchemaInfo(3, needs_pytree=True))
    def _concat_linear_fwd(op_schema):  # (inputs, weight, bias?, activation, save_preactivation) -> (y, z)
        xs, bias = op_schema.args_schema[0].children, op_schema.args_schema[2]
        stores_z = op_schema.args_schema[3] != 0 and arg(op_schema, 4, "save_preactivation", True)
        z = lambda p: p if stores_z else R  # an unstored z is an empty placeholder
        last = Shard(xs[0].ndim - 1)
        rows = [[R, R, *[R] * len(xs), R, optional(bias, R)],
                [last, z(last), *[R] * len(xs), Shard(0), optional(bias, Shard(0))]]  # output features
        rows += [[Shard(j), z(Shard(j)), *[Shard(j)] * len(xs), R, optional(bias, R)] for j in leading_dims(xs)]
        return expand(op_schema, 2, rows)

    # From has_bias on, the arguments are part of the cache key: they decide which gradients are empty.
    @register_op_strategy(ops.concat_linear_bwd.default, schema_info=RuntimeSchemaInfo(4, needs_pytree=True))
    def _concat_linear_bwd(op_schema):
        # (grad_out, inputs, weight, z, has_bias, activation, input_mask?, weight_grad) -> [dx..., dw, db]
        args = op_schema.args_schema
        xs, z_meta = args[1].children, args[3]
        input_mask = arg(op_schema, 6, "input_mask", None)
        computed = [True] * len(xs) if input_mask is None else [bool(m) for m in input_mask]
        computed += [bool(arg(op_schema, 7, "weight_grad", True)), bool(args[4])]
        out = lambda placements: [p if c else R for p, c in zip(placements, computed)]  # empty gradients: R
        z = lambda p: R if z_meta.shape.numel() == 0 else p  # z is empty without an activation
        n, last = len(xs), Shard(xs[0].ndim - 1)
        rows = [[R] * (n + 2) + [R, *[R] * n, R, R],
                out([P] * n + [Shard(0), Shard(0)]) + [last, *[R] * n, Shard(0), z(last)]]  # output features
        rows += [out([Shard(j)] * n + [P, P]) + [Shard(j), *[Shard(j)] * n, R, z(Shard(j))] for j in leading_dims(xs)]
        return expand(op_schema, n + 2, rows)

    _REGISTERED = True


class _RegisterWhenDTensorLoads(importlib.abc.MetaPathFinder):
    """Registers the rules right after ``torch.distributed.tensor`` is first imported, so that importing
    mmkernels does not import DTensor (about 0.6 s) for the programs that never use it."""

    def find_spec(self, name, path=None, target=None):
        if name != "torch.distributed.tensor":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)  # the regular finders
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            exec_module = spec.loader.exec_module

            def exec_then_register(module):
                exec_module(module)
                _register_or_warn()

            spec.loader.exec_module = exec_then_register
        return spec


def _register_or_warn() -> None:
    # Runs inside the user's import of torch.distributed.tensor: a torch whose private registration API
    # moved must not break that import; DTensor calls of the ops then fail with DTensor's own error.
    try:
        register_sharding_rules()
    except Exception as e:  # noqa: BLE001
        warnings.warn(f"mmkernels: DTensor sharding rules not registered ({type(e).__name__}: {e}); "
                      "the mmkernels ops will not accept DTensor arguments", RuntimeWarning, stacklevel=2)


def register_when_dtensor_loads() -> None:
    if not torch.distributed.is_available():
        return
    if "torch.distributed.tensor" in sys.modules:
        _register_or_warn()
    else:
        sys.meta_path.insert(0, _RegisterWhenDTensorLoads())
