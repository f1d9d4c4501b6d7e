/**
 * What the phases of the one-call device benchmark share (`bench/device/run.sh` runs each phase as its own
 * process under a time limit): the mode (full on a GPU, or `--dry` at small sizes on any adapter), the phase's
 * deadline, and the JSON fragment each phase leaves in the work folder for `report.ts` to assemble.
 *
 * Environment (set by run.sh): `DEVICE_BENCH_WORK` (the work folder), `DEVICE_BENCH_DRY` (`1` in dry mode),
 * `DEVICE_BENCH_BUDGET_S` (this phase's seconds; the phase stops measuring ahead of it and writes what it has).
 *
 * @module
 */
import { initBackend } from "../../mod.ts";
import type { WebGpuBackend } from "../../wgsl/backend.ts";
import { asWebGpu, errorText, median, progress } from "../util.ts";

/** The phases, in the order run.sh runs them; each writes `<work>/<phase>.json`. */
export const PHASES = ["adapter", "matmul", "vit", "ibot", "torch_matmul", "torch_step"] as const;
export type Phase = (typeof PHASES)[number];

/** Whether this is the dry run (small sizes, any adapter). */
export function isDry(): boolean {
  return Deno.env.get("DEVICE_BENCH_DRY") === "1";
}

/** The work folder where phases leave their fragments. */
export function workDir(): string {
  const dir = Deno.env.get("DEVICE_BENCH_WORK");
  if (!dir) throw new Error("DEVICE_BENCH_WORK is not set: run the phases through bench/device/run.sh");
  return dir;
}

/** Milliseconds left before this phase should stop measuring (a margin before run.sh's hard limit). */
export function makeDeadline(marginS = 10): () => number {
  const budget = Number(Deno.env.get("DEVICE_BENCH_BUDGET_S") ?? "60");
  const end = performance.now() + Math.max(1, budget - marginS) * 1000;
  return () => end - performance.now();
}

/** Writes a phase's fragment (called as results accumulate, so a phase killed at its limit leaves a part). */
export async function writeFragment(phase: Phase, data: unknown): Promise<void> {
  const path = `${workDir()}/${phase}.json`;
  await Deno.writeTextFile(`${path}.tmp`, JSON.stringify(data, null, 2) + "\n");
  await Deno.rename(`${path}.tmp`, path);
}

/** Reads a phase's fragment, or null when the phase left none. */
export async function readFragment<T>(phase: Phase): Promise<T | null> {
  try {
    return JSON.parse(await Deno.readTextFile(`${workDir()}/${phase}.json`)) as T;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw new Error(`bench/device: ${workDir()}/${phase}.json is not valid JSON: ${errorText(e)}`);
  }
}

/** Software adapters (lavapipe/llvmpipe, SwiftShader, WARP): a full run on one of these measures nothing. */
export function isSoftwareAdapter(description: string): boolean {
  return /\(software\)|llvmpipe|lavapipe|swiftshader|warp|software/i.test(description);
}

/** The WebGPU backend for a measuring phase. */
export async function gpuBackend(): Promise<WebGpuBackend> {
  const backend = asWebGpu(await initBackend("webgpu"));
  progress(`adapter: ${backend.adapterInfo}`);
  return backend;
}

/** Sizes of a GPU run or of the dry run, chosen in one place. */
export function pick<T>(full: T, dry: T): T {
  return isDry() ? dry : full;
}

/** A jitted step's timings, as the vit and ibot phases record them. */
export interface StepTimes {
  compileS?: number;
  stepsMs: number[];
  medianMs?: number;
  imagesPerS?: number;
  peakBytes?: number;
  dispatches?: number;
  loss?: number;
  error?: string;
}

/**
 * Calls a step once (trace, compile, run), then times up to 5 calls (2 dry) while the budget allows: the first
 * if half the first call's time is left (compilation dominates it), each next if twice the last is. Records into
 * `out` and calls `save` after each call; a failure or no timed call is `out.error`.
 */
export async function timeSteps(
  name: string,
  out: StepTimes,
  images: number,
  call: () => Promise<{ ms: number; loss: number }>,
  plan: () => { peakBytes: number; dispatches: number } | undefined,
  left: () => number,
  save: () => Promise<void>,
): Promise<void> {
  try {
    const first = await call();
    progress(`${name}: first call ${first.ms.toFixed(0)} ms (trace, compile, run)`);
    while (out.stepsMs.length < pick(5, 2) && left() > (out.stepsMs.length ? 2 * out.stepsMs.at(-1)! : first.ms / 2)) {
      const r = await call();
      out.stepsMs.push(r.ms);
      out.loss = r.loss;
      out.medianMs = median(out.stepsMs);
      out.compileS = (first.ms - out.medianMs) / 1000;
      out.imagesPerS = (images * 1000) / out.medianMs;
      out.peakBytes = plan()?.peakBytes;
      out.dispatches = plan()?.dispatches;
      await save();
      progress(`${name}: step ${out.stepsMs.length}: ${r.ms.toFixed(1)} ms, loss ${r.loss.toFixed(4)}`);
    }
    if (out.stepsMs.length === 0) out.error = `no timed step: the first call took ${first.ms.toFixed(0)} ms`;
  } catch (e) {
    out.error = errorText(e);
  }
  await save();
}
