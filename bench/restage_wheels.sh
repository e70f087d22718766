#!/usr/bin/env bash
# Re-pack the wheels that ../shared/gpu/prepare_wheels.sh staged in .w1, .w2, ... into folders small enough for one
# `run` call each: a call carries the tracked tree (21 MiB on 2026-12-04, growing with every results record) plus the
# folder, at most 64 MiB in all, and prepare_wheels.sh fills its folders to 60 MiB. Split wheels are joined, checked
# against SHA256SUMS, and split again into parts of at most LIMIT MiB (default 30, seven folders: the last with
# `.whl` and 36 MiB folders no longer fit beside the tree on 2026-12-04);
# setup_on_device.sh and SHA256SUMS go to the last folder, which is carried with `.whl` and `.kernelcache`
# (bench/gpu_grid.sh). On the GPU machine nothing changes: copy every folder
# but the last to /tmp/parts, then `source .wN/setup_on_device.sh` from the last.
#
#   bash bench/restage_wheels.sh [LIMIT_MIB]
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
limit=$((${1:-30} * 1024 * 1024))
compgen -G ".w[0-9]*/SHA256SUMS" >/dev/null || { echo "no staged wheels (.wN/SHA256SUMS): run ../shared/gpu/prepare_wheels.sh first"; exit 2; }
stage=$(mktemp -d); trap 'rm -rf "$stage"' EXIT
cp .w[0-9]*/* "$stage"/
( cd "$stage"
  for first in *.part.00; do [ -e "$first" ] || continue; w=${first%.part.00}; cat "$w".part.* > "$w"; rm "$w".part.*; done
  sha256sum -c --quiet SHA256SUMS )
parts=$(mktemp -d); trap 'rm -rf "$stage" "$parts"' EXIT
for f in "$stage"/*.whl; do
  if [ "$(stat -c %s "$f")" -gt "$limit" ]; then split -b "$limit" -d "$f" "$parts/$(basename "$f").part."
  else cp "$f" "$parts/"; fi
done
# The new folders are filled beside the old ones and swapped in at the end: a failure before then leaves the old.
next=$(mktemp -d -p .); trap 'rm -rf "$stage" "$parts" "$next"' EXIT
k=1; used=0; mkdir -p "$next/.w1"
for f in $(ls -S "$parts"); do
  s=$(stat -c %s "$parts/$f")
  if [ $((used + s)) -gt "$limit" ]; then k=$((k + 1)); used=0; mkdir -p "$next/.w$k"; fi
  mv "$parts/$f" "$next/.w$k/"; used=$((used + s))
done
cp "$stage/SHA256SUMS" "$stage/setup_on_device.sh" "$next/.w$k/"
rm -rf .w[0-9]* && mv "$next"/.w[0-9]* .
du -sh .w[0-9]*
echo "last folder (carry it with .whl and .kernelcache; source its setup_on_device.sh): .w$k"
