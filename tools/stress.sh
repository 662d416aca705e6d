#!/usr/bin/env bash
# Fault injection, repeated with random timing, counting what was lost (goal: 0). Not part of
# tools/test.sh: it takes a few minutes. Each scenario runs on a tiny model and tiny synthetic
# data in a scratch folder that is removed afterwards.
#
#   video   two segnet-video runs on one output folder, the second started at a random moment
#           of the first; then one plain rerun, as a user would. Lost: frames of the input
#           missing from the final frames.csv or overlay video.
#   train   SIGKILL 0-50 ms after a random step's checkpoint (steps 1-23 of 24), then
#           `train --resume`. Lost: epochs whose log line differs from an uninterrupted run's;
#           and whether the final weights are bit-identical to it.
#   write   SIGKILL during a write into the run folder (the moment a temporary file appears,
#           after a random step), then `train --resume`; counted like `train`.
#   recal   SIGKILL at a random moment of `recalibrate`, or (every other time) as its output's
#           temporary file appears. Lost: an output that is there but not the uninterrupted
#           run's, tensors and metadata (whole or absent is fine).
#
# Usage: tools/stress.sh [REPEATS (20)] [SCENARIO...]   (release binaries; built if missing)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
repeats=${1:-20}
[ $# -gt 0 ] && shift
[ $# -gt 0 ] || set -- video train write recal
bin=$root/target/release/segnet-bayes
video=$root/target/release/segnet-video
if [ ! -x "$bin" ] || [ ! -x "$video" ]; then
  (cd "$root" && cargo build --release --workspace --quiet)
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
export SEGNET_THREADS=1

# Helpers in Python (standard library only): synthetic PNGs, safetensors checks.
cat >helper.py <<'EOF'
import json, os, random, signal, struct, sys, time, zlib

def png(path, w, h, ctype, pixel):
    def chunk(t, d):
        return struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d) & 0xffffffff)
    rows = b''.join(b'\0' + b''.join(bytes(pixel(x, y)) for x in range(w)) for y in range(h))
    head = struct.pack('>IIBBBBB', w, h, 8, ctype, 0, 0, 0)
    with open(path, 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', head) + chunk(b'IDAT', zlib.compress(rows)) + chunk(b'IEND', b''))

def scene(seed):
    """Sky above, road below, a car: the road scene of tests/cli.rs."""
    def cls(x, y):
        return 0 if y < 24 else 8 if 21 < x < 32 and y < 36 else 3
    colours = {0: (120, 130, 150), 8: (60, 20, 110), 3: (110, 60, 110)}
    def rgb(x, y):
        n = (x * 7 + y * 13 + seed * 31) % 17
        r, g, b = colours[cls(x, y)]
        return (min(r + n, 255), g, b)
    return rgb, lambda x, y: (cls(x, y),)

def dataset(root, n):
    for split, first in (('train', 0), ('val', 100)):
        for d in (split, split + 'annot'):
            os.makedirs(os.path.join(root, d), exist_ok=True)
        for i in range(first, first + n):
            rgb, lab = scene(i)
            png(f'{root}/{split}/f{i:03}.png', 64, 48, 2, rgb)
            png(f'{root}/{split}annot/f{i:03}.png', 64, 48, 0, lab)

def frames(root, n):
    os.makedirs(root, exist_ok=True)
    for i in range(n):
        png(f'{root}/frame{i}.png', 64, 48, 2, scene(i)[0])

def split(path):
    """(header, data) of a .safetensors file, or None when it is not a whole one."""
    try:
        b = open(path, 'rb').read()
        n = struct.unpack('<Q', b[:8])[0]
        header = json.loads(b[8:8 + n])
        end = max((v['data_offsets'][1] for k, v in header.items() if k != '__metadata__'), default=0)
        return (header, b[8 + n:]) if len(b) == 8 + n + end else None
    except Exception:
        return None

def same_tensors(a, b, meta=False):
    """The tensors' bytes are identical, and with `meta` the metadata too (as a dictionary:
    its order in the file varies; without `meta` the header's timings aside)."""
    x, y = split(a), split(b)
    strip = lambda h: h if meta else {k: v for k, v in h.items() if k != '__metadata__'}
    return x is not None and y is not None and strip(x[0]) == strip(y[0]) and x[1] == y[1]

def epochs_lost(straight, resumed):
    """Epochs of the uninterrupted log missing from the resumed log or different in it."""
    keys = ('epoch', 'step', 'lr', 'train_loss', 'val_global_accuracy', 'val_miou')
    read = lambda p: [json.loads(l) for l in open(p)] if os.path.exists(p) else []
    got = {e['epoch']: e for e in read(resumed)}
    return sum(1 for e in read(straight)
               if e['epoch'] not in got or any(e[k] != got[e['epoch']][k] for k in keys))

def running(pid):
    try:
        return open(f'/proc/{pid}/stat').read().split(') ')[1][0] not in 'ZX'
    except (FileNotFoundError, IndexError):
        return False

def wait_for_step(pid, checkpoint, step):
    """Waits until `pid`'s checkpoint shows global step `step`; False if it ended first."""
    while running(pid):
        h = split(checkpoint)
        if h and json.loads(h[0]['__metadata__']['segnet_bayes.progress'])['global_step'] >= step:
            return True
        time.sleep(0.001)
    return False

def kill_after_step(pid, checkpoint, step):
    """SIGKILL `pid` a random 0-50 ms after its checkpoint shows global step `step`."""
    if wait_for_step(pid, checkpoint, step):
        time.sleep(random.uniform(0, 0.05))
        os.kill(pid, signal.SIGKILL)

def kill_at_write(pid, folder, step=0):
    """After step `step`'s checkpoint (if any), SIGKILL `pid` as soon as a temporary file
    appears in `folder`: an atomic write in progress."""
    if step and not wait_for_step(pid, os.path.join(folder, 'last.safetensors'), step):
        return
    while running(pid):
        if any(n.startswith('.') and '.tmp' in n for n in os.listdir(folder)):
            os.kill(pid, signal.SIGKILL)
            return

cmd, *args = sys.argv[1:]
if cmd == 'dataset': dataset(args[0], int(args[1]))
elif cmd == 'frames': frames(args[0], int(args[1]))
elif cmd == 'same': print(int(same_tensors(*args)))
elif cmd == 'samemeta': print(int(same_tensors(*args, meta=True)))
elif cmd == 'whole': print(int(split(args[0]) is not None))
elif cmd == 'lost': print(epochs_lost(*args))
elif cmd == 'killstep': kill_after_step(int(args[0]), args[1], int(args[2]))
elif cmd == 'killwrite': kill_at_write(int(args[0]), args[1], *map(int, args[2:]))
elif cmd == 'randint': print(random.randint(int(args[0]), int(args[1])))
elif cmd == 'rand': print(f'{random.uniform(float(args[0]), float(args[1])):.3f}')
EOF
py() { python3 helper.py "$@"; }
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.2f}')"; }

py dataset data 6
"$bin" init-model --arch basic --width 0.125 --input-size 48x64 --out tiny.safetensors >/dev/null
# 6 images in batches of 2: 3 steps an epoch, a checkpoint after each, 8 epochs.
cat >tiny.yaml <<'EOF'
model: {arch: basic, width: 0.125, input_size: [48, 64]}
data: {root: data, class_weights: none}
train: {optimizer: adamw, lr: 0.01, weight_decay: 0.0001, schedule: poly, warmup_steps: 2,
        epochs: 8, batch_size: 2, prefetch: 2, checkpoint_every: 1}
EOF
train() { "$bin" train --config tiny.yaml --device cpu --out "$@"; }

summary=()
report() { summary+=("$(printf '%-6s %s' "$1" "$2")"); echo "$1: $2"; }

scenario_video() {
  local frames=24 lost=0 runs=0 failed=0 t0 dur
  py frames clip "$frames"
  local args=(clip --model tiny.safetensors --samples 2 --threads 1 --seed 1 --batch 2 --device cpu)
  t0=$(now); "$video" "${args[@]}" -o vref >/dev/null 2>&1; dur=$(secs "$t0" "$(now)")
  for i in $(seq "$repeats"); do
    rm -rf vout
    "$video" "${args[@]}" -o vout >/dev/null 2>"v1.err" &
    local first=$!
    sleep "$(py rand 0 "$dur")"
    "$video" "${args[@]}" -o vout >/dev/null 2>"v2.err" || failed=$((failed + 1))
    wait "$first" || failed=$((failed + 1))
    # A user's rerun: finishes an interrupted folder, or says it is done.
    "$video" "${args[@]}" -o vout >/dev/null 2>&1 || failed=$((failed + 1))
    runs=$((runs + 3))
    local rows=0 video_frames
    [ -f vout/frames.csv ] && rows=$(($(wc -l <vout/frames.csv) - 1))
    video_frames=$(ffprobe -v error -count_frames -select_streams v:0 \
      -show_entries stream=nb_read_frames -of csv=p=0 vout/overlay.* 2>/dev/null || echo 0)
    local missing=$((frames - (rows < video_frames ? rows : video_frames)))
    [ "$missing" -gt 0 ] && lost=$((lost + missing))
  done
  report video "runs $runs, faults injected $repeats (concurrent starts), runs failed $failed, frames lost $lost of $((repeats * frames)) (one ${dur}s run alone)"
}

# `train --resume` on the run in $1, to its end.
check_resumed() {
  train "$1" --resume >/dev/null 2>>resume.err || { echo "resume failed: $(tail -1 resume.err)" >&2; return 1; }
}

scenario_kill() { # $1: train | write
  local kind=$1 lost=0 differ=0 runs=0 hits=0 litter=0 t0 dur
  rm -rf straight
  t0=$(now); train straight >/dev/null; dur=$(secs "$t0" "$(now)")
  for i in $(seq "$repeats"); do
    rm -rf killed && mkdir killed
    "$bin" train --config tiny.yaml --device cpu --out killed >/dev/null 2>&1 &
    local pid=$! rc=0
    if [ "$kind" = train ]; then
      py killstep "$pid" killed/last.safetensors "$(py randint 1 23)"
    else
      py killwrite "$pid" killed "$(py randint 1 22)"
    fi
    wait "$pid" 2>/dev/null || rc=$?
    [ "$rc" = 137 ] && hits=$((hits + 1))
    if [ -f killed/last.safetensors ]; then
      check_resumed killed || { lost=$((lost + 8)); continue; }
      runs=$((runs + 2))
    else
      # Killed before its first checkpoint: a fresh start is the way on.
      rm -rf killed
      train killed >/dev/null
      runs=$((runs + 2))
    fi
    litter=$((litter + $(find killed -name '.*.tmp*' | wc -l)))
    lost=$((lost + $(py lost straight/log.jsonl killed/log.jsonl)))
    for f in last model; do
      [ "$(py same "straight/$f.safetensors" "killed/$f.safetensors")" = 1 ] || differ=$((differ + 1))
    done
  done
  local what="SIGKILLs during train"
  [ "$kind" = write ] && what="SIGKILLs while a temporary file of an atomic write existed"
  report "$kind" "runs $runs, faults injected $hits ($what), epochs lost $lost of $((repeats * 8)), final weights not bit-identical $differ of $((2 * repeats)) files, temporary files left after the resume $litter (one ${dur}s run alone)"
}

scenario_recal() {
  local partial=0 whole=0 absent=0 runs=0 hits=0 litter=0 t0 dur
  [ -f straight/model.safetensors ] || train straight >/dev/null
  local args=(recalibrate --model straight/model.safetensors --config tiny.yaml --dropout --device cpu)
  t0=$(now); "$bin" "${args[@]}" --out recal-ref.safetensors >/dev/null; dur=$(secs "$t0" "$(now)")
  rm -rf rc && mkdir rc
  for i in $(seq "$repeats"); do
    rm -f rc/out.safetensors
    "$bin" "${args[@]}" --out rc/out.safetensors >/dev/null 2>&1 &
    local pid=$! rc=0
    if [ $((i % 2)) = 0 ]; then
      sleep "$(py rand 0 "$(secs 0 "0.9 * $dur")")"
      kill -9 "$pid" 2>/dev/null || true
    else
      py killwrite "$pid" rc
    fi
    wait "$pid" 2>/dev/null || rc=$?
    [ "$rc" = 137 ] && hits=$((hits + 1))
    runs=$((runs + 1))
    if [ ! -e rc/out.safetensors ]; then
      absent=$((absent + 1))
    elif [ "$(py samemeta rc/out.safetensors recal-ref.safetensors)" = 1 ]; then
      whole=$((whole + 1))
    else
      partial=$((partial + 1))
    fi
  done
  echo "recal: temporary files left by the killed runs: $(find rc -name '.*.tmp*' | wc -l)"
  # Killed writes leave temporary files; the next recalibration of the same output removes them.
  "$bin" "${args[@]}" --out rc/out.safetensors >/dev/null
  litter=$(find rc -name '.*.tmp*' | wc -l)
  report recal "runs $runs, faults injected $hits (SIGKILLs before the end, half of them during the write), outputs whole $whole, absent $absent, partial (lost) $partial, temporary files left after a final complete run $litter (one ${dur}s run alone)"
}

for s in "$@"; do
  case $s in
    video) scenario_video ;;
    train | write) scenario_kill "$s" ;;
    recal) scenario_recal ;;
    *) echo "unknown scenario $s (video, train, write, recal)" >&2; exit 2 ;;
  esac
done
echo "stress ($repeats repeats each):"
printf '  %s\n' "${summary[@]}"
