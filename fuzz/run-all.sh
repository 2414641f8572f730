#!/usr/bin/env bash
# Runs every fuzz target (or those named) one after the other and prints,
# per target, its executions and exec/s. Usage, from anywhere:
#
#   fuzz/run-all.sh 60                       # 60 s per target
#   fuzz/run-all.sh runs=10000000 log_ops    # 10 M executions of one target
#   SANITIZER=none fuzz/run-all.sh 3600      # without AddressSanitizer
#   MAX_LEN=128 fuzz/run-all.sh 60 log_ops   # inputs of at most 128 bytes
#
# New inputs go to fuzz/work/<target>/ (ignored by git); the committed
# corpus fuzz/corpus/<target>/ is read, never written. Crashes are saved by
# libFuzzer as fuzz/artifacts/<target>/crash-*. Builds with -O
# (release, no debug assertions) and AddressSanitizer unless SANITIZER says
# otherwise; runs with -detect_leaks=0, since the lock table's epoch-deferred
# frees and the harnesses' once-built templates otherwise make libFuzzer run
# a full leak scan after nearly every input (a 3-4x slowdown, no finding).
set -euo pipefail
cd "$(dirname "$0")"
limit=${1:-60}
shift || true
targets=("$@")
if [ $# -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
case "$limit" in
    runs=*) budget="-runs=${limit#runs=}" ;;
    *) budget="-max_total_time=$limit" ;;
esac
sanitizer=${SANITIZER:-address}
# libFuzzer's own default when unset: the corpus's longest input, at least 4096.
max_len=()
if [ -n "${MAX_LEN:-}" ]; then
    max_len=("-max_len=$MAX_LEN")
fi
if [ $# -eq 0 ]; then
    cargo +nightly fuzz build -O -s "$sanitizer" >&2
else
    for target in "${targets[@]}"; do cargo +nightly fuzz build -O -s "$sanitizer" "$target" >&2; done
fi
printf '%-20s %14s %10s %8s\n' target executions exec/s seconds
for target in "${targets[@]}"; do
    mkdir -p "work/$target"
    # log_ops_threaded and queue_ops_threaded run log_ops's and queue_ops's
    # corpus, log_recovery_files log_recovery's.
    seeds="corpus/${target%_threaded}"
    seeds="${seeds%_files}"
    log=$(mktemp)
    start=$(date +%s)
    status=0
    cargo +nightly fuzz run -O -s "$sanitizer" "$target" "work/$target" "$seeds" -- \
        "$budget" "${max_len[@]}" -detect_leaks=0 -print_final_stats=1 >"$log" 2>&1 || status=$?
    seconds=$(($(date +%s) - start))
    executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    printf '%-20s %14s %10s %8s\n' "$target" "${executions:-?}" "${rate:-?}" "$seconds"
    if [ "$status" -ne 0 ]; then
        echo "$target failed (exit $status); its log: $log" >&2
    else
        rm -f "$log"
    fi
done
