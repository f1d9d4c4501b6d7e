#!/usr/bin/env bash
# Fills the carry folder for bench/device/run.sh, HERE (a machine with deno, apt and the network), in the
# repository root of the checkout that the device tool sends:
#
#   bash bench/device/prepare.sh
#
# .device/deno.gz       this Deno binary (the one `deno eval 'console.log(Deno.execPath())'` names), gzip -9
# .device/debs/*.deb    amd64 Vulkan loader and GL dispatch packages, as the device README lists them
# .device/deno_dir/     a DENO_DIR with the npm packages the benchmark's modules import (the device is offline)
#
# The folder is added to .git/info/exclude (it is in .gitignore too). Prints its size, the size of what travels
# (tracked files, untracked files git does not ignore, and the carry: at most 64 MiB), and the device call to make.
set -euo pipefail
cd "$(dirname "$0")/../.."
CARRY=${DEVICE_BENCH_CARRY:-.device}

exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qxF "/$CARRY/" "$exclude" 2>/dev/null || echo "/$CARRY/" >>"$exclude"
rm -rf "$CARRY"
mkdir -p "$CARRY/debs"

deno_bin=$(deno eval 'console.log(Deno.execPath())')
echo "gzip -9 $deno_bin ($(deno --version | head -n1))" >&2
gzip -9 -c "$deno_bin" >"$CARRY/deno.gz"

echo "apt-get download (amd64): the Vulkan loader and GL dispatch packages" >&2
mkdir -p /tmp/amd64/partial
o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64)
apt-get "${o[@]}" update -qq
(cd "$CARRY/debs" && apt-get "${o[@]}" download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)

echo "deno cache: the benchmark's imports into $CARRY/deno_dir" >&2
# --no-lock: only the packages these modules reach (with the lock file deno fetches every package it lists)
DENO_DIR=$PWD/$CARRY/deno_dir deno cache --no-lock bench/device/*.ts >&2
rm -rf "$CARRY/deno_dir/gen" # compiled on the device; only the npm packages must travel

carry=$(du -sb "$CARRY" | cut -f1)
tree=$( (git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null || true) |
  awk '{ s += $1 } END { print s + 0 }')
total=$((carry + tree))
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
echo "carry $CARRY: $(mib "$carry") (deno.gz $(mib "$(stat -c %s "$CARRY/deno.gz")")); working tree $(mib "$tree"); total $(mib "$total") of 64 MiB"
if ((total > 64 * 1048576)); then
  echo "bench/device/prepare.sh: over the 64 MiB the device tool carries" >&2
  exit 1
fi
cat <<EOF

The device call (from the checkout the session started in, after committing or leaving untracked the code to run):
  run(command: "bash bench/device/run.sh 2>&1 | tee \$OUT/log", carry: ["$CARRY"], timeout_s: 560)
run.sh writes device_<adapter>.md and .json into \$OUT (they come back under files_at): copy them into
bench/results/ and commit them with the card named.
EOF
