/**
 * Register-blocked batched matmul for WebGPU. Each invocation computes a `TM x TN` block of the output,
 * reading `B` rows as vec4 and (when K is a multiple of 4) `A` rows as vec4, so each load feeds many FMAs.
 * On software adapters (lavapipe/llvmpipe) invocations are SIMD lanes of a CPU core and workgroup memory only
 * adds copies, so the blocking lives in registers. Shapes that don't fit fall back to the scalar kernel.
 */
import type { Aval } from "../ops/prim.ts";
import type { KernelSource } from "../ops/rule.ts";
import { broadcastStrides, size } from "../ops/shape.ts";
import { offsetOf } from "./codegen.ts";

/** Rows and vec4 columns per invocation. */
export interface MatmulTile {
  tm: number;
  tn4: number;
}

/** The default tile, chosen by bench/matmul on lavapipe. */
export const DEFAULT_TILE: MatmulTile = { tm: 8, tn4: 2 };

/** True when the blocked kernel applies (N a multiple of 4). */
export function blockedApplies(n: number): boolean {
  return n % 4 === 0;
}

/** Per-batch element offsets of an operand (0 along broadcast batch dims). */
function batchStrides(x: Aval, batch: number[]): number[] {
  const mat = x.shape[x.shape.length - 1] * x.shape[x.shape.length - 2];
  return broadcastStrides(x.shape.slice(0, -2), batch).map((s) => s * mat);
}

/** The blocked kernel for `[..., M, K] x [..., K, N]` with batch dims `batch`. */
export function blockedMatmul(
  a: Aval,
  b: Aval,
  batch: number[],
  m: number,
  k: number,
  n: number,
  tile = DEFAULT_TILE,
): KernelSource {
  const { tm, tn4 } = tile;
  const n4 = n / 4;
  const colTiles = Math.ceil(n4 / tn4);
  const rowTiles = Math.ceil(m / tm);
  const threads = size(batch) * rowTiles * colTiles;
  const vecA = k % 4 === 0;
  const wg = 64;
  const accDecl = Array.from({ length: tm * tn4 }, (_, i) => `var c${i} = vec4<f32>(0.0);`).join("\n  ");
  const rowsA = Array.from({ length: tm }, (_, r) => `let ar${r} = min(row0 + ${r}u, ${m - 1}u) * ${k}u + oa;`).join(
    "\n  ",
  );
  const colsB = Array.from({ length: tn4 }, (_, c) => `let bc${c} = min(col4 + ${c}u, ${n4 - 1}u) + ob4;`).join("\n  ");
  let inner: string;
  if (vecA) {
    const loadsA = Array.from({ length: tm }, (_, r) => `let a${r} = A4[(ar${r} + p) / 4u];`).join("\n    ");
    const steps: string[] = [];
    for (let q = 0; q < 4; q++) {
      for (let c = 0; c < tn4; c++) steps.push(`let b${q}_${c} = B4[(p + ${q}u) * ${n4}u + bc${c}];`);
      for (let r = 0; r < tm; r++) {
        for (let c = 0; c < tn4; c++) {
          steps.push(`c${r * tn4 + c} = fma(vec4<f32>(a${r}[${q}]), b${q}_${c}, c${r * tn4 + c});`);
        }
      }
    }
    inner = `for (var p = 0u; p < ${k}u; p += 4u) {
    ${loadsA}
    ${steps.join("\n    ")}
  }`;
  } else {
    const loadsA = Array.from({ length: tm }, (_, r) => `let a${r} = A[ar${r} + p];`).join("\n    ");
    const steps: string[] = [];
    for (let c = 0; c < tn4; c++) steps.push(`let b${c} = B4[p * ${n4}u + bc${c}];`);
    for (let r = 0; r < tm; r++) {
      for (let c = 0; c < tn4; c++) steps.push(`c${r * tn4 + c} = fma(vec4<f32>(a${r}), b${c}, c${r * tn4 + c});`);
    }
    inner = `for (var p = 0u; p < ${k}u; p++) {
    ${loadsA}
    ${steps.join("\n    ")}
  }`;
  }
  const stores: string[] = [];
  for (let r = 0; r < tm; r++) {
    for (let c = 0; c < tn4; c++) {
      stores.push(
        `if (row0 + ${r}u < ${m}u && col4 + ${c}u < ${n4}u) { C4[oc4 + (row0 + ${r}u) * ${n4}u + col4 + ${c}u] = c${
          r * tn4 + c
        }; }`,
      );
    }
  }
  const code = `
@group(0) @binding(0) var<storage, read> ${vecA ? "A4: array<vec4<f32>>" : "A: array<f32>"};
@group(0) @binding(1) var<storage, read> B4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> C4: array<vec4<f32>>;
@compute @workgroup_size(${wg})
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
  let gid = g.x + g.y * nw.x * ${wg}u;
  if (gid >= ${threads}u) { return; }
  let ct = gid % ${colTiles}u;
  let rt = (gid / ${colTiles}u) % ${rowTiles}u;
  let bi = gid / ${colTiles * rowTiles}u;
  let row0 = rt * ${tm}u;
  let col4 = ct * ${tn4}u;
  ${offsetOf("oa", "bi", batch, batchStrides(a, batch))}
  ${offsetOf("obe", "bi", batch, batchStrides(b, batch))}
  let ob4 = obe / 4u;
  let oc4 = bi * ${(m * n) / 4}u;
  ${rowsA}
  ${colsB}
  ${accDecl}
  ${inner}
  ${stores.join("\n  ")}
}`;
  return { code, threads, workgroupSize: wg };
}
