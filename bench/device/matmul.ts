/**
 * Phase `matmul` of the device benchmark: float32 GFLOP/s of every matmul kernel family the code offers, at square
 * sizes (1024³ … 8192³; 256³, 512³ in the dry run) and the ViT-S/16 training shapes (tokens = images × 197), each
 * family at its best candidate for the shape, plus which candidate the autotuner keeps.
 *
 * The families and their candidates are the autotuner's (`wgsl/autotune.ts`: `candidates`, or, before kernel
 * families, the register-blocked `CANDIDATE_TILES`). Each candidate is dispatched directly on the device (one
 * warm-up, then repetitions of N back-to-back dispatches ending in a queue drain, N so that a repetition takes
 * ~`TARGET_MS`); the median time per dispatch is reported.
 *
 * @module
 */
// First: the library in its own import order (importing wgsl/autotune.ts first can meet an import cycle half-done).
import "../../mod.ts";
import type { KernelSource } from "../../ops/rule.ts";
import * as autotune from "../../wgsl/autotune.ts";
import * as matmulCode from "../../wgsl/matmul.ts";
import { gpuBytes } from "../../wgsl/backend.ts";
import type { WebGpuBackend } from "../../wgsl/backend.ts";
import { errorText, median, progress } from "../util.ts";
import { gpuBackend, isDry, makeDeadline, pick, writeFragment } from "./common.ts";

/** One matmul shape: `batch` products of `op(A)[m, k] · op(B)[k, n]`. */
export interface MatmulShape {
  label: string;
  batch: number;
  m: number;
  k: number;
  n: number;
  transA: boolean;
  transB: boolean;
}

/** One kernel the code can run for a problem. */
export interface Candidate {
  family: string;
  variant: string;
  kernel: KernelSource;
}

/** A family's best candidate on one shape. */
export interface FamilyResult {
  family: string;
  variant: string;
  ms: number;
  gflops: number;
  /** Candidates of the family that were timed (the best is reported). */
  tried: number;
}

/** What the matmul phase records. */
export interface MatmulFragment {
  shapes: (MatmulShape & { gflop: number; families: FamilyResult[]; errors: string[]; skipped?: string })[];
  families: string[];
  targetMs: number;
}

const TARGET_MS = pick(150, 20);
/** A dispatch slower than this is timed once. */
const SLOW_MS = 500;

/** Images of the ViT-S/16 shapes (197 tokens each) and its sizes: dim 384, 6 heads of 64, MLP 1536. */
const VIT_IMAGES = pick(64, 1);
const T = 197;

function vitShapes(): MatmulShape[] {
  const rows = VIT_IMAGES * T, bh = VIT_IMAGES * 6;
  const s = (label: string, batch: number, m: number, k: number, n: number, transA = false, transB = false) => ({
    label,
    batch,
    m,
    k,
    n,
    transA,
    transB,
  });
  return [
    s("ViT-S qkv x·Wᵀ", 1, rows, 384, 1152, false, true),
    s("ViT-S proj x·Wᵀ", 1, rows, 384, 384, false, true),
    s("ViT-S fc1 x·Wᵀ", 1, rows, 384, 1536, false, true),
    s("ViT-S fc2 x·Wᵀ", 1, rows, 1536, 384, false, true),
    s("ViT-S fc1 dx = dy·W", 1, rows, 1536, 384),
    s("ViT-S fc1 dW = dyᵀ·x", 1, 1536, rows, 384, true, false),
    s("ViT-S attn q·kᵀ", bh, T, 64, T, false, true),
    s("ViT-S attn p·v", bh, T, T, 64),
  ];
}

/** Every shape of the phase: the squares, the ViT shapes before the largest square (the costliest to time). */
export function matmulShapes(): MatmulShape[] {
  const square = (n: number) => ({
    label: `square ${n}³`,
    batch: 1,
    m: n,
    k: n,
    n,
    transA: false,
    transB: false,
  });
  // Dry: one ViT shape per operand form (transposed B, plain, transposed A, batched), to stay quick on lavapipe.
  const dryForms = ["ViT-S qkv x·Wᵀ", "ViT-S fc1 dx = dy·W", "ViT-S fc1 dW = dyᵀ·x", "ViT-S attn q·kᵀ"];
  return isDry() ? [256, 512].map(square).concat(vitShapes().filter((s) => dryForms.includes(s.label))) : [
    ...[1024, 2048, 4096].map(square),
    ...vitShapes(),
    square(8192),
  ];
}

/** The problem our kernels take for a shape (contiguous operands, transposed ones stored `[k, m]` / `[n, k]`). */
function problemOf(s: MatmulShape): matmulCode.MatmulProblem {
  const lead = s.batch > 1 ? [s.batch] : [];
  const a = { shape: [...lead, ...(s.transA ? [s.k, s.m] : [s.m, s.k])], dtype: "float32" as const };
  const b = { shape: [...lead, ...(s.transB ? [s.n, s.k] : [s.k, s.n])], dtype: "float32" as const };
  return { a, b, transA: s.transA, transB: s.transB, batch: lead, m: s.m, k: s.k, n: s.n };
}

/** A choice of the autotuner: its family and that family's parameters (tile sizes). */
type Choice = { family: string } & Record<string, unknown>;

/**
 * The kernel candidates the autotuner tries for a problem, family by family: `wgsl/autotune.ts`'s `candidates`
 * where it exists (each built by `matmulKernel(problem, choice)`), else the register-blocked tiles it times.
 */
export function candidatesOf(gpu: WebGpuBackend, p: matmulCode.MatmulProblem): Candidate[] {
  const variant = (c: Choice) =>
    Object.entries(c).filter(([k]) => k !== "family").map(([k, v]) => `${k}=${v}`).join(" ");
  const fromTuner = (autotune as Record<string, unknown>).candidates;
  if (typeof fromTuner === "function") {
    const build = matmulCode.matmulKernel as unknown as (p: matmulCode.MatmulProblem, c: Choice) => KernelSource;
    return (fromTuner as (b: WebGpuBackend, p: matmulCode.MatmulProblem) => Choice[])(gpu, p).map((c) => ({
      family: c.family,
      variant: variant(c),
      kernel: build(p, c),
    }));
  }
  return matmulCode.CANDIDATE_TILES.map((t) => ({
    family: "blocked",
    variant: variant({ family: "blocked", ...t }),
    kernel: matmulCode.blockedMatmul(p, t),
  }));
}

/** Median ms per dispatch of one kernel (buffers allocated by the caller). */
async function timeKernel(
  gpu: WebGpuBackend,
  kernel: KernelSource,
  bufs: Parameters<WebGpuBackend["dispatch"]>[1],
  left: () => number,
): Promise<number> {
  gpu.dispatch(kernel, bufs); // compiles the pipeline
  await gpu.sync();
  const t0 = performance.now();
  gpu.dispatch(kernel, bufs);
  await gpu.sync();
  const once = Math.max(performance.now() - t0, 0.01);
  // A slow candidate (the scalar kernel at 8192³) is measured by that one call: repeating it costs the budget.
  if (once > SLOW_MS) return once;
  const iters = Math.max(1, Math.min(500, Math.round(TARGET_MS / once)));
  const reps = left() < 30_000 ? 1 : pick(3, 1);
  const per: number[] = [];
  for (let r = 0; r < reps; r++) {
    const t = performance.now();
    for (let i = 0; i < iters; i++) gpu.dispatch(kernel, bufs);
    await gpu.sync();
    per.push((performance.now() - t) / iters);
  }
  return median(per);
}

if (import.meta.main) {
  const gpu = await gpuBackend();
  const left = makeDeadline();
  const shapes = matmulShapes();
  const out: MatmulFragment = { shapes: [], families: [], targetMs: TARGET_MS };
  for (const s of shapes) {
    const gflop = (2 * s.batch * s.m * s.k * s.n) / 1e9;
    const row: MatmulFragment["shapes"][number] = { ...s, gflop, families: [], errors: [] };
    out.shapes.push(row);
    if (left() < 5_000) {
      row.skipped = "phase budget spent";
      continue;
    }
    const p = problemOf(s);
    const bufs = [s.batch * s.m * s.k, s.batch * s.k * s.n, s.batch * s.m * s.n].map((n) => gpu.alloc(gpuBytes(n)));
    const best = new Map<string, FamilyResult>();
    for (const c of candidatesOf(gpu, p)) {
      if (!out.families.includes(c.family)) out.families.push(c.family);
      if (left() < 3_000) {
        row.errors.push(`${c.family} ${c.variant}: not timed (phase budget spent)`);
        continue;
      }
      try {
        const ms = await timeKernel(gpu, c.kernel, bufs, left);
        const prev = best.get(c.family);
        const r = {
          family: c.family,
          variant: c.variant,
          ms,
          gflops: gflop / (ms / 1000),
          tried: (prev?.tried ?? 0) + 1,
        };
        best.set(c.family, !prev || ms < prev.ms ? r : { ...prev, tried: r.tried });
      } catch (e) {
        row.errors.push(`${c.family} ${c.variant}: ${errorText(e)}`);
      }
    }
    bufs.forEach((b) => gpu.release(b));
    row.families = [...best.values()];
    progress(
      `${s.label}: ${row.families.map((f) => `${f.family} ${f.variant} ${f.gflops.toFixed(1)}`).join(", ")} GFLOP/s`,
    );
    await writeFragment("matmul", out);
  }
  await writeFragment("matmul", out);
}
