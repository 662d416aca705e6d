#!/usr/bin/env bash
# A SLURM job array over `segnet-bayes infer` or `segnet-video`. Each task does its share of
# the inputs: the tools read SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT themselves and
# print which shard that gave. A killed or failed task can be requeued (`scontrol requeue
# JOBID_TASK`): it skips the items it finished. `segnet-bayes merge OUT` joins the shards.
#
# From the repository root (paths are read from the submission folder):
#   jid=$(sbatch --parsable --array=0-9 tools/cluster/slurm-array.sh infer IMAGES_DIR --out OUT [infer flags])
#   jid=$(sbatch --parsable --array=0-9 tools/cluster/slurm-array.sh video VIDEOS_OR_FRAME_DIRS... --out OUT [segnet-video flags])
#   sbatch --dependency=afterany:$jid --wrap "target/release/segnet-bayes merge OUT"
#
# Every task must run the same command (same inputs or --manifest, --out and flags); a task
# that differs is refused by the run's manifest. The array must be 0-N (or any range with a
# step: the tools count the task's position in it). SEGNET_BIN: the folder holding the binaries
# (default: target/release under the submission folder). libtorch uses the task's CPUs
# (SEGNET_THREADS, default --cpus-per-task). On GPU nodes add `#SBATCH --gres=gpu:1` and pass
# `--device cuda`.
#SBATCH --job-name=segnet
#SBATCH --array=0-3
#SBATCH --cpus-per-task=2
#SBATCH --mem=3G
#SBATCH --requeue
#SBATCH --output=slurm-%A_%a.out
set -euo pipefail
bin=${SEGNET_BIN:-${SLURM_SUBMIT_DIR:-.}/target/release}
export SEGNET_THREADS=${SEGNET_THREADS:-${SLURM_CPUS_PER_TASK:-1}}
tool=${1:-}
shift || true
echo "segnet: task ${SLURM_ARRAY_TASK_ID:-?} of ${SLURM_ARRAY_TASK_COUNT:-?} on $(hostname), restart ${SLURM_RESTART_COUNT:-0}" >&2
case $tool in
  infer) exec "$bin/segnet-bayes" infer "$@" ;;
  video) exec "$bin/segnet-video" "$@" ;;
  *)
    echo "error: the first argument must be infer or video, got '$tool'" >&2
    exit 2
    ;;
esac
