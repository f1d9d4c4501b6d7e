/**
 * A short matmul autotune: for each shape class it times the candidate tiles on the device (a few dispatches
 * in one submission each) and caches the fastest. Timing needs awaits, so tuning is an explicit async step
 * (`jitted.tune(...)` or `tuneMatmul`) taken once at start-up; untuned shapes use the default tile.
 */
import type { Graph } from "../autograd/graph.ts";
import { matmulProblem } from "../ops/rules_linalg.ts";
import type { PrimParams } from "../ops/prim.ts";
import { size } from "../ops/shape.ts";
import type { WebGpuBackend } from "./backend.ts";
import { gpuBytes } from "./backend.ts";
import {
  blockedMatmul,
  CANDIDATE_TILES,
  type MatmulProblem,
  type MatmulTile,
  setTunedTile,
  shapeClass,
} from "./matmul.ts";

const done = new Map<string, MatmulTile>();

/** Times each candidate tile on `p` and records the fastest; returns it. */
export async function tuneMatmul(backend: WebGpuBackend, p: MatmulProblem, reps = 3): Promise<MatmulTile> {
  const key = shapeClass(p);
  const known = done.get(key);
  if (known) return known;
  const a = backend.alloc(gpuBytes(size(p.a.shape)));
  const b = backend.alloc(gpuBytes(size(p.b.shape)));
  const c = backend.alloc(gpuBytes(size(p.batch) * p.m * p.n));
  let best = CANDIDATE_TILES[0];
  let bestTime = Infinity;
  for (const tile of CANDIDATE_TILES) {
    const kernel = blockedMatmul(p, tile);
    backend.dispatch(kernel, [a, b, c]); // compile and warm up
    await backend.sync();
    const t0 = performance.now();
    for (let r = 0; r < reps; r++) backend.dispatch(kernel, [a, b, c]);
    await backend.sync();
    const t = performance.now() - t0;
    if (t < bestTime) [best, bestTime] = [tile, t];
  }
  for (const buf of [a, b, c]) backend.release(buf);
  done.set(key, best);
  setTunedTile(p, best);
  return best;
}

/** Tunes every float32 matmul of a graph (distinct shape classes once each). */
export async function tuneGraph(backend: WebGpuBackend, graph: Graph): Promise<number> {
  let tunedCount = 0;
  for (const e of graph.eqns) {
    if (e.prim !== "matmul") continue;
    const [a, b] = e.inputs.map((id) => graph.avals[id]);
    if (a.dtype !== "float32") continue;
    const p = matmulProblem(a, b, e.params as PrimParams["matmul"]);
    if (!done.has(shapeClass(p))) {
      await tuneMatmul(backend, p);
      tunedCount++;
    }
  }
  return tunedCount;
}
