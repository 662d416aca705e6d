#!/usr/bin/env bash
# A real SLURM on this one machine, as an end-to-end test of sharded runs:
#
#   1. installs Debian's slurm-wlm and munge if missing, starts munged (a generated key) and a
#      single-node SLURM (slurmctld + slurmd on localhost, private ports, state and sockets under
#      a temporary folder; nothing in /etc is changed);
#   2. submits tools/cluster/slurm-array.sh as two 3-task arrays: `infer` over 9 CamVid val
#      frames, and `segnet-video` over the dashcam video (--max-frames) and two folders of CamVid
#      frames;
#   3. kills infer task 1 with SIGKILL once it has finished one of its frames, requeues it
#      (`scontrol requeue`), and checks that the rerun skips that frame;
#   4. merges both runs and checks them against one-shard runs of the same commands: the same
#      class maps, JSON summaries and per-frame tables byte for byte, the same merged CSVs.
#
# Usage: tools/cluster/slurm-local.sh [--bin DIR] [--keep]
#   --bin DIR  folder of segnet-bayes and segnet-video (default target/release)
#   --keep     keep the work folder (its path is printed)
# Exit status: 0 passed, 1 failed, 77 cannot run here (the reason is printed): it needs root,
# the binaries, ../shared/data, and slurm-wlm + munge installed or installable with apt.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bin=$root/target/release
keep=0
while (($#)); do
  case $1 in
    --bin) bin=$(cd "$2" && pwd); shift 2 ;;
    --keep) keep=1; shift ;;
    *) echo "usage: $0 [--bin DIR] [--keep]" >&2; exit 2 ;;
  esac
done
data=$root/../shared/data
video=$data/video/solidWhiteRight.mp4
say() { printf 'slurm-local: %s\n' "$*" >&2; }
skip() { say "skipped: $*"; exit 77; }
fail() { say "FAILED: $*"; exit 1; }
t0=$(date +%s)
elapsed() { echo "$(($(date +%s) - t0)) s"; }

[[ $(id -u) -eq 0 ]] || skip "needs root (installs slurm-wlm and munge, runs slurmd as root)"
[[ -x $bin/segnet-bayes && -x $bin/segnet-video ]] || skip "no segnet-bayes and segnet-video in $bin"
[[ -d $data/camvid/val && -f $video ]] || skip "no CamVid frames or video under $data"
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  say "installing slurm-wlm and munge"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null 2>&1 &&
      apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null 2>&1; } ||
    skip "slurm-wlm and munge are not installed and apt-get could not install them"
fi

w=$(mktemp -d /tmp/segnet-slurm.XXXXXX)
chmod 755 "$w"
mkdir -p "$w/munge" "$w/state" "$w/spool" "$w/log" "$w/work"
jobs=()
cleanup() {
  local status=$?
  if ((${#jobs[@]})); then SLURM_CONF=$w/slurm.conf scancel "${jobs[@]}" 2>/dev/null || true; fi
  local pids=() f pid i
  for f in "$w/slurmd.pid" "$w/slurmctld.pid" "$w/munge/munged.pid"; do
    if [[ -f $f ]] && pid=$(cat "$f") && kill "$pid" 2>/dev/null; then pids+=("$pid"); fi
  done
  # The daemons write their state as they stop: removing the folder under them fails
  # ("Directory not empty"), which once failed a run that had passed. Wait up to 10 s.
  for pid in ${pids[@]+"${pids[@]}"}; do
    for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  done
  if ((keep)) || ((status != 0)); then
    say "work folder kept: $w"
  elif ! rm -rf "$w" 2>/dev/null; then
    sleep 1
    rm -rf "$w" || say "could not remove the work folder $w (a daemon still writing?)"
  fi
  return "$status"
}
trap cleanup EXIT

# 1. munge and SLURM --------------------------------------------------------------------------
chown munge:munge "$w/munge"
runuser -u munge -- mungekey --create --keyfile="$w/munge/munge.key"
runuser -u munge -- munged --socket="$w/munge/socket" --key-file="$w/munge/munge.key" \
  --pid-file="$w/munge/munged.pid" --log-file="$w/munge/munged.log" --seed-file="$w/munge/seed"
mem=$(awk '/^MemTotal:/ { print int($2 / 1024 * 0.8) }' /proc/meminfo)
# Ports of this process's own: another test run beside this one has its own SLURM.
port=$((20000 + $$ % 10000 * 2))
cat >"$w/slurm.conf" <<CONF
ClusterName=segnet-local
SlurmctldHost=$(hostname)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$w/munge/socket
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
StateSaveLocation=$w/state
SlurmdSpoolDir=$w/spool
SlurmctldPidFile=$w/slurmctld.pid
SlurmdPidFile=$w/slurmd.pid
SlurmctldLogFile=$w/log/slurmctld.log
SlurmdLogFile=$w/log/slurmd.log
NodeName=$(hostname) CPUs=$(nproc) RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$w/slurm.conf
slurmctld
slurmd
for _ in $(seq 100); do
  [[ $(sinfo -h -o %t 2>/dev/null) == idle ]] && break
  sleep 0.2
done
[[ $(sinfo -h -o %t) == idle ]] || fail "the node did not come up (logs in $w/log)"
say "SLURM up ($(elapsed)): $(sinfo -h -o '%D node, %c CPUs, partition %P')"

# 2. Inputs and the two arrays ----------------------------------------------------------------
cd "$w/work"
mapfile -t val < <(find "$data/camvid/val" -name '*.png' | sort | head -17)
mkdir frames seqA seqB
cp "${val[@]:0:9}" frames/
cp "${val[@]:9:4}" seqA/
cp "${val[@]:13:4}" seqB/
# A link beside the frame folders: items are named from their paths below the common folder.
ln -s "$video" solidWhiteRight.mp4
infer_args=(frames --out out-infer --samples 4 --seed 7)
video_args=(seqA seqB solidWhiteRight.mp4 --out out-video --samples 4 --seed 7 --max-frames 6)
array=(--parsable --array=0-2 --cpus-per-task=1 --export=ALL,SEGNET_BIN="$bin")
jid_infer=$(sbatch "${array[@]}" --output="$w/log/infer-%a.out" "$root/tools/cluster/slurm-array.sh" infer "${infer_args[@]}")
jobs+=("$jid_infer")
jid_video=$(sbatch "${array[@]}" --output="$w/log/video-%a.out" "$root/tools/cluster/slurm-array.sh" video "${video_args[@]}")
jobs+=("$jid_video")
say "submitted infer array $jid_infer and video array $jid_video ($(elapsed))"

# 3. SIGKILL infer task 1 midway, then requeue it ---------------------------------------------
# Shard 1's frames are items 1, 4 and 7 of the sorted folder.
names=($(ls frames | sed 's/\.png$//'))
mine=("${names[1]}" "${names[4]}" "${names[7]}")
summary=out-infer/segnet-run/shard-0001-of-0003.json
done_count() { local n=0 f; for f in "${mine[@]}"; do [[ -f out-infer/$f.json ]] && n=$((n + 1)); done; echo $n; }
for _ in $(seq 3000); do
  (($(done_count) >= 1)) && break
  sleep 0.1
done
(($(done_count) >= 1)) || fail "infer task 1 finished no frame in 300 s (log: $w/log/infer-1.out)"
(($(done_count) < 3)) || fail "infer task 1 finished before it could be killed"
pid=$(sed -n 's/.*"pid": \([0-9]*\).*/\1/p' "$summary")
kill -KILL "$pid"
killed_at=$(done_count)
for _ in $(seq 100); do
  state=$(scontrol show job "${jid_infer}_1" | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p')
  [[ $state != RUNNING && $state != COMPLETING ]] && break
  sleep 0.1
done
say "killed infer task 1 (pid $pid) with SIGKILL after $killed_at of its 3 frames: $state ($(elapsed))"
scontrol requeue "${jid_infer}_1"
# A requeued job waits two minutes before it is eligible again; let it start now, but not within
# the second its first run ended: slurmd revokes the killed run's job credential, compared in
# whole seconds, so a relaunch within that second is refused ("Job credential
# revoked", exit 1 without a line of output), which made this check flaky.
sleep 2
scontrol update JobId="${jid_infer}_1" StartTime=now

for _ in $(seq 1200); do
  [[ -z $(squeue -h -j "$jid_infer,$jid_video" 2>/dev/null) ]] && break
  sleep 0.5
done
[[ -z $(squeue -h -j "$jid_infer,$jid_video" 2>/dev/null) ]] || fail "the arrays did not finish in 600 s"
grep -q "already done" "$w/log/infer-1.out" || {
  tail -n 5 "$w/log/infer-1.out" >&2 || true
  grep -h "JobId=${jid_infer}_1\b" "$w/log/slurmctld.log" | tail -n 4 >&2 || true
  fail "the requeued task did not skip its finished frame"
}
say "arrays done ($(elapsed)); the requeued task: $(grep -h 'already done' "$w/log/infer-1.out")"
say "restarts of infer task 1: $(scontrol show job "${jid_infer}_1" | sed -n 's/.*Restarts=\([0-9]*\).*/\1/p')"

# 4. Merge, and compare with one-shard runs ---------------------------------------------------
"$bin/segnet-bayes" merge out-infer || fail "merge of the infer run"
"$bin/segnet-bayes" merge out-video || fail "merge of the video run"
SEGNET_THREADS=1 "$bin/segnet-bayes" infer "${infer_args[@]/out-infer/one-infer}" --shard 0/1 >/dev/null 2>&1
SEGNET_THREADS=1 "$bin/segnet-video" "${video_args[@]/out-video/one-video}" --shard 0/1 >/dev/null 2>&1
"$bin/segnet-bayes" merge one-infer >/dev/null
"$bin/segnet-bayes" merge one-video >/dev/null
diff -r -x segnet-run out-infer one-infer >/dev/null || fail "infer: sharded outputs differ from one shard's"
for run in infer video; do
  cmp "out-$run/segnet-run/merged.csv" "one-$run/segnet-run/merged.csv" ||
    fail "$run: merged CSV differs from one shard's"
done
for item in seqA seqB solidWhiteRight; do
  cmp "out-video/$item/frames.csv" "one-video/$item/frames.csv" || fail "video: $item/frames.csv differs"
done
rows() { echo $(($(wc -l <"$1") - 1)); }
say "PASSED in $(elapsed): infer $(rows out-infer/segnet-run/merged.csv) frames, video $(rows out-video/segnet-run/merged.csv) frames; merged results equal to one-shard runs"
