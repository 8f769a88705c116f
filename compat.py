"""Workarounds for defects of the pinned upstream packages, each naming its defect.

tests/test_compat.py fails when a workaround stops working or when the upstream defect is gone
(then the workaround should be deleted). Patches of upstream classes are applied once, when this
module is imported.
"""
from __future__ import annotations

from typing import Sequence

import paddle
from paddlenlp.server import predictor as server_predictor
from paddlenlp.trainer import Trainer


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


UPSTREAM_SERVER_CREATE_PREDICTOR = server_predictor.Predictor._create_predictor


def _server_predictor_from_export(self) -> None:
    """Replaces paddlenlp.server.predictor.Predictor._create_predictor (SimpleServer's model loader).

    Defect (paddlenlp 2.8.1 on Paddle 3): it only looks for pre-PIR `<name>.pdmodel` programs, so
    SimpleServer.register on a Paddle 3 export (`<name>.json`) fails with "The model path do not
    include the inference model, please check!"; past that, `_is_int8_model` walks legacy program
    blocks and the CPU config enables memory_optimize_pass, which fails under PIR. The same engine
    (Paddle Inference) is built by backends.create_backend from the export's metadata instead: the
    classifier's (export_model.py) or the retrieval encoder's (retrieval_based/export_model.py).
    """
    from backends import create_backend
    from exporting import export_prefix_in, load_export
    from semantic_index import is_encoder_export, load_encoder_export

    device, _, index = self._device.partition(":")
    if is_encoder_export(self._model_path):
        self.export = load_encoder_export(self._model_path, device, self._precision, self._num_threads,
                                          device_id=int(index or 0))
        self.backend = self.export.engine
    else:
        self.export = load_export(export_prefix_in(self._model_path))
        self.backend = create_backend(self.export, "paddle", self._precision, device, int(index or 0),
                                      self._num_threads)
    self._predictor_type, self._output_num = "paddle_inference", 1


server_predictor.Predictor._create_predictor = _server_predictor_from_export


UPSTREAM_SAVE_CHECKPOINT = Trainer._save_checkpoint


def _save_checkpoint_then_rotate(self, model, metrics=None) -> None:
    """Replaces paddlenlp.trainer.Trainer._save_checkpoint (used by few-shot/train.py's PromptTrainer).

    Defect (paddlenlp 2.8.1): old checkpoints are deleted only when `args.local_rank == 0`, but a
    single-process run has local_rank -1, so --save_total_limit is ignored and every evaluation's
    checkpoint (weights and optimizer state) stays on disk: 35 directories after a 35-epoch
    few-shot run with limit 1; for ernie-3.0-base each is about 1.4 GB (118M parameters x 3 copies).
    """
    UPSTREAM_SAVE_CHECKPOINT(self, model, metrics)
    if self.args.local_rank == -1 and self.args.should_save_model_state:
        self._rotate_checkpoints(use_mtime=True, output_dir=self.args.output_dir)


Trainer._save_checkpoint = _save_checkpoint_then_rotate
