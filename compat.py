"""Workarounds for defects of the pinned upstream packages, each naming its defect.

tests/test_compat.py holds a canary per workaround: it fails when the upstream defect is gone (then
the workaround should be deleted). Each patch of an upstream class is a named function applied by
the code that needs it (few-shot/train.py: `keep_save_total_limit`); importing this module patches
nothing. The other workarounds live beside their users: SimpleServing's model loader in serving.py,
pymilvus's index request in vector_index.py, the LayerNorm gradient helper in analysis/interpret.py.
"""
from __future__ import annotations

from paddlenlp.trainer import Trainer

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


def keep_save_total_limit() -> None:
    """Make paddlenlp's Trainer honour --save_total_limit in a single process (see
    `_save_checkpoint_then_rotate`); applied by few-shot/train.py before it builds its trainer."""
    Trainer._save_checkpoint = _save_checkpoint_then_rotate
