#!/usr/bin/env bash
# Execute notebooks/analysis.ipynb headless and check the figures it saves.
#
#   bash notebooks/run_notebook.sh            # runs the three science experiments with --quick
#                                             # into a temporary directory, then the notebook
#   ENGRAM_RUNS_DIR=runs bash notebooks/run_notebook.sh   # the notebook on existing outputs
#
# The Python packages (notebooks/requirements.txt) go into a virtual environment that outlives
# the clone: $ENGRAM_NOTEBOOK_VENV, default ~/.cache/engram-notebook-venv.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${ENGRAM_NOTEBOOK_VENV:-$HOME/.cache/engram-notebook-venv}"
if [ ! -x "$venv/bin/jupyter" ] || ! cmp -s notebooks/requirements.txt "$venv/requirements.txt"; then
    echo "notebook: installing notebooks/requirements.txt into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r notebooks/requirements.txt
    cp notebooks/requirements.txt "$venv/requirements.txt"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if [ -z "${ENGRAM_RUNS_DIR:-}" ]; then
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/engram-target}"
    cargo build --quiet --bin exp_scaling --bin exp_allocation --bin exp_ablation
    export ENGRAM_RUNS_DIR="$work/runs"
    for exp in exp_scaling exp_allocation exp_ablation; do
        echo "notebook: $exp --quick"
        "$CARGO_TARGET_DIR/debug/$exp" --quick --no-progress --out "$ENGRAM_RUNS_DIR/$exp-quick" > "$work/$exp.log" 2>&1 \
            || { cat "$work/$exp.log"; exit 1; }
    done
fi
export ENGRAM_NOTEBOOK_OUT="${ENGRAM_NOTEBOOK_OUT:-$work/figures}"
# Absolute paths: Jupyter runs the notebook in notebooks/.
ENGRAM_RUNS_DIR="$(realpath "$ENGRAM_RUNS_DIR")"
ENGRAM_NOTEBOOK_OUT="$(realpath -m "$ENGRAM_NOTEBOOK_OUT")"
export ENGRAM_RUNS_DIR ENGRAM_NOTEBOOK_OUT
export MPLBACKEND=Agg

"$venv/bin/jupyter" nbconvert --to notebook --execute \
    --ExecutePreprocessor.timeout=300 --ExecutePreprocessor.kernel_name=python3 \
    --output-dir "$work" --output executed.ipynb notebooks/analysis.ipynb

missing=0
for fig in scaling_loss_vs_slots allocation_u_curve ablation_deltas paired_learning_curves memory_off_gap_vs_slots; do
    if [ ! -s "$ENGRAM_NOTEBOOK_OUT/$fig.png" ]; then
        echo "notebook: missing figure $fig.png" >&2
        missing=$((missing + 1))
    fi
done
if [ "$missing" -ne 0 ]; then
    exit 1
fi
echo "notebook: analysis.ipynb executed; 5 figures in $ENGRAM_NOTEBOOK_OUT"
