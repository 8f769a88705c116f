"""Workarounds for defects of the pinned upstream packages, each naming its defect.

tests/test_compat.py holds a canary per workaround: it fails when the upstream defect is gone (then
the workaround should be deleted). Each patch of an upstream class is a named function applied by
the code that needs it (few-shot/train.py: `keep_save_total_limit`); only pymilvus's index request
is still patched when this module is imported (the retrieval scripts import it for that).
SimpleServing's model loader is patched by serving.py, which uses it, and the LayerNorm gradient
helper lives beside the interpretation code (analysis/interpret.py).
"""
from __future__ import annotations

from paddlenlp.trainer import Trainer

try:
    from pymilvus.client.prepare import Prepare
except ImportError:  # installed without the retrieval group: no pymilvus to patch
    Prepare = None


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


INDEX_TYPE_KEYS = ("index_type", "metric_type", "params")


def _create_index_request_with_params_json(cls, collection_name: str, field_name: str, params, **kwargs):
    """Replaces pymilvus.client.prepare.Prepare.create_index_request.

    Defect (pymilvus 3.0.2 with milvus-lite 3.2.2): pymilvus sends an index's build parameters (HNSW's
    M and efConstruction) as separate key-value pairs, and Milvus Lite reads them only from the
    JSON `params` pair that older pymilvus sent, so it silently built every index with its defaults
    (M 16). The build parameters are sent both ways (Milvus servers also accept the older JSON form;
    not tried against one here).
    """
    if isinstance(params, dict) and "params" not in params:
        build = {key: value for key, value in params.items() if key not in INDEX_TYPE_KEYS}
        params = {**params, "params": build} if build else params
    return UPSTREAM_CREATE_INDEX_REQUEST(cls, collection_name, field_name, params, **kwargs)


if Prepare is not None:
    UPSTREAM_CREATE_INDEX_REQUEST = Prepare.create_index_request.__func__
    Prepare.create_index_request = classmethod(_create_index_request_with_params_json)
