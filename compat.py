"""Workarounds for defects of the pinned upstream packages, each naming its defect.

tests/test_compat.py fails when a workaround stops working or when the upstream defect is gone
(then the workaround should be deleted).
"""
from __future__ import annotations

from typing import Sequence

import paddle


def grad_wrt_inputs(output: paddle.Tensor, inputs: Sequence[paddle.Tensor], model: paddle.nn.Layer
                    ) -> list[paddle.Tensor]:
    """paddle.grad(output, inputs), made correct for models with LayerNorm.

    Defect (paddlepaddle 3.3.1, layer_norm_grad on CPU): when paddle.grad is asked for the gradient
    of an input but not of the LayerNorm scale, the input gradient is wrong whenever the scale is
    not all ones (loss.backward(), which computes every gradient, is right, so training is not
    affected). Integrated gradients lost their completeness through it: on a trained tiny ERNIE the
    attributions summed to 5.74 for a logit difference of 6.67. Asking for the scales' gradients as
    well takes the kernel's correct path.
    """
    scales = [layer.weight for layer in model.sublayers()
              if isinstance(layer, paddle.nn.LayerNorm) and layer.weight is not None and not layer.weight.stop_gradient]
    return paddle.grad(output, [*inputs, *scales])[:len(inputs)]
