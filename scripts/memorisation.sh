#!/usr/bin/env bash
# The memorisation experiment of issue 7: over-train an LDM on a few phantom
# patients until it reproduces its training images, then check that the
# re-identification filter removes the near-copies and that `audit` reports it.
#
#   scripts/memorisation.sh [WORK_DIR]       (default work/memorisation)
#
# Sizes come from the environment: PATIENTS (phantom patients, 2 images each),
# MEMO_FRACTION (the share of patients in the `val` split the LDM over-trains on),
# LDM_STEPS, PER_PROMPT. Every stage is one `privdistill` command, so each can be
# rerun alone; the audit's `memorised` row is the result.
set -euo pipefail
B=${PRIVDISTILL:-target/release/privdistill}
W=${1:-work/memorisation}
PATIENTS=${PATIENTS:-200}
MEMO_FRACTION=${MEMO_FRACTION:-0.05}
LDM_STEPS=${LDM_STEPS:-800}
PER_PROMPT=${PER_PROMPT:-4}
mkdir -p "$W"
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }

[ -f "$W/real/manifest.jsonl" ] || {
  "$B" data phantom --patients "$PATIENTS" --images-per-patient 2 --seed 3 --out "$W/real"
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
"$B" train-reid --demo --data "$W/real" --out "$W/reid"
"$B" train-align --demo --data "$W/real" --out "$W/align"
"$B" train-retrieval --demo --data "$W/real" --out "$W/retrieval"
stamp "reid, align"
"$B" score --real "$W/real" --synth "$W/synth-memo" --reid "$W/reid" --align "$W/align" \
  --retrieval "$W/retrieval" --prompted-neighbours --out "$W/scores.jsonl"
"$B" filter --scores "$W/scores.jsonl" --synth "$W/synth-memo" --out "$W/filtered"
"$B" audit --demo --data "$W/real" --reid "$W/reid" --synthetic "$W/synth-memo" --scores "$W/scores.jsonl" --out "$W/audit"
stamp "done: $W/audit/audit.md"
