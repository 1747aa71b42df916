#!/usr/bin/env bash
# Rebuilds every figure in figures/ from the experiment configs, from scratch.
#
# For each of experiments/paper-figure1.toml and experiments/theory.toml it runs the
# experiment with the release binary into runs/figures/NAME, adds the theory predictions with
# `attnflow check`, and draws figures/NAME/*.png and *.svg with `attnflow plot`. When
# experiments/width-scaling.toml exists it also runs that sweep and draws
# figures/width-scaling/ with `attnflow plot-sweep`.
#
# Usage: scripts/regenerate-figures.sh    (from anywhere; set RUNS_DIR to keep runs elsewhere)
set -euo pipefail

cd "$(dirname "$0")/.."
runs_dir=${RUNS_DIR:-runs/figures}
bin=target/release/attnflow

cargo build --release --quiet

# Remove the old figures so that nothing stale survives, but keep figures/README.md.
rm -rf figures/paper-figure1 figures/theory figures/width-scaling

# The sweep, when there is one, runs in the background so that its wall time overlaps with
# the two single runs. It is stopped if this script ends early.
sweep_pid=
trap 'if [ -n "$sweep_pid" ]; then kill "$sweep_pid" 2>/dev/null || true; fi' EXIT
if [ -f experiments/width-scaling.toml ]; then
    sweep="$runs_dir/width-scaling"
    rm -rf "$sweep"
    mkdir -p "$runs_dir"
    echo "== width-scaling: running the sweep experiments/width-scaling.toml (log in $sweep.log)"
    "$bin" sweep experiments/width-scaling.toml --out "$sweep" --quiet >"$sweep.log" 2>&1 &
    sweep_pid=$!
else
    echo "skipping figures/width-scaling: experiments/width-scaling.toml not found"
fi

for name in paper-figure1 theory; do
    run="$runs_dir/$name"
    rm -rf "$run"
    echo "== $name: running experiments/$name.toml"
    "$bin" run "experiments/$name.toml" --out "$run" --quiet --no-save-inputs

    # Keep going if check fails (for example when the frozen-attention baseline cannot be
    # integrated), because the run can still be drawn. `attnflow plot` then notes that
    # predictions.csv is missing.
    if ! "$bin" check "$run"; then
        echo "warning: attnflow check $run exited with an error; see its output above"
    fi

    "$bin" plot "$run" --out "figures/$name"
done

if [ -n "$sweep_pid" ]; then
    sweep_status=0
    wait "$sweep_pid" || sweep_status=$?
    sweep_pid=
    if [ "$sweep_status" -ne 0 ]; then
        cat "$sweep.log"
        echo "error: attnflow sweep failed with exit code $sweep_status; its output is above" >&2
        exit 1
    fi
    "$bin" plot-sweep "$sweep/runs.csv" --out figures/width-scaling
fi

echo "figures written to figures/"
