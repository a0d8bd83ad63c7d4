#!/usr/bin/env bash
# Benchmark `pintrace engine` against fio on the same file with the same
# parameters, in turns, and print the ratio engine/fio for each workload:
#   4 KiB random read, psync, QD1
#   4 KiB random read, io_uring, QD32
#   128 KiB sequential write, psync
#
# Usage: scripts/bench-engine.sh [DIR] ; environment:
#   ROUNDS=3         rounds per tool and workload (alternating engine, fio)
#   RUNTIME=8        seconds per run
#   SIZE=1g          file size
#   PINTRACE_BIN=... use this binary instead of building the release one
#   SPIN=1           keep every CPU busy with a nice-19 spinner during the runs
#                    (0: leave them idle). In a VM, a vCPU that goes idle while
#                    a QD1 I/O is in flight wakes slowly, so at QD1 whichever
#                    tool keeps its CPU busier gets more IOPS: fio's own
#                    bookkeeping thread does (clock reads, about 7% of its
#                    samples). With the spinners neither tool's idle time
#                    counts and the ratio compares the I/O paths.
# DIR (default /var/tmp) must be on a filesystem with real O_DIRECT
# (ext4, xfs, btrfs; not tmpfs). Needs fio and python3.
set -euo pipefail

dir=${1:-/var/tmp}
rounds=${ROUNDS:-3}
runtime=${RUNTIME:-8}
size=${SIZE:-1g}
here=$(cd "$(dirname "$0")/.." && pwd)

command -v fio >/dev/null || { echo "fio is not installed (apt-get install fio)" >&2; exit 2; }
command -v python3 >/dev/null || { echo "python3 is needed to read the JSON reports" >&2; exit 2; }

if [[ -z ${PINTRACE_BIN:-} ]]; then
    (cd "$here" && cargo build --release -q -p pintrace --bin pintrace)
    target_dir=$(cd "$here" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
    PINTRACE_BIN=$target_dir/release/pintrace
fi

spin=${SPIN:-1}
file=$dir/pintrace-bench-$$.dat
spinners=()
cleanup() {
    if ((${#spinners[@]})); then kill "${spinners[@]}" 2>/dev/null || true; fi
    rm -f "$file"
}
trap cleanup EXIT
echo "laying out $size at $file"
"$PINTRACE_BIN" engine --filename "$file" --rw write --bs 1m --size "$size" --keep --json >/dev/null

# Each prints "IOPS CPU-usec-per-IO".
iops_engine() {
    python3 -c 'import json,sys; r=json.load(sys.stdin)["total"]; print(r["read"]["iops"]+r["write"]["iops"], r["cpu"]["us_per_io"])'
}
iops_fio() {
    python3 -c '
import json, sys
j = json.load(sys.stdin)["jobs"][0]
ios = j["read"]["total_ios"] + j["write"]["total_ios"]
cpu_s = (j["usr_cpu"] + j["sys_cpu"]) / 100 * j["job_runtime"] / 1000
print(j["read"]["iops"] + j["write"]["iops"], cpu_s * 1e6 / max(ios, 1))'
}

# name | engine args | fio args
workloads=(
    "randread-4k-psync-qd1|--rw randread --bs 4k --mode psync --iodepth 1|--rw=randread --bs=4k --ioengine=psync --iodepth=1"
    "randread-4k-io_uring-qd32|--rw randread --bs 4k --mode io_uring --iodepth 32|--rw=randread --bs=4k --ioengine=io_uring --iodepth=32"
    "write-128k-psync|--rw write --bs 128k --mode psync --iodepth 1 --allow-overwrite|--rw=write --bs=128k --ioengine=psync --iodepth=1"
)

# Warm up the device (and the host's cache of it) before anything is timed.
"$PINTRACE_BIN" engine --filename "$file" --rw read --bs 1m --json >/dev/null
fio --name=warmup --filename="$file" --size="$size" --direct=1 --rw=randread --bs=4k --ioengine=psync \
    --runtime=2 --time_based=1 --output-format=json >/dev/null

# shellcheck disable=SC2086
run_engine() { "$PINTRACE_BIN" engine --filename "$file" --size "$size" --runtime "$runtime" $1 --json | iops_engine; }
# shellcheck disable=SC2086
run_fio() {
    fio --name=bench --filename="$file" --size="$size" --direct=1 --runtime="$runtime" --time_based=1 \
        --numjobs=1 --output-format=json $1 | iops_fio
}

if [[ $spin == 1 ]]; then
    for ((c = 0; c < $(nproc); c++)); do
        taskset -c "$c" nice -n 19 sh -c 'while :; do :; done' &
        spinners+=("$!")
    done
    echo "CPUs kept busy by $(nproc) nice-19 spinners (SPIN=0 to leave them idle)"
fi
echo "ratio: engine/fio of the median IOPS; paired: median of the per-round ratios;"
echo "cpu: median CPU microseconds (user + system) per I/O"
printf '%-26s %12s %12s %7s %7s %9s %9s\n' workload engine_iops fio_iops ratio paired e_cpu f_cpu
for w in "${workloads[@]}"; do
    IFS='|' read -r name eargs fargs <<<"$w"
    e_all=() f_all=() ec_all=() fc_all=()
    for ((i = 0; i < rounds; i++)); do
        # Alternate which tool goes first, so that drift (device, host cache,
        # other load) does not favour one of them.
        if ((i % 2 == 0)); then
            e=$(run_engine "$eargs")
            f=$(run_fio "$fargs")
        else
            f=$(run_fio "$fargs")
            e=$(run_engine "$eargs")
        fi
        read -r e ecpu <<<"$e"
        read -r f fcpu <<<"$f"
        e_all+=("$e") f_all+=("$f") ec_all+=("$ecpu") fc_all+=("$fcpu")
        printf '  %s round %d: engine %.0f IOPS (%.2f cpu-us/io), fio %.0f IOPS (%.2f cpu-us/io), ratio %.3f\n' \
            "$name" "$((i + 1))" "$e" "$ecpu" "$f" "$fcpu" "$(python3 -c "print($e / $f)")" >&2
    done
    line=$(python3 - "$name" "${e_all[*]}" "${f_all[*]}" "${ec_all[*]}" "${fc_all[*]}" <<'PY'
import statistics, sys
name = sys.argv[1]
e, f, ec, fc = ([float(x) for x in a.split()] for a in sys.argv[2:6])
me, mf = statistics.median(e), statistics.median(f)
paired = statistics.median([a / b for a, b in zip(e, f)])
print(f"{name:<26} {me:12.0f} {mf:12.0f} {me / mf:7.3f} {paired:7.3f} "
      f"{statistics.median(ec):9.2f} {statistics.median(fc):9.2f}")
PY
)
    echo "$line"
done
echo
echo "medians over $rounds rounds of ${runtime}s each, file $size on $(stat -f -c %T "$dir"), $(uname -r), $(fio --version), SPIN=$spin"
