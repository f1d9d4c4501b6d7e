/**
 * Batched matmul kernels for WebGPU, with transposed operands read in place (no transpose copies).
 * The blocked kernel gives each invocation a `TM x 4*TN4` block of the output and feeds many FMAs per load
 * (vec4 loads along whichever dimension is contiguous). On software adapters (lavapipe/llvmpipe) invocations
 * are SIMD lanes of a CPU core and workgroup memory only adds copies, so the blocking lives in registers.
 * Shapes whose N is not a multiple of 4 use the scalar kernel (one output per invocation).
 */
import type { Aval } from "../ops/prim.ts";
import type { KernelSource } from "../ops/rule.ts";
import { broadcastStrides, size } from "../ops/shape.ts";
import { offsetOf, perThreadKernel, WG } from "./codegen.ts";

/** Rows and vec4 columns per invocation. */
export interface MatmulTile {
  tm: number;
  tn4: number;
}

/** The default tile, chosen with bench/ on lavapipe (8 x 8 outputs per invocation). */
export const DEFAULT_TILE: MatmulTile = { tm: 8, tn4: 2 };

/** Problem description: `op(A)[..., M, K] x op(B)[..., K, N]`, op = transpose of the last two dims when set. */
export interface MatmulProblem {
  a: Aval;
  b: Aval;
  transA: boolean;
  transB: boolean;
  batch: number[];
  m: number;
  k: number;
  n: number;
}

/** Per-batch element offsets of an operand (0 along broadcast batch dims). */
export function batchStrides(x: Aval, batch: number[]): number[] {
  const mat = x.shape[x.shape.length - 1] * x.shape[x.shape.length - 2];
  return broadcastStrides(x.shape.slice(0, -2), batch).map((s) => s * mat);
}

/** Tiles the autotuner tries. */
export const CANDIDATE_TILES: readonly MatmulTile[] = [
  { tm: 8, tn4: 2 },
  { tm: 16, tn4: 2 },
  { tm: 4, tn4: 2 },
  { tm: 8, tn4: 1 },
  { tm: 4, tn4: 4 },
];

/** Tiles chosen by the autotuner, per shape class (see `shapeClass`). */
const tuned = new Map<string, MatmulTile>();

/** The key under which a tuned tile is cached: transposes, alignment and the exact sizes. */
export function shapeClass(p: MatmulProblem): string {
  return `${p.transA ? "T" : "N"}${p.transB ? "T" : "N"}|${size(p.batch)}x${p.m}x${p.k}x${p.n}`;
}

/** Records the tile to use for a shape class. */
export function setTunedTile(p: MatmulProblem, tile: MatmulTile): void {
  tuned.set(shapeClass(p), tile);
}

/** The tile for a problem: the tuned one if any, else the default. */
export function tileFor(p: MatmulProblem): MatmulTile {
  return tuned.get(shapeClass(p)) ?? DEFAULT_TILE;
}

/** Chooses the kernel for a problem: blocked for float32 unless the output is tiny. */
export function matmulKernel(p: MatmulProblem, tile = tileFor(p)): KernelSource {
  return p.a.dtype === "float32" && p.m * p.n >= 16 ? blockedMatmul(p, tile) : scalarMatmul(p);
}

/** One output element per invocation; any shapes and transposes. */
export function scalarMatmul({ a, b, transA, transB, batch, m, k, n }: MatmulProblem): KernelSource {
  const total = size(batch) * m * n;
  const ia = transA ? `p * ${m}u + i` : `i * ${k}u + p`;
  const ib = transB ? `j * ${k}u + p` : `p * ${n}u + j`;
  const body = `
  let j = gid % ${n}u;
  let i = (gid / ${n}u) % ${m}u;
  let bi = gid / ${m * n}u;
  ${offsetOf("oa", "bi", batch, batchStrides(a, batch))}
  ${offsetOf("ob", "bi", batch, batchStrides(b, batch))}
  var acc = 0.0;
  for (var p = 0u; p < ${k}u; p++) {
    acc = fma(in0[oa + ${ia}], in1[ob + ${ib}], acc);
  }
  out[gid] = acc;`;
  return { code: perThreadKernel([a.dtype, b.dtype], "float32", total, body), threads: total, workgroupSize: WG };
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

/**
 * The register-blocked kernel. When N is a multiple of 4, B rows and C rows are vec4-aligned; otherwise the
 * same blocking is kept with scalar loads and stores at the edges.
 */
export function blockedMatmul(p: MatmulProblem, tile = DEFAULT_TILE): KernelSource {
  const { a, b, transA, transB, batch, m, k, n } = p;
  const { tm, tn4 } = tile;
  const vecN = n % 4 === 0;
  const n4 = Math.ceil(n / 4);
  const colTiles = Math.ceil(n4 / tn4);
  const rowTiles = Math.ceil(m / tm);
  const threads = size(batch) * rowTiles * colTiles;
  const wg = 64;
  const acc = (r: number, c: number) => `c${r * tn4 + c}`;
  // A is read as vec4 along K (not transposed, K % 4 == 0) or along M (transposed, M % 4 == 0, tm % 4 == 0).
  const vecAk = !transA && k % 4 === 0;
  const vecAm = transA && m % 4 === 0 && tm % 4 === 0;
  // B^T rows are contiguous along K: read them as vec4 when K % 4 == 0 and use dot products.
  const dotB = transB && k % 4 === 0 && vecAk;
  const rowIdx = range(tm).map((r) => `let r${r} = min(row0 + ${r}u, ${m - 1}u);`);
  const colIdx = range(tn4 * 4).map((j) => `let j${j} = min(col4 * 4u + ${j}u, ${n - 1}u);`);
  const aAt = (r: number, pe: string) => (transA ? `A[oa + (${pe}) * ${m}u + r${r}]` : `A[oa + r${r} * ${k}u + ${pe}]`);
  const bVec = (c: number, pe: string) =>
    transB
      ? `vec4<f32>(${range(4).map((q) => `B[ob + j${4 * c + q} * ${k}u + ${pe}]`).join(", ")})`
      : vecN
      ? `B4[(ob + (${pe}) * ${n}u) / 4u + col4 + ${c}u]`
      : `vec4<f32>(${range(4).map((q) => `B[ob + (${pe}) * ${n}u + j${4 * c + q}]`).join(", ")})`;
  let loop: string;
  if (dotB) {
    const loadA = range(tm).map((r) => `let a${r} = A4[(oa + r${r} * ${k}u + p) / 4u];`);
    const loadB = range(tn4 * 4).map((j) => `let b${j} = B4[(ob + j${j} * ${k}u + p) / 4u];`);
    const fmas = range(tm).flatMap((r) =>
      range(tn4).map((c) =>
        `${acc(r, c)} += vec4<f32>(${range(4).map((q) => `dot(a${r}, b${4 * c + q})`).join(", ")});`
      )
    );
    loop = `for (var p = 0u; p < ${k}u; p += 4u) {\n    ${[...loadA, ...loadB, ...fmas].join("\n    ")}\n  }`;
  } else if (vecAk) {
    const loadA = range(tm).map((r) => `let a${r} = A4[(oa + r${r} * ${k}u + p) / 4u];`);
    const steps = range(4).flatMap((q) => [
      ...range(tn4).map((c) => `let b${q}_${c} = ${bVec(c, `p + ${q}u`)};`),
      ...range(tm).flatMap((r) =>
        range(tn4).map((c) => `${acc(r, c)} = fma(vec4<f32>(a${r}[${q}]), b${q}_${c}, ${acc(r, c)});`)
      ),
    ]);
    loop = `for (var p = 0u; p < ${k}u; p += 4u) {\n    ${[...loadA, ...steps].join("\n    ")}\n  }`;
  } else {
    const loadA = vecAm
      ? range(tm / 4).map((v) => `let av${v} = A4[(oa + p * ${m}u + row0) / 4u + ${v}u];`).concat(
        range(tm).map((r) => `let a${r} = av${Math.floor(r / 4)}[${r % 4}];`),
      )
      : range(tm).map((r) => `let a${r} = ${aAt(r, "p")};`);
    const loadB = range(tn4).map((c) => `let b${c} = ${bVec(c, "p")};`);
    const fmas = range(tm).flatMap((r) =>
      range(tn4).map((c) => `${acc(r, c)} = fma(vec4<f32>(a${r}), b${c}, ${acc(r, c)});`)
    );
    loop = `for (var p = 0u; p < ${k}u; p++) {\n    ${[...loadA, ...loadB, ...fmas].join("\n    ")}\n  }`;
  }
  const usesA4 = vecAk || vecAm;
  const usesB4 = (!transB && vecN) || dotB;
  const store = (r: number, j: number) => {
    const guard = `row0 + ${r}u < ${m}u && col4 * 4u + ${j}u < ${n}u`;
    return `if (${guard}) { C[bi * ${m * n}u + (row0 + ${r}u) * ${n}u + col4 * 4u + ${j}u] = ${acc(r, j >> 2)}[${
      j & 3
    }]; }`;
  };
  const store4 = (r: number, c: number) => {
    const guard = `row0 + ${r}u < ${m}u && col4 + ${c}u < ${n4}u`;
    return `if (${guard}) { C4[oc4 + (row0 + ${r}u) * ${n4}u + col4 + ${c}u] = ${acc(r, c)}; }`;
  };
  const stores = vecN
    ? range(tm).flatMap((r) => range(tn4).map((c) => store4(r, c)))
    : range(tm).flatMap((r) => range(tn4 * 4).map((j) => store(r, j)));
  const code = `
@group(0) @binding(0) var<storage, read> ${usesA4 ? "A4: array<vec4<f32>>" : "A: array<f32>"};
@group(0) @binding(1) var<storage, read> ${usesB4 ? "B4: array<vec4<f32>>" : "B: array<f32>"};
@group(0) @binding(2) var<storage, read_write> ${vecN ? "C4: array<vec4<f32>>" : "C: array<f32>"};
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
  ${offsetOf("ob", "bi", batch, batchStrides(b, batch))}
  ${vecN ? `let oc4 = bi * ${(m * n) / 4}u;` : ""}
  ${rowIdx.join("\n  ")}
  ${colIdx.join("\n  ")}
  ${range(tm * tn4).map((i) => `var c${i} = vec4<f32>(0.0);`).join("\n  ")}
  ${loop}
  ${stores.join("\n  ")}
}`;
  return { code, threads, workgroupSize: wg };
}
