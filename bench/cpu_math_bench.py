"""CPU training speed: MKL's code path on AMD processors (preload.py) and the masked-LM head on masked positions.

Usage: python bench/cpu_math_bench.py --dataset_dir divorce [--presets tiny ernie-3.0-mini-zh] [--rounds 3]

For each scratch model shape (made from the data set's texts by scratch_model.py), a fresh interpreter
per MKL setting times training steps of batch 32 x 128 tokens on one thread:
  - classifier: forward, BCE loss, backward and AdamW step of ErnieForSequenceClassification;
  - masked LM, full head: the head's vocabulary-wide product at every position (ErnieForMaskedLM's
    default), 15% of the tokens predicted;
  - masked LM, masked positions: the head only where a token is predicted (what mlm.py does).
MKL settings: MKL_DEBUG_CPU_TYPE empty (MKL's own choice) and 5 (its AVX2 path, which preload.py picks
on AMD processors with AVX2). The settings alternate in --rounds rounds; each cell is the median step
time over the rounds (each round's value the median of --steps steps after --warmup steps).
"""
import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from benchtools import OUT, ROOT, markdown_table, run_script, save_result

SETTINGS = {"MKL's own choice": "", "AVX2 path (preload.py on AMD)": "5"}
CASES = ("classifier", "masked LM, full head", "masked LM, masked positions")

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--dataset_dir", help="Data set whose texts give the scratch models their vocabulary.")
parser.add_argument("--presets", nargs="+", default=["tiny", "ernie-3.0-mini-zh"])
parser.add_argument("--rounds", type=int, default=3)
parser.add_argument("--steps", type=int, default=8)
parser.add_argument("--warmup", type=int, default=2)
parser.add_argument("--out_dir", default=str(OUT / "cpu_math"))
parser.add_argument("--worker", help=argparse.SUPPRESS)  # a model directory: time its steps, print JSON


def step_times(model_dir: str, steps: int, warmup: int) -> dict[str, float]:
    """Median seconds per training step of each case, in this process (one thread)."""
    import paddle
    from paddlenlp.transformers import ErnieForMaskedLM, ErnieForSequenceClassification

    paddle.set_device("cpu")
    paddle.base.core.set_num_threads(1)
    rng = np.random.default_rng(0)
    classifier = ErnieForSequenceClassification.from_pretrained(model_dir, num_classes=20)
    masked_lm = ErnieForMaskedLM.from_pretrained(model_dir)
    vocab = masked_lm.config.vocab_size
    ids = paddle.to_tensor(rng.integers(5, vocab, (32, 128)))
    chosen = rng.random((32, 128)) < 0.15
    positions = paddle.to_tensor(np.flatnonzero(chosen))
    labels = paddle.to_tensor(np.where(chosen, ids.numpy(), -100))
    targets = paddle.to_tensor(rng.random((32, 20)) < 0.1, dtype="float32")

    def classifier_loss():
        return paddle.nn.functional.binary_cross_entropy_with_logits(classifier(input_ids=ids), targets)

    def full_head_loss():
        logits = masked_lm(input_ids=ids, return_dict=True).logits
        return paddle.nn.functional.cross_entropy(logits.reshape([-1, vocab]), labels.reshape([-1]), ignore_index=-100)

    def masked_positions_loss():
        logits = masked_lm(input_ids=ids, masked_positions=positions, return_dict=True).logits
        return paddle.nn.functional.cross_entropy(logits, labels.reshape([-1])[positions])

    times = {}
    for case, (model, loss_of) in zip(CASES, ((classifier, classifier_loss), (masked_lm, full_head_loss),
                                              (masked_lm, masked_positions_loss))):
        optimizer = paddle.optimizer.AdamW(1e-4, parameters=model.parameters())
        samples = []
        for step in range(warmup + steps):
            started = time.perf_counter()
            loss_of().backward()
            optimizer.step()
            optimizer.clear_grad()
            if step >= warmup:
                samples.append(time.perf_counter() - started)
        times[case] = statistics.median(samples)
    return times


def scratch_models(args: argparse.Namespace) -> dict[str, Path]:
    models = {}
    for preset in args.presets:
        model = Path(args.out_dir) / preset
        if not (model / "model_state.pdparams").is_file():
            run_script("scratch_model.py", "--dataset_dir", args.dataset_dir, "--preset", preset, "--output_dir", model,
                       log=model.parent / f"{preset}.log")
        models[preset] = model
    return models


def measure(args: argparse.Namespace, model: Path, mkl_type: str) -> dict[str, float]:
    """One round of one setting, in a fresh interpreter (MKL reads its setting when it loads)."""
    env = {**os.environ, "MKL_DEBUG_CPU_TYPE": mkl_type, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, __file__, "--worker", str(model), "--steps", str(args.steps), "--warmup",
                             str(args.warmup)], capture_output=True, text=True, env=env, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def report(args: argparse.Namespace, times: dict) -> str:
    rows = []
    for preset, by_setting in times.items():
        mkl_default, avx2 = (by_setting[name] for name in SETTINGS)
        for case in CASES:
            base, fast = (statistics.median(round_[case] for round_ in rounds) for rounds in (mkl_default, avx2))
            rows.append([preset, case, f"{base * 1000:.0f}", f"{fast * 1000:.0f}", f"{base / fast:.2f}"])
        full = statistics.median(r["masked LM, full head"] for r in avx2)
        masked = statistics.median(r["masked LM, masked positions"] for r in avx2)
        rows.append([preset, "masked LM: masked positions vs full head (AVX2 path)", f"{full * 1000:.0f}",
                     f"{masked * 1000:.0f}", f"{full / masked:.2f}"])
    return (f"Training step of batch 32 x 128 tokens on one thread, median over {args.rounds} alternating rounds "
            f"of {args.steps} steps (ms).\n\n" + markdown_table(
                ["model", "case", "MKL's own choice (ms)", "AVX2 path (ms)", "speed-up"], rows))


def main() -> None:
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(step_times(args.worker, args.steps, args.warmup)))
        return
    models = scratch_models(args)
    times = {preset: {name: [] for name in SETTINGS} for preset in models}
    for _ in range(args.rounds):
        for preset, model in models.items():
            for name, mkl_type in SETTINGS.items():
                times[preset][name].append(measure(args, model, mkl_type))
    save_result("cpu_math", report(args, times))


if __name__ == "__main__":
    main()
