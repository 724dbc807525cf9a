#!/usr/bin/env bash
# Caption an archive with a Slurm job array: each task captions its shard of the manifest
# (glimpse reads SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_COUNT and SLURM_ARRAY_TASK_MIN itself, so
# the array needs a contiguous range, e.g. 0-7 or 1-8). A preempted or failed task, run again,
# passes over the videos already done.
#
#   sbatch --export=ARCHIVE=/shared/archive deploy/slurm/caption-archive.sh
#   (when every task is done) glimpse batch merge /shared/archive/captions --out results.json --manifest /shared/archive/manifest.txt
#SBATCH --job-name=glimpse-captions
#SBATCH --array=0-7
#SBATCH --cpus-per-task=2
#SBATCH --mem=4G
#SBATCH --time=08:00:00
#SBATCH --requeue
#SBATCH --output=glimpse-captions-%A_%a.log
set -euo pipefail
archive=${ARCHIVE:?set ARCHIVE to the folder holding manifest.txt (and the videos it names)}
exec glimpse batch caption-video "$archive/manifest.txt" --out-dir "$archive/captions" --subtitles
