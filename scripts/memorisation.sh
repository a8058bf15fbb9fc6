#!/usr/bin/env bash
# The memorisation experiment of issue 7: over-train an LDM on a few phantom
# patients until it reproduces its training images, then check that the
# filter (s_reid ≥ δ, and the copy gate) removes the near-copies and that `audit` reports it.
#
#   scripts/memorisation.sh [WORK_DIR]       (default work/memorisation)
#
# Sizes come from the environment: SEED (the phantom patients' seed, default 3), PATIENTS (phantom patients, 2 images each),
# MEMO_FRACTION (the share of patients in the `val` split the LDM over-trains on),
# LDM_STEPS, PER_PROMPT, SCORER_PATIENTS (phantom patients of another seed, 3 images
# each, that the re-identification and retrieval nets learn on). Every stage is one `privdistill` command, so each can be
# rerun alone (finished scorer nets are kept); the audit's near-copy table is the result.
set -euo pipefail
B=${PRIVDISTILL:-target/release/privdistill}
W=${1:-work/memorisation}
SEED=${SEED:-3}
PATIENTS=${PATIENTS:-200}
MEMO_FRACTION=${MEMO_FRACTION:-0.05}
LDM_STEPS=${LDM_STEPS:-800}
PER_PROMPT=${PER_PROMPT:-4}
SCORER_PATIENTS=${SCORER_PATIENTS:-800}
mkdir -p "$W"
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }

[ -f "$W/real/manifest.jsonl" ] || {
  "$B" data phantom --patients "$PATIENTS" --images-per-patient 2 --seed "$SEED" --out "$W/real"
  "$B" data split "$W/real" --val "$MEMO_FRACTION" --test 0.15 --seed 0
}
stamp "phantom data ready"
"$B" train-vae --demo --set data="$W/real" --set out="$W/vae" --set 'splits=["train"]'
stamp "vae"
# Over-training: the val split only, many epochs, no EMA, constant rate.
"$B" train-ldm --demo --set data="$W/real" --set vae="$W/vae" --set out="$W/ldm-memo" \
  --set 'splits=["val"]' --set steps="$LDM_STEPS" --set cfg_dropout=0.0 --set checkpoint_every=200 --resume
stamp "ldm over-trained"
"$B" sample --model "$W/ldm-memo" --prompts "$W/real" --splits val --out "$W/synth-memo" \
  --per-prompt "$PER_PROMPT" --guidance-scale 2 --steps 25 --sampler ddim
stamp "sampled"
# The re-identification and retrieval nets learn on other phantom patients (another seed),
# as the paper's re-identification net learned on another dataset: they only compare images.
[ -f "$W/scorer-data/manifest.jsonl" ] || {
  "$B" data phantom --patients "$SCORER_PATIENTS" --images-per-patient 3 --seed 11 --out "$W/scorer-data"
  "$B" data split "$W/scorer-data" --val 0.1 --test 0.1 --seed 0
}
[ -f "$W/reid/model.safetensors" ] || "$B" train-reid --demo --data "$W/scorer-data" --out "$W/reid" \
  --set negatives_per_epoch=2048 --set max_epochs=16 --set patience=4 \
  --set copy_positives=0.5 --set max_blur_sigma=1.5 --set max_brightness=0.15 --set max_contrast=0.3
[ -f "$W/retrieval/model.safetensors" ] || "$B" train-retrieval --demo --data "$W/scorer-data" --out "$W/retrieval"
[ -f "$W/align/model.safetensors" ] || "$B" train-align --demo --data "$W/real" --out "$W/align"
stamp "reid, retrieval, align"
"$B" score --real "$W/real" --synth "$W/synth-memo" --reid "$W/reid" --align "$W/align" \
  --retrieval "$W/retrieval" --prompted-neighbours --neighbours 10 --out "$W/scores.jsonl"
"$B" filter --scores "$W/scores.jsonl" --synth "$W/synth-memo" --out "$W/filtered"
"$B" audit --demo --data "$W/real" --reid "$W/reid" --synthetic "$W/synth-memo" --scores "$W/scores.jsonl" --out "$W/audit"
stamp "done: $W/audit/audit.md"
