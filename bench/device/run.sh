#!/usr/bin/env bash
# The one-call device benchmark (issue 14 item 4). Run in the repository root of a bare x86-64 NVIDIA machine
# with no network, the carry folder beside the checkout (bench/device/prepare.sh fills it here):
#
#   bash bench/device/run.sh           # full sizes; refuses a software adapter
#   bash bench/device/run.sh --dry     # or DRY=1: small sizes on any adapter (lavapipe here, CI)
#
# Carry folder ($DEVICE_BENCH_CARRY, default .device/), ignored by git:
#   .device/deno.gz       the Deno binary, gzip'd (unpacked to /tmp/device-bench/deno unless --dry finds deno)
#   .device/debs/*.deb    the Vulkan loader and GL dispatch packages (dpkg -x into /, then ldconfig), used only
#                         when `ldconfig -p` lists no libvulkan.so.1
#   .device/deno_dir/     DENO_DIR holding the npm packages the benchmark's modules import (--cached-only)
#
# Then: selects the NVIDIA Vulkan driver (VK_DRIVER_FILES / VK_ICD_FILENAMES when its ICD file exists; the loader's
# default search otherwise, and again if the adapter phase fails with it), and runs the phases, each as its own
# process under its budget (8 minutes together): adapter, matmul, vit, ibot (Deno/WebGPU), torch_matmul,
# torch_step (PyTorch CUDA float32, TF32 off, when python3 has torch with CUDA), report. The report prints and
# writes ONE results file: device_<adapter>.md + .json (device_<adapter>_dry in the dry run) in $OUT when set,
# else bench/results/. Exit status: 0 when every phase finished, 1 when one did not (the file says which),
# 2 when the setup failed (no usable adapter: the file is still written, saying so).
set -uo pipefail
cd "$(dirname "$0")/../.."

DRY=${DRY:-0}
for arg in "$@"; do
  case $arg in
  --dry) DRY=1 ;;
  -h | --help)
    sed -n '2,21p' "$0"
    exit 0
    ;;
  *)
    echo "bench/device/run.sh: unknown argument '$arg' (--dry or --help)" >&2
    exit 2
    ;;
  esac
done
CARRY=${DEVICE_BENCH_CARRY:-.device}
T0=$SECONDS
log() { echo "[device $((SECONDS - T0)) s] $*" >&2; }
fail() {
  echo "bench/device/run.sh: $*" >&2
  exit 2
}

# --- Deno ------------------------------------------------------------------------------------------------------
if [[ $DRY == 1 ]] && command -v deno >/dev/null; then
  DENO=$(command -v deno)
elif [[ -f $CARRY/deno.gz ]]; then
  mkdir -p /tmp/device-bench
  if command -v gzip >/dev/null; then
    gzip -dc "$CARRY/deno.gz" >/tmp/device-bench/deno || fail "cannot unpack $CARRY/deno.gz"
  else # a bare image may lack gzip but has python3
    python3 -c 'import gzip, shutil, sys; shutil.copyfileobj(gzip.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
      "$CARRY/deno.gz" /tmp/device-bench/deno || fail "cannot unpack $CARRY/deno.gz (no gzip; python3 failed)"
  fi
  chmod +x /tmp/device-bench/deno
  DENO=/tmp/device-bench/deno
elif command -v deno >/dev/null; then
  DENO=$(command -v deno)
else
  fail "no deno on PATH and no $CARRY/deno.gz: run bench/device/prepare.sh where deno is, and carry $CARRY"
fi
log "deno: $("$DENO" --version | head -n1) ($DENO)"
CACHED=()
if [[ -d $CARRY/deno_dir ]]; then
  export DENO_DIR=$PWD/$CARRY/deno_dir
  CACHED=(--cached-only --no-lock) # prepare.sh cached what these modules reach, not all the lock file lists
fi

# --- Vulkan loader and driver ------------------------------------------------------------------------------------
if ! ldconfig -p 2>/dev/null | grep 'libvulkan\.so\.1' >/dev/null; then  # not -q: SIGPIPE under pipefail
  compgen -G "$CARRY/debs/*.deb" >/dev/null || fail "no libvulkan.so.1 here and no $CARRY/debs/*.deb to install it from"
  for f in "$CARRY"/debs/*.deb; do dpkg -x "$f" / || fail "dpkg -x $f failed"; done
  ldconfig
  log "installed the Vulkan loader from $CARRY/debs"
fi
NVIDIA_ICD=""
if [[ $DRY != 1 && -z ${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-} ]]; then
  for f in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json \
    /etc/vulkan/icd.d/nvidia_icd.json; do
    if [[ -f $f ]]; then
      NVIDIA_ICD=$f
      export VK_DRIVER_FILES=$f VK_ICD_FILENAMES=$f
      break
    fi
  done
  [[ -f /usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json ]] &&
    export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
fi
log "Vulkan driver: ${VK_DRIVER_FILES:-default loader search}"
export DENO_WEBGPU_BACKEND=vulkan
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp/device-bench-xdg}
mkdir -p -m 0700 "$XDG_RUNTIME_DIR"

# --- PyTorch, memory, work folder ----------------------------------------------------------------------------
PYTHON=""
for p in python3 /usr/bin/python3; do
  if command -v "$p" >/dev/null && "$p" -c 'import torch' 2>/dev/null; then
    PYTHON=$p
    break
  fi
done
[[ -z $PYTHON ]] && PYTHON=$(command -v python3 || true)
log "python: ${PYTHON:-none}"
if [[ -z ${DEVICE_BENCH_MAX_MEMORY:-} && $DRY != 1 ]] && command -v nvidia-smi >/dev/null; then
  mib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits 2>/dev/null | head -n1 | tr -dc 0-9)
  # 70 %: the plan's peak is what the planner knows; the driver, pools and the other plans need the rest.
  [[ -n $mib ]] && export DEVICE_BENCH_MAX_MEMORY=$((mib * 1024 * 1024 * 7 / 10))
fi
WORK=$(mktemp -d /tmp/device-bench-work.XXXXXX)
export DEVICE_BENCH_WORK=$WORK DEVICE_BENCH_DRY=$DRY
DEVICE_BENCH_LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?")
export DEVICE_BENCH_LOADAVG
: >"$WORK/phases.tsv"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv \
    >"$WORK/nvidia_smi.csv" 2>/dev/null || true
fi

# phase NAME BUDGET_S COMMAND...: runs it under its budget and records its exit status and seconds.
phase() {
  local name=$1 budget=$2 start=$SECONDS rc
  shift 2
  log "phase $name (budget $budget s)"
  DEVICE_BENCH_BUDGET_S=$budget timeout -k 5 "$budget" "$@"
  rc=$?
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - start))" "$budget" >>"$WORK/phases.tsv"
  [[ $rc == 0 ]] || log "phase $name: exit status $rc$([[ $rc == 124 ]] && echo ' (stopped at its budget)')"
  return $rc
}
deno_phase() {
  local name=$1 budget=$2
  phase "$name" "$budget" "$DENO" run "${CACHED[@]}" --unstable-webgpu --allow-read --allow-env --allow-write \
    "bench/device/$name.ts"
}
torch_phase() {
  local name=$1 budget=$2
  if [[ -z $PYTHON ]]; then
    printf '{"env": {"unavailable": "no python3 on this machine"}, "shapes": []}\n' >"$WORK/$name.json"
    printf '%s\t0\t0\t%s\n' "$name" "$budget" >>"$WORK/phases.tsv"
    return 0
  fi
  (cd bench/device && PYTHONUNBUFFERED=1 phase "$name" "$budget" "$PYTHON" "$name.py")
}

# Budgets (seconds): 455 s, under 8 minutes with the setup; the dry run's are limits for a loaded CI machine.
if [[ $DRY == 1 ]]; then B=(30 90 60 120 40 60 30); else B=(20 120 60 150 30 60 15); fi

# finish STATUS: writes the one results file from whatever the phases left, then exits (0 only when all finished).
finish() {
  DEVICE_BENCH_BUDGET_S=${B[6]} timeout -k 5 "${B[6]}" "$DENO" run "${CACHED[@]}" --allow-read --allow-env \
    --allow-write bench/device/report.ts || fail "the report failed (fragments in $WORK)"
  log "done in $((SECONDS - T0)) s"
  local status=$1
  if ((status == 0)) && ! awk -F'\t' '$2 != 0 { bad = 1 } END { exit bad }' "$WORK/phases.tsv"; then status=1; fi
  if ((status == 0)); then rm -rf "$WORK"; else log "not every phase finished; the fragments stay in $WORK"; fi
  exit "$status"
}

if ! deno_phase adapter "${B[0]}"; then
  if [[ -n $NVIDIA_ICD ]]; then
    log "retrying the adapter with the default loader search"
    unset VK_DRIVER_FILES VK_ICD_FILENAMES
    sed -i '$d' "$WORK/phases.tsv"
    deno_phase adapter "${B[0]}" || finish 2
  else
    finish 2
  fi
fi
deno_phase matmul "${B[1]}"
deno_phase vit "${B[2]}"
deno_phase ibot "${B[3]}"
torch_phase torch_matmul "${B[4]}"
torch_phase torch_step "${B[5]}"
finish 0
