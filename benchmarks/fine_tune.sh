#!/bin/sh
# The fine-tuning measurement of docs/fine-tuning.md: bundled model untouched, from scratch and
# fine-tuned, 5 minutes of training each, scored on held-out text and music.
#   sh benchmarks/fine_tune.sh OUT BAND_ARCHIVE      (run from the repository root)
# OUT receives the corpora, the run directories, scores.txt and load.log (the load average every 20 s).
set -eu
D=$1
ARCHIVE=$2
mkdir -p "$D"
python -m benchmarks.fine_tune_data text "$D/data"
python -m benchmarks.fine_tune_data music "$ARCHIVE" "$D/data/songs"
( while true; do echo "$(date -u +%H:%M:%S) $(cat /proc/loadavg)"; sleep 20; done ) > "$D/load.log" &
LOAD=$!
T="$D/data/austen-train.txt"
generator train text --corpus "$T" --output "$D/text-scratch" --config checkpoints/shakespeare/config.json --time-limit 300
generator train text --corpus "$T" --output "$D/text-finetune" --init-from shakespeare --time-limit 300
# the checkpoint with its vocabulary grown by the corpus's new characters, no step taken
generator train text --corpus "$T" --output "$D/text-untouched" --init-from shakespeare --epochs 1 --steps-per-epoch 1 \
  --learning-rate 1e-12 --warmup-steps 0
generator train music --corpus "$D/data/songs/train" --output "$D/music-scratch" --config checkpoints/pop-piano/config.json \
  --time-limit 300
generator train music --corpus "$D/data/songs/train" --output "$D/music-finetune" --init-from pop-piano --time-limit 300
kill $LOAD
for r in text-untouched text-scratch text-finetune; do
  echo "$r $(generator evaluate --checkpoint "$D/$r" --corpus "$D/data/austen-test.txt" --json)"
done > "$D/scores.txt"
for r in pop-piano "$D/music-scratch" "$D/music-finetune"; do
  echo "$r $(generator evaluate --checkpoint "$r" --corpus "$D/data/songs/test" --key-average 0 --json)"
done >> "$D/scores.txt"
cat "$D/scores.txt"
