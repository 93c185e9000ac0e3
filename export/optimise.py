"""The exported graph's clean-up: onnxscript's optimiser without the one rewrite rule that costs its time.

``ONNXProgram.optimize()`` runs onnxscript's ``optimize_ir``: constant folding, its default pattern rewrites, and
the removal of what became unused. On SmolLM2-135M that took 30.3 s (median of 3), most of it in one rule,
``slice_split_rule`` (8.8 s a round; it turns Slice pairs into a Split, and found none). The same passes with the
other default rules write a byte-identical graph in 4.2 s (tools/optimise_bench.py; docs/lab/performance.md).
"""

from __future__ import annotations

import onnx_ir as ir
import onnx_ir.passes.common as common
from onnxscript.optimizer import fold_constants_ir
from onnxscript.rewriter import RewritePass
from onnxscript.rewriter.rules import common as rules

RULES = (  # onnxscript's default rewrite rules, in its order, by their public names; without slice_split_rule
    rules.add_0_rule,
    rules.mul_by_1_rule,
    rules.sub_0_rule,
    rules.div_by_1_rule,
    rules.dropout_zero_rule,
    rules.dropout_inference_rule,
    rules.two_reshapes_matmul_reshape_rule,
    rules.one_reshape_matmul_reshape_rule,
    rules.cast_constant_of_shape_rule,
    rules.cast_constant_of_shape_without_value_rule,
    rules.collapse_slice_rule,
    rules.collapse_slice2_rule,
    rules.materialize_reshape_shape_rule,
    rules.min_min_rule,
    rules.max_max_rule,
    rules.min_max_rule,
    rules.max_min_rule,
    rules.successive_clip_relu_rule,
    rules.successive_relu_clip_rule,
    rules.successive_relu_rule,
    rules.successive_clip_rule,
    rules.cast_cast_rule,
    rules.no_op_cast_rule,
    rules.no_op_expand_rule,
    rules.flatten_to_reshape_rule,
    rules.reshape_reshape_rule,
    rules.no_op_transpose_rule,
    rules.transpose_transpose_rule,
    rules.unsqueeze_unsqueeze_rule,
    rules.squeeze_reshape_1d_rule,
    rules.no_op_dynamic_scatter_nd_rule,
    rules.no_op_static_scatter_nd_rule,
    rules.normalize_pad_format_conv_rule,
    rules.normalize_pad_format_conv_integer_rule,
    rules.fuse_pad_into_conv_rule,
    rules.fuse_pad_into_conv_integer_rule,
    rules.fuse_batchnorm_into_conv_rule,
    rules.fuse_batchnorm_into_conv_transpose_rule,
    rules.fuse_batchnorm_into_gemm_rule,
    rules.remove_optional_bias_from_conv_rule,
    rules.remove_optional_bias_from_conv_transpose_rule,
    rules.remove_optional_bias_from_qlinear_conv_rule,
    rules.remove_optional_bias_from_gemm_rule,
)
ROUNDS = 2  # as optimize_ir: fold, rewrite and drop the unused, twice unless the first round changed nothing


def optimise(model: ir.Model) -> None:
    """Inline functions; fold constants, rewrite by ``RULES`` and drop what is unused (``ROUNDS`` times); then lift
    constants to initializers, deduplicate them and eliminate common subexpressions. In place."""
    ir.passes.Sequential(
        common.InlinePass(),
        ir.passes.PassManager(
            [
                _Fold(),
                RewritePass(RULES),
                common.RemoveUnusedNodesPass(),
                common.RemoveUnusedFunctionsPass(),
                common.RemoveUnusedOpsetsPass(),
            ],
            steps=ROUNDS,
            early_stop=True,
        ),
        common.RemoveUnusedNodesPass(),
        common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
        common.LiftSubgraphInitializersToMainGraphPass(),
        common.DeduplicateInitializersPass(),
        common.CommonSubexpressionEliminationPass(),
        common.OutputFixPass(),
        common.NameFixPass(),
    )(model)


class _Fold(ir.passes.InPlacePass):
    """Constant folding with node-level shape inference, as a pass."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        return ir.passes.PassResult(model, fold_constants_ir(model, onnx_shape_inference=True).modified)
