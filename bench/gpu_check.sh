#!/usr/bin/env bash
# Exercise every --device gpu path of the suite on one GPU machine and print one line per path:
# "ok", "skipped (why)" or "failed (the last error line)". Meant for users' GPU boxes: no GPU with
# Paddle is reachable where this suite is developed, so this script has not run there.
#
# Set-up (README 2.1), from a fresh clone on a machine with a CUDA GPU:
#   make venv
#   .venv/bin/pip uninstall -y paddlepaddle onnxruntime
#   .venv/bin/pip install paddlepaddle-gpu==3.3.1 onnxruntime-gpu==1.31.1   # the build matching your CUDA
#   bash bench/gpu_check.sh            # about 5-8 minutes on one card; logs in gpu_check_out/
#
# The model is a tiny scratch model made from data/ (no download), trained for a few epochs: the
# check is about every code path running on the GPU, not about accuracy.
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-gpu_check_out}
export PYTHONWARNINGS=ignore
rm -rf "$OUT" && mkdir -p "$OUT"
FAILED=0
PIDS=()
trap 'for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done' EXIT

report() {  # report NAME STATUS LOG
    local name=$1 status=$2 log=$3
    if [ "$status" -eq 0 ]; then
        printf '%-44s ok\n' "$name"
    else
        FAILED=$((FAILED + 1))
        printf '%-44s failed (%s; log: %s)\n' "$name" \
            "$(grep -E 'Error|error|ERROR|Traceback|failed' "$log" | tail -1 | cut -c1-160)" "$log"
    fi
}

check() {  # check NAME COMMAND...: run it with a time limit, log to $OUT/NAME.log
    local name=$1 log="$OUT/$1.log"
    shift
    timeout 600 "$@" >"$log" 2>&1
    report "$name" $? "$log"
}

skip() { printf '%-44s skipped (%s)\n' "$1" "$2"; }

CARDS=$(nvidia-smi -L 2>/dev/null | wc -l)
check gpu_paddle "$PY" -c "import paddle; assert paddle.device.is_compiled_with_cuda(), 'paddlepaddle is the CPU build'; paddle.utils.run_check()"
check scratch_model "$PY" scratch_model.py --dataset_dir data --output_dir "$OUT/scratch" --preset tiny

TRAIN=(train.py --device gpu --dataset_dir data --model_name "$OUT/scratch" --batch_size 16 --learning_rate 1e-3
       --warmup_steps 30 --epochs 3 --logging_steps 20)
check train_fp32 "$PY" "${TRAIN[@]}" --save_dir "$OUT/checkpoint" --tune_thresholds
check train_amp_fp16_save_last "$PY" "${TRAIN[@]}" --save_dir "$OUT/checkpoint_fp16" --amp fp16 --save_last \
    --gradient_accumulation_steps 2
check train_resume_fp16 "$PY" "${TRAIN[@]}" --save_dir "$OUT/checkpoint_fp16" --amp fp16 --save_last \
    --gradient_accumulation_steps 2 --resume_from_checkpoint "$OUT/checkpoint_fp16"
if "$PY" -c "import paddle, sys; sys.exit(0 if paddle.amp.is_bfloat16_supported() else 1)" 2>/dev/null; then
    check train_amp_bf16 "$PY" "${TRAIN[@]}" --save_dir "$OUT/checkpoint_bf16" --amp bf16
else
    skip train_amp_bf16 "this GPU has no bfloat16 support"
fi
if [ "$CARDS" -ge 2 ]; then
    check train_two_cards "$PY" -m paddle.distributed.launch --gpus 0,1 --log_dir "$OUT/log_two_cards" \
        "${TRAIN[@]}" --save_dir "$OUT/checkpoint_two_cards"
else
    skip train_two_cards "one card"
fi

check predict "$PY" predict.py --device gpu --dataset_dir data --params_path "$OUT/checkpoint" \
    --output_file "$OUT/output.txt"
check export_model "$PY" export_model.py --params_path "$OUT/checkpoint" --output_path "$OUT/export" --dataset_dir data
for backend in onnxruntime paddle; do
    for precision in fp32 fp16; do
        flag=()
        [ "$precision" = fp16 ] && flag=(--use_fp16)
        check "infer_${backend}_${precision}" "$PY" deploy/predictor/infer.py --device gpu --backend "$backend" \
            "${flag[@]}" --model_path_prefix "$OUT/export/float32" --dataset_dir data --perf \
            --output_file "$OUT/infer_${backend}_${precision}.txt"
    done
done
check prune "$PY" prune.py --device gpu --dataset_dir data --params_dir "$OUT/checkpoint" --output_dir "$OUT/prune" \
    --learning_rate 1e-4 --per_device_train_batch_size 16 --num_train_epochs 1 --logging_steps 30 --save_steps 30 \
    --width_mult_list '3/4' --amp fp16

check scratch_mlm "$PY" scratch_model.py --dataset_dir data --output_dir "$OUT/scratch_mlm" --preset tiny \
    --mlm_epochs 2
check few_shot_train bash -c "cd few-shot && '$PWD/$PY' train.py --device gpu --data_dir ./data \
    --output_dir '$PWD/$OUT/few_shot' --prompt '这句话包含的要素有' --model_name_or_path '$PWD/$OUT/scratch_mlm' \
    --max_seq_length 128 --learning_rate 1e-3 --ppt_learning_rate 1e-2 --do_train --do_eval --do_export \
    --num_train_epochs 2 --logging_steps 5 --save_total_limit 1 --per_device_train_batch_size 8 \
    --evaluation_strategy epoch --save_strategy epoch"
check few_shot_infer_fp16 "$PY" few-shot/infer.py --device gpu --use_fp16 \
    --model_path_prefix "$OUT/few_shot/export/model" --data_dir few-shot/data --output_file "$OUT/few_shot_output.txt"

check triton_build_repo "$PY" deploy/triton_serving/build_repo.py --export_dir "$OUT/export" \
    --output_dir "$OUT/models" --platform onnxruntime --device gpu
"$PY" deploy/triton_serving/run_server.py --model_repository "$OUT/models" --http_port 18000 --grpc_port 18001 \
    >"$OUT/triton_server.log" 2>&1 &
PIDS+=($!)
check triton_gpu_request "$PY" deploy/triton_serving/seqcls_grpc_client.py --url 127.0.0.1:18001 --wait 240

echo "$FAILED path(s) failed; logs in $OUT/"
exit $((FAILED > 0))
