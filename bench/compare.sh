#!/usr/bin/env bash
# Time attnflow against PyTorch, JAX and diffrax on the same data and initial weights.
#
# Usage: bench/compare.sh [--repeats K] [--core N] [--theory-m M] [--cases LIST] [--help]
#
# Cases (LIST is a comma-separated subset of gd,flow,theory; default all three):
#   gd      the paper's experiment: gradient descent, eta = 0.01, 30000 steps;
#           attnflow (parameter engine) against PyTorch eager and a jit-compiled JAX loop
#   flow    gradient flow of the same setup to t = 300 and to t = 1e5 by Dormand-Prince
#           5(4) with rtol 1e-8, atol 1e-12; both attnflow engines against diffrax
#   theory  the theory preset (width M, default 1024) by gradient flow to t = 280;
#           the reduced engine (and the parameter engine) against diffrax
#
# The flow cases run attnflow with controller = "integral", the step-size rule of diffrax's
# default PIDController, so that both sides use the same method, tolerances and rule. The
# flow case also times the parameter engine with attnflow's default PI rule.
#
# Every process runs pinned to core N (default 0) by taskset, with one thread. The Python
# times cover the compiled loop only (no imports, loading or compilation); the attnflow
# times cover the whole run (`wall_seconds` of summary.json, and the CPU time of the
# process), so they also include building the dataset, recording observables and writing
# the run folder. Both wall-clock and CPU seconds are reported, since CPU seconds suffer
# less from other load on the machine. A third column compares like with like: the
# `solve_seconds` of summary.json (wall-clock time of the gradient steps, solver calls and
# T1 location only) against the wall-clock time of the baseline's compiled loop. Each time
# is the median of K runs (default 1). The flow cases run each side at least 15 times,
# because their runs take under a second and a short burst of load on a shared host moved
# a median of 3 runs by 30%.
# Final losses agree when their relative difference is at most 1e-6.
#
# The Python packages come from bench/requirements.txt. The script creates bench/.venv with
# them on first use (about 6 GB, because the PyPI torch wheel brings CUDA libraries); set
# ATTNFLOW_BENCH_VENV to use an existing virtual environment instead. Not run in CI.
set -euo pipefail

bench_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_dir="$(dirname "$bench_dir")"

repeats=1
flow_min_repeats=15
core=0
theory_m=1024
cases="gd,flow,theory"
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h | --help)
            # The usage is the comment block at the top of this file.
            sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        --repeats | --core | --theory-m | --cases) ;;
        *)
            echo "error: unknown option '$1'; run $0 --help for the options" >&2
            exit 2
            ;;
    esac
    if [[ $# -lt 2 ]]; then
        echo "error: option $1 needs a value; run $0 --help for the options" >&2
        exit 2
    fi
    case "$1" in
        --repeats) repeats="$2" ;;
        --core) core="$2" ;;
        --theory-m) theory_m="$2" ;;
        --cases) cases="$2" ;;
    esac
    shift 2
done
if [[ ! "$repeats" =~ ^[1-9][0-9]*$ ]]; then
    echo "error: --repeats must be a positive integer, got '$repeats'" >&2
    exit 2
fi
if [[ ! "$core" =~ ^[0-9]+$ ]]; then
    echo "error: --core must be a CPU number such as 0, got '$core'" >&2
    exit 2
fi
if [[ ! "$theory_m" =~ ^[1-9][0-9]*$ ]]; then
    echo "error: --theory-m must be a positive integer width, got '$theory_m'" >&2
    exit 2
fi
IFS=, read -ra requested <<< "$cases"
if [[ ${#requested[@]} -eq 0 ]]; then
    echo "error: --cases is empty; give a comma-separated subset of gd,flow,theory" >&2
    exit 2
fi
for requested_case in "${requested[@]}"; do
    if [[ "$requested_case" != gd && "$requested_case" != flow && "$requested_case" != theory ]]; then
        echo "error: unknown case '$requested_case' in --cases '$cases'; the cases are gd, flow and theory" >&2
        exit 2
    fi
done

venv="${ATTNFLOW_BENCH_VENV:-$bench_dir/.venv}"
if [[ ! -x "$venv/bin/python" ]]; then
    echo "creating $venv from bench/requirements.txt (large download)" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet -r "$bench_dir/requirements.txt"
fi
python="$venv/bin/python"

export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 RAYON_NUM_THREADS=1
pinned=(taskset -c "$core")
# Number of timed runs on each side of a case. Each case sets it before it starts.
runs="$repeats"

echo "building attnflow (release)" >&2
cargo build --release --quiet --manifest-path "$repo_dir/Cargo.toml"
attnflow="$repo_dir/target/release/attnflow"

work="$(mktemp -d "${TMPDIR:-/tmp}/attnflow-compare.XXXXXX")"
trap 'rm -rf "$work"' EXIT
results="$work/results.jsonl"

# Writes a copy of a preset with [train] replaced by the given lines and `points` output
# times. Usage: derive_config SOURCE TARGET POINTS TRAIN_LINES...
derive_config() {
    local source="$1" target="$2" points="$3"
    shift 3
    "$python" - "$source" "$target" "$points" "$@" <<'EOF'
import re, sys
source, target, points, *train = sys.argv[1:]
text = open(source).read()
text = re.sub(r"\[train\][^\[]*", "[train]\n" + "\n".join(train) + "\n\n", text)
text = re.sub(r"(?m)^points = .*$", f"points = {points}", text)
open(target, "w").write(text)
EOF
}

# Runs attnflow $runs times; appends {"case", "framework", "seconds_all", "cpu_seconds_all",
# "solve_seconds_all", "final_loss"}. Wall and solve seconds are summary.json's
# wall_seconds and solve_seconds; CPU seconds are the user plus system time of the whole
# process. Usage: time_attnflow CASE LABEL CONFIG INPUT_DIR [ARGS...]
time_attnflow() {
    local case_name="$1" label="$2" config="$3" inputs="$4"
    shift 4
    "$python" - "$case_name" "$label" "$runs" "$work/run" "$results" \
        "${pinned[@]}" "$attnflow" run "$config" --out "$work/run" --quiet --no-save-inputs \
        --dataset "$inputs/dataset.npz" --init-weights "$inputs/init_weights.npz" "$@" <<'PYTHON'
import json, os, resource, shutil, subprocess, sys
case, label, repeats, run_dir, results, *command = sys.argv[1:]
wall, cpu, solve = [], [], []
for _ in range(int(repeats)):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    summary = json.load(open(os.path.join(run_dir, "summary.json")))
    wall.append(summary["wall_seconds"])
    solve.append(summary["solve_seconds"])
    shutil.rmtree(run_dir)
row = {"case": case, "framework": label, "seconds_all": wall, "cpu_seconds_all": cpu,
       "solve_seconds_all": solve, "final_loss": summary["final_loss"]}
with open(results, "a") as out:
    out.write(json.dumps(row) + "\n")
PYTHON
}

# Runs a baseline script once with $runs timed repeats; appends its JSON line with the case.
# Usage: time_baseline CASE SCRIPT INPUT_DIR [ARGS...]
time_baseline() {
    local case_name="$1" script="$2" inputs="$3"
    shift 3
    "${pinned[@]}" "$python" "$bench_dir/$script" --dataset "$inputs/dataset.npz" \
        --init "$inputs/init_weights.npz" --threads 1 --repeats "$runs" "$@" \
        | "$python" -c 'import json,sys; r=json.loads(sys.stdin.readline()); r["case"]=sys.argv[1]; print(json.dumps(r))' "$case_name" \
        >> "$results"
}

has_case() {
    [[ ",$cases," == *",$1,"* ]]
}

paper="$repo_dir/experiments/paper-figure1.toml"
"$attnflow" init "$paper" --out "$work/paper" > /dev/null

if has_case gd; then
    runs="$repeats"
    echo "case gd: gradient descent, 30000 steps, $runs timed runs per program" >&2
    time_attnflow gd attnflow "$paper" "$work/paper"
    time_baseline gd jax_gd.py "$work/paper" --eta 0.01 --steps 30000
    time_baseline gd torch_gd.py "$work/paper" --eta 0.01 --steps 30000
fi

if has_case flow; then
    runs=$((repeats > flow_min_repeats ? repeats : flow_min_repeats))
    for t_end in 300 1e5; do
        echo "case flow: Dormand-Prince 5(4) to t = $t_end, $runs timed runs per program" >&2
        config="$work/flow-$t_end.toml"
        derive_config "$paper" "$config" 10 'engine = "parameter"' 'integrator = "dopri5"' \
            'rtol = 1e-8' 'atol = 1e-12' 'controller = "integral"' "t_end = $t_end"
        sed 's/^controller = .*/controller = "pi"/' "$config" > "$config.pi"
        time_attnflow "flow-t$t_end" attnflow-parameter "$config" "$work/paper"
        time_attnflow "flow-t$t_end" attnflow-reduced "$config" "$work/paper" --engine reduced
        time_attnflow "flow-t$t_end" attnflow-parameter-pi "$config.pi" "$work/paper"
        time_baseline "flow-t$t_end" diffrax_flow.py "$work/paper" --t-end "$t_end" \
            --rtol 1e-8 --atol 1e-12
    done
fi

if has_case theory; then
    runs="$repeats"
    echo "case theory: width m = $theory_m, gradient flow to t = 280, $runs timed runs per program" >&2
    theory="$work/theory.toml"
    # The preset draws its reduced state from the Wishart law, which has no weights for the
    # baselines. Drawing weights and reducing them gives the same law.
    sed -e "s/^m = .*/m = $theory_m/" -e 's/^reduced_from = .*/reduced_from = "parameters"/' \
        "$repo_dir/experiments/theory.toml" > "$theory.source"
    derive_config "$theory.source" "$theory" 10 'engine = "reduced"' 'integrator = "dopri5"' \
        'rtol = 1e-8' 'atol = 1e-12' 'controller = "integral"' 't_end = 280'
    "$attnflow" init "$theory" --out "$work/theory" > /dev/null
    time_attnflow theory attnflow-reduced "$theory" "$work/theory"
    time_attnflow theory attnflow-parameter "$theory" "$work/theory" --engine parameter
    time_baseline theory diffrax_flow.py "$work/theory" --t-end 280 --rtol 1e-8 --atol 1e-12
fi

# One table row per (case, baseline, attnflow run): median wall, CPU and solve seconds
# against the baseline's wall, CPU and wall seconds, the ratios, and whether the final
# losses agree to 1e-6 relative.
"$python" - "$results" <<'EOF'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print(f"{'case':<10} {'baseline':<15} {'attnflow':<21} {'wall s':>15} {'wall x':>7} "
      f"{'CPU s':>15} {'CPU x':>7} {'solve s':>15} {'solve x':>7}  final losses")
for case in dict.fromkeys(row["case"] for row in rows):
    ours = [r for r in rows if r["case"] == case and r["framework"].startswith("attnflow")]
    others = [r for r in rows if r["case"] == case and not r["framework"].startswith("attnflow")]
    for other in others:
        other_wall = statistics.median(other["seconds_all"])
        other_cpu = statistics.median(other["cpu_seconds_all"])
        for mine in ours:
            wall = statistics.median(mine["seconds_all"])
            cpu = statistics.median(mine["cpu_seconds_all"])
            solve = statistics.median(mine["solve_seconds_all"])
            gap = abs(mine["final_loss"] - other["final_loss"]) / abs(other["final_loss"])
            verdict = "agree" if gap <= 1e-6 else "DIFFER"
            print(f"{case:<10} {other['framework']:<15} {mine['framework']:<21} "
                  f"{wall:6.3f} /{other_wall:7.3f} {other_wall / wall:6.1f}x "
                  f"{cpu:6.3f} /{other_cpu:7.3f} {other_cpu / cpu:6.1f}x "
                  f"{solve:6.3f} /{other_wall:7.3f} {other_wall / solve:6.1f}x  "
                  f"{mine['final_loss']:.9e} / {other['final_loss']:.9e} "
                  f"({verdict}, relative gap {gap:.1e})")
EOF
