#!/usr/bin/env bash
# The joint-attention study of a Flux-shaped tiny model, as one resumable command per phase:
#
#   bash benchmarks/shapesbench/flux_study.sh choices  MODEL DIR   # the readings, on noise seed 1
#   bash benchmarks/shapesbench/flux_study.sh evidence MODEL DIR   # the methods, on the benchmark's noise
#
# choices: every reading of results/flux_choices/PROTOCOL.md (blocks, map rule, strength; the
#   11 two-subject prompts naming both colours, 8 seeds, noise seed 1) and their grounding on
#   seed-1 scenes, then compare.md. DIR/<reading>/ per row.
# evidence: at the chosen settings (LAYERS, JOINT_MAP, STRENGTH; defaults: the node's), all 34
#   two-subject prompts x 8 seeds on noise seed 0 for AI-T2I, its two ablations,
#   Attend-and-Excite, Divide & Bind and A-STAR (vanilla: VANILLA, the targets' two-subject run
#   of the same file, paired by digest), grounding before and after guidance, the layout run,
#   then compare.md.
#
# Runs go two at a time (LANES, default 2), one CPU thread each. Each run resumes: a rerun
# skips what its folder already holds, so an interrupted phase is finished by running it again.
set -u
phase=${1:?choices or evidence}
MODEL=${2:?the model file}
DIR=${3:?the output folder}
cd "$(dirname "$0")/../.." || exit 1
PY=${PYTHON:-.venv/bin/python}
LANES=${LANES:-2}
mkdir -p "$DIR"
LOG="$DIR/study.log"

# The runs of a phase, one command per line; `lanes` runs them LANES at a time.
runs=()
lanes() {
  local rc=0
  for cmd in "${runs[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$LANES" ]; do wait -n || rc=1; done
    echo "$(date +%T) start: $cmd" >> "$LOG"
    bash -c "$cmd" >> "$LOG" 2>&1 &
  done
  while [ "$(jobs -rp | wc -l)" -gt 0 ]; do wait -n || rc=1; done
  echo "$(date +%T) done (any failure: $rc)" >> "$LOG"
  return $rc
}

R="$PY benchmarks/shapesbench/run.py --model $MODEL --seeds 8 --threads 1"
case $phase in
choices)
  P=15,16,17,18,20,22,23,24,26,28,29
  RC="$R --prompts $P --noise-seed 1"
  runs=(
    "$RC --methods vanilla --out $DIR/vanilla"
    "$RC --methods ai_t2i --layers joint --out $DIR/blocks_joint"
    "$RC --methods ai_t2i --layers joint+single --out $DIR/blocks_joint_single"
    "$RC --methods ai_t2i --layers 'joint early' --out $DIR/blocks_joint_early"
    "$RC --methods ai_t2i --layers 'joint middle' --out $DIR/blocks_joint_middle"
    "$RC --methods ai_t2i --layers 'joint late' --out $DIR/blocks_joint_late"
    "$RC --methods ai_t2i --layers joint --joint-map 'text softmax' --out $DIR/rules_text_softmax"
    "$RC --methods ai_t2i --layers joint --joint-map 'sharpened joint softmax' --out $DIR/rules_sharpened"
    "$RC --methods ai_t2i --layers joint --strength 0.25 --out $DIR/strength_0.25"
    "$RC --methods ai_t2i --layers joint --strength 0.5 --out $DIR/strength_0.5"
    "$RC --methods ai_t2i --layers joint --strength 2 --out $DIR/strength_2"
    "$RC --methods ai_t2i --layers joint --strength 4 --out $DIR/strength_4"
    "$PY benchmarks/shapesbench/grounding.py --model $MODEL --seed 1 --scenes 48 --layers 'joint,joint+single,joint early,joint middle,joint late,joint@text softmax,joint@sharpened joint softmax' --out $DIR/grounding_seed1"
  )
  lanes
  # every reading against vanilla and against the plain reading (every joint block, joint softmax, strength 1)
  $PY benchmarks/shapesbench/compare.py "$DIR"/vanilla "$DIR"/blocks_* "$DIR"/rules_* "$DIR"/strength_* \
    --baseline vanilla --baseline "ai_t2i layers joint" --out "$DIR/compare.md" >> "$LOG" 2>&1
  ;;
evidence)
  LAYERS=${LAYERS:-joint}
  JOINT_MAP=${JOINT_MAP:-sharpened joint softmax}
  STRENGTH=${STRENGTH:-1}
  VANILLA=${VANILLA:?the targets two-subject run of MODEL, e.g. results/targets/NAME/two}
  RE="$R --noise-seed 0 --layers '$LAYERS' --joint-map '$JOINT_MAP' --strength $STRENGTH"
  runs=(
    "$RE --methods ai_t2i --out $DIR/ai_t2i"
    "$RE --methods attend_and_excite --out $DIR/attend_and_excite"
    "$RE --methods aggregation_only --out $DIR/aggregation_only"
    "$RE --methods isolation_only --out $DIR/isolation_only"
    "$RE --methods divide_and_bind --out $DIR/divide_and_bind"
    "$RE --methods a_star --out $DIR/a_star"
    "$PY benchmarks/shapesbench/grounding.py --model $MODEL --seed 0 --scenes 48 --methods vanilla,ai_t2i --sample-layers '$LAYERS' --sample-strength $STRENGTH --sample-joint-map '$JOINT_MAP' --layers '$LAYERS' --out $DIR/grounding"
    "OMP_NUM_THREADS=1 $PY benchmarks/shapesbench/layout.py --model $MODEL --out $DIR/layout --seeds 8 --strengths $STRENGTH"
  )
  lanes
  $PY benchmarks/shapesbench/compare.py "$VANILLA" "$DIR"/ai_t2i "$DIR"/attend_and_excite "$DIR"/aggregation_only \
    "$DIR"/isolation_only "$DIR"/divide_and_bind "$DIR"/a_star --baseline vanilla --baseline attend_and_excite \
    --out "$DIR/compare.md" >> "$LOG" 2>&1
  ;;
*)
  echo "unknown phase $phase: choices or evidence" >&2
  exit 2
  ;;
esac
