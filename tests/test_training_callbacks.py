"""TrainingLoop's callbacks (in process, no training of a real model): called in order at every step
and epoch end, the best checkpoint kept on a better dev macro F1, early stopping after the patience."""
from __future__ import annotations

import paddle

from training import BestCheckpoint, EarlyStopping, FixedBatches, TrainingLoop


class Scripted:
    """Puts the next of these dev scores on the state at each epoch end, as DevEvaluation does."""

    def __init__(self, scores: list[float], calls: list):
        self.scores, self.calls = iter(scores), calls

    def on_epoch_end(self, state) -> bool:
        macro = next(self.scores)
        state.metrics = {"macro_f1": macro, "micro_f1": macro + 0.1, "eval_loss": 1.0}
        self.calls.append(("evaluate", state.epoch))
        return True


class Recorder:
    def __init__(self, calls: list):
        self.calls = calls

    def on_step_end(self, state) -> bool:
        self.calls.append(("step", state.global_step))
        return False

    def on_log(self, state) -> None:
        self.calls.append(("log", state.global_step))


def tiny_loop(epochs: int) -> TrainingLoop:
    model = paddle.nn.Linear(2, 1)
    optimizer = paddle.optimizer.SGD(learning_rate=0.1, parameters=model.parameters())
    batches = FixedBatches([paddle.ones([4, 2]), paddle.zeros([4, 2])])

    def train_step(batch, backward):
        loss = model(batch).mean()
        backward(loss)
        return loss

    return TrainingLoop(model, batches, train_step, optimizer, None, 2 * epochs,
                        log_line=lambda state: f"step {state.global_step}", logging_steps=2)


def test_callbacks_run_in_order_with_the_function_hooks_after_them():
    calls = []
    loop = tiny_loop(epochs=2)
    state = loop.run(on_step_end=lambda state: calls.append(("function", state.global_step)) and False,
                     callbacks=[Recorder(calls), Scripted([0.5, 0.6], calls)])
    assert state.global_step == 4 and state.epoch == 2
    assert calls[:5] == [("step", 1), ("function", 1), ("log", 2), ("step", 2), ("function", 2)]
    assert [call for call in calls if call[0] == "evaluate"] == [("evaluate", 1), ("evaluate", 2)]


def test_best_checkpoint_saves_on_improvement_and_early_stopping_ends_after_the_patience(caplog):
    calls, saved = [], []
    loop = tiny_loop(epochs=10)
    best = BestCheckpoint(lambda: saved.append(len(calls)))
    state = loop.run(callbacks=[Scripted([0.5, 0.6, 0.6, 0.55, 0.9], calls), best, EarlyStopping(loop, best, 2)])
    assert state.epoch == 4  # epochs 3 and 4 did not beat epoch 2: stopped before epoch 5
    assert "Early stop!" in caplog.text and "Current best macro f1 score: 0.60000" in caplog.text
    assert len(saved) == 2 and best.epochs_since_best == 2
    assert best.best == {"macro_f1": 0.6, "micro_f1": 0.7, "epoch": 2, "global_step": 4}


def test_a_resumed_best_checkpoint_keeps_its_record_and_counter():
    loop = tiny_loop(epochs=3)
    best = BestCheckpoint(None, {"macro_f1": 0.8, "micro_f1": 0.85, "epoch": 1, "global_step": 2}, epochs_since_best=1)
    loop.run(callbacks=[Scripted([0.7, 0.7, 0.7], []), best, EarlyStopping(loop, best, 2)])
    assert best.best["epoch"] == 1 and loop.stop_requested  # one more epoch without gain reached the patience
