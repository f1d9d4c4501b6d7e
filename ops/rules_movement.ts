/** Movement primitives: reshape, transpose, broadcastTo, slice, pad, concat, gather/scatterAdd, stopGradient. */
import { allocHost, type HostArray, toHost } from "./dtype.ts";
import type { Aval } from "./prim.ts";
import type { KernelSource, Rule } from "./rule.ts";
import { broadcastStrides, fmt, mergeDims, sameShape, size, stridesOf } from "./shape.ts";
import { forEachIndex } from "./cpu_util.ts";
import * as api from "./api.ts";
import { offsetOf, perThreadKernel, WG } from "../wgsl/codegen.ts";
import { PRELUDE, wgslType } from "../wgsl/types.ts";

/** Reads `out[idx] = x[offset + sum(idx[d] * strides[d])]`: transpose, broadcast and slice are all such views. */
function viewCpu(x: HostArray, out: Aval, strides: readonly number[], offset: number): HostArray {
  const res = allocHost(out.dtype, size(out.shape));
  forEachIndex(out.shape, (i, idx) => {
    let o = offset;
    for (let d = 0; d < idx.length; d++) o += idx[d] * strides[d];
    res[i] = x[o];
  });
  return res;
}

function viewKernel(x: Aval, out: Aval, strides: readonly number[], offset: number): KernelSource {
  const { shape, strides: st } = mergeDims(out.shape, strides);
  const n = size(out.shape);
  const last = shape.length - 1;
  // Runs of 4 along a contiguous innermost dimension move as one vec4 (every GPU dtype is 4 bytes wide).
  const aligned = offset % 4 === 0 && st.slice(0, last).every((d) => d % 4 === 0);
  if (last >= 0 && st[last] === 1 && shape[last] % 4 === 0 && aligned) {
    const shape4 = [...shape.slice(0, last), shape[last] / 4];
    const strides4 = [...st.slice(0, last).map((d) => d / 4), 1];
    const t = wgslType(x.dtype);
    const code = `@group(0) @binding(0) var<storage, read> in0: array<vec4<${t}>>;
@group(0) @binding(1) var<storage, read_write> out: array<vec4<${t}>>;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
  let gid = g.x + g.y * nw.x * ${WG}u;
  if (gid >= ${n / 4}u) { return; }
  ${offsetOf("o", "gid", shape4, strides4)}
  out[gid] = in0[o + ${offset / 4}u];
}`;
    return { code, threads: n / 4, workgroupSize: WG };
  }
  const body = `${offsetOf("o", "gid", shape, st)}
  out[gid] = in0[o + ${offset}u];`;
  return { code: perThreadKernel([x.dtype], out.dtype, n, body), threads: n, workgroupSize: WG };
}

function transposeStrides(shape: readonly number[], perm: readonly number[]): number[] {
  const s = stridesOf(shape);
  return perm.map((p) => s[p]);
}

function sliceOffset(shape: readonly number[], starts: readonly number[]): number {
  const s = stridesOf(shape);
  return starts.reduce((acc, st, d) => acc + st * s[d], 0);
}

const reshape: Rule<"reshape"> = {
  arity: 1,
  alias: true,
  shape: ([x], { shape }) => {
    if (shape.some((d) => !Number.isInteger(d) || d < 0) || size(shape) !== size(x.shape)) {
      throw new RangeError(`reshape: cannot reshape ${fmt(x.shape)} (${size(x.shape)} elements) to ${fmt(shape)}`);
    }
    return { shape, dtype: x.dtype };
  },
  cpu: ([x]) => x,
  vjp: (g, [x]) => [api.reshape(g, x.shape)],
  wgsl: { kind: "alias" },
};

const stopGradient: Rule<"stopGradient"> = {
  arity: 1,
  alias: true,
  shape: ([x]) => x,
  cpu: ([x]) => x,
  vjp: () => [null],
  wgsl: { kind: "alias" },
};

const transpose: Rule<"transpose"> = {
  arity: 1,
  shape: ([x], { perm }) => {
    const ok = perm.length === x.shape.length && [...perm].sort((a, b) => a - b).every((p, i) => p === i);
    if (!ok) throw new RangeError(`transpose: perm [${perm}] is not a permutation of the axes of ${fmt(x.shape)}`);
    return { shape: perm.map((p) => x.shape[p]), dtype: x.dtype };
  },
  cpu: ([x], [a], { perm }, out) => viewCpu(x, out, transposeStrides(a.shape, perm), 0),
  vjp: (g, _ins, _y, { perm }) => {
    const inv = new Array<number>(perm.length);
    perm.forEach((p, i) => (inv[p] = i));
    return [api.transpose(g, inv)];
  },
  wgsl: { kind: "kernel", build: ([a], out, { perm }) => viewKernel(a, out, transposeStrides(a.shape, perm), 0) },
};

const broadcastTo: Rule<"broadcastTo"> = {
  arity: 1,
  shape: ([x], { shape }) => {
    const s = api.broadcastShapeOf("broadcastTo", x.shape, shape);
    if (!sameShape(s, shape)) throw new RangeError(`broadcastTo: cannot broadcast ${fmt(x.shape)} to ${fmt(shape)}`);
    return { shape, dtype: x.dtype };
  },
  cpu: ([x], [a], _p, out) => viewCpu(x, out, broadcastStrides(a.shape, out.shape), 0),
  vjp: (g, [x]) => [api.sumToShape(g, x.shape)],
  wgsl: { kind: "kernel", build: ([a], out) => viewKernel(a, out, broadcastStrides(a.shape, out.shape), 0) },
};

const slice: Rule<"slice"> = {
  arity: 1,
  shape: ([x], { starts, ends }) => {
    const bad = starts.length !== x.shape.length || ends.length !== x.shape.length ||
      x.shape.some((d, i) => !(0 <= starts[i] && starts[i] <= ends[i] && ends[i] <= d));
    if (bad) throw new RangeError(`slice: [${starts}]..[${ends}] is out of bounds for ${fmt(x.shape)}`);
    return { shape: x.shape.map((_, i) => ends[i] - starts[i]), dtype: x.dtype };
  },
  cpu: ([x], [a], { starts }, out) => viewCpu(x, out, stridesOf(a.shape), sliceOffset(a.shape, starts)),
  vjp: (g, [x], _y, { starts, ends }) => [api.pad(g, starts, x.shape.map((d, i) => d - ends[i]))],
  wgsl: {
    kind: "kernel",
    build: ([a], out, { starts }) => viewKernel(a, out, stridesOf(a.shape), sliceOffset(a.shape, starts)),
  },
};

const pad: Rule<"pad"> = {
  arity: 1,
  shape: ([x], { lo, hi }) => {
    const bad = lo.length !== x.shape.length || hi.length !== x.shape.length ||
      [...lo, ...hi].some((v) => !Number.isInteger(v) || v < 0);
    if (bad) throw new RangeError(`pad: lo [${lo}] / hi [${hi}] do not fit ${fmt(x.shape)} (non-negative ints)`);
    return { shape: x.shape.map((d, i) => d + lo[i] + hi[i]), dtype: x.dtype };
  },
  cpu: ([x], [a], { lo, value }, out) => {
    const res = allocHost(out.dtype, size(out.shape));
    const s = stridesOf(a.shape);
    forEachIndex(out.shape, (i, idx) => {
      let o = 0;
      for (let d = 0; d < idx.length; d++) {
        const c = idx[d] - lo[d];
        if (c < 0 || c >= a.shape[d]) {
          o = -1;
          break;
        }
        o += c * s[d];
      }
      res[i] = o < 0 ? value : x[o];
    });
    return res;
  },
  vjp: (g, [x], _y, { lo }) => [api.slice(g, lo, lo.map((l, i) => l + x.shape[i]))],
  wgsl: {
    kind: "kernel",
    build: ([a], out, { lo, value }) => padKernel(a, out, lo, value),
  },
};

/**
 * The pad kernel: unpadded inner dimensions merge into their outer neighbour (fewer divisions per element), and
 * when the merged innermost dimension and its padding come in multiples of 4, each invocation moves a vec4.
 */
function padKernel(a: Aval, out: Aval, lo: readonly number[], value: number): KernelSource {
  const dims: { out: number; lo: number; inp: number }[] = [];
  out.shape.forEach((d, i) => {
    const k = dims.length - 1;
    if (k >= 0 && d === a.shape[i]) {
      // No padding along i: fold it into the previous dimension.
      dims[k] = { out: dims[k].out * d, lo: dims[k].lo * d, inp: dims[k].inp * d };
    } else dims.push({ out: d, lo: lo[i], inp: a.shape[i] });
  });
  const last = dims.at(-1);
  const w = last && last.out % 4 === 0 && last.lo % 4 === 0 && last.inp % 4 === 0 ? 4 : 1;
  if (w === 4) dims[dims.length - 1] = { out: last!.out / 4, lo: last!.lo / 4, inp: last!.inp / 4 };
  const n = size(out.shape) / w;
  const t = wgslType(a.dtype);
  const lines = [`var r = gid;`, `var o = 0u;`, `var inside = true;`, `var stride = 1u;`];
  for (let d = dims.length - 1; d >= 0; d--) {
    lines.push(`{ let c = i32(r % ${dims[d].out}u) - ${dims[d].lo}i; r = r / ${dims[d].out}u;`);
    lines.push(`  if (c < 0i || c >= ${dims[d].inp}i) { inside = false; } else { o += u32(c) * stride; }`);
    lines.push(`  stride *= ${dims[d].inp}u; }`);
  }
  // The fill value's bits as the CPU stores them: exact for every value, including +-Infinity and NaN (which
  // have no WGSL literal) and values outside the range of the integer types.
  const host = toHost(a.dtype, [value]);
  const bits = a.dtype === "bool" ? host[0] : new Uint32Array(host.buffer)[0];
  // `let`, not a literal: a const-expression bitcast to an infinity or NaN is an error in browsers (Tint).
  const vt = w === 4 ? `vec4<${t}>` : t;
  lines.push(`if (inside) { out[gid] = in0[o]; } else { let fill = ${bits}u; out[gid] = ${vt}(bitcast<${t}>(fill)); }`);
  const code = `${PRELUDE}
@group(0) @binding(0) var<storage, read> in0: array<${vt}>;
@group(0) @binding(1) var<storage, read_write> out: array<${vt}>;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
  let gid = g.x + g.y * nw.x * ${WG}u;
  if (gid >= ${n}u) { return; }
  ${lines.join("\n  ")}
}`;
  return { code, threads: n, workgroupSize: WG };
}

const concat: Rule<"concat"> = {
  arity: "variadic",
  shape: (ins, { axis }) => {
    const first = ins[0];
    for (const x of ins) {
      const ok = x.dtype === first.dtype && x.shape.length === first.shape.length &&
        x.shape.every((d, i) => i === axis || d === first.shape[i]);
      if (!ok) {
        throw new RangeError(
          `concat: cannot join ${ins.map((a) => `${a.dtype}${fmt(a.shape)}`).join(", ")} on axis ${axis}`,
        );
      }
    }
    const shape = [...first.shape];
    shape[axis] = ins.reduce((a, x) => a + x.shape[axis], 0);
    return { shape, dtype: first.dtype };
  },
  cpu: (xs, avals, { axis }, out) => {
    const res = allocHost(out.dtype, size(out.shape));
    const outer = size(out.shape.slice(0, axis));
    const inner = size(out.shape.slice(axis + 1));
    let col = 0;
    const rowLen = out.shape[axis] * inner;
    xs.forEach((x, k) => {
      const len = avals[k].shape[axis] * inner;
      for (let o = 0; o < outer; o++) res.set(x.subarray(o * len, (o + 1) * len), o * rowLen + col);
      col += len;
    });
    return res;
  },
  vjp: (g, ins, _y, { axis }) => {
    let at = 0;
    return ins.map((x) => {
      const starts = g.shape.map((_, i) => (i === axis ? at : 0));
      const ends = g.shape.map((d, i) => (i === axis ? at + x.shape[axis] : d));
      at += x.shape[axis];
      return api.slice(g, starts, ends);
    });
  },
  wgsl: {
    kind: "kernel",
    build: (ins, out, { axis }) => {
      const n = size(out.shape);
      const inner = size(out.shape.slice(axis + 1));
      const lines = [
        `let inner = gid % ${inner}u;`,
        `let a = (gid / ${inner}u) % ${out.shape[axis]}u;`,
        `let outer = gid / ${inner * out.shape[axis]}u;`,
      ];
      let at = 0;
      ins.forEach((x, k) => {
        const d = x.shape[axis];
        lines.push(
          `${k > 0 ? "else " : ""}if (a < ${
            at + d
          }u) { out[gid] = in${k}[(outer * ${d}u + a - ${at}u) * ${inner}u + inner]; }`,
        );
        at += d;
      });
      return {
        code: perThreadKernel(ins.map((x) => x.dtype), out.dtype, n, lines.join("\n  ")),
        threads: n,
        workgroupSize: WG,
      };
    },
  },
};

function checkIndices(op: string, idx: Aval): void {
  if (idx.dtype !== "int32") throw new TypeError(`${op}: indices must be int32, got ${idx.dtype}${fmt(idx.shape)}`);
}

/** Sizes of the blocks before the axis, of the index array, and after the axis. */
function gatherBlocks(x: Aval, idx: Aval, axis: number) {
  return {
    pre: size(x.shape.slice(0, axis)),
    nIdx: size(idx.shape),
    post: size(x.shape.slice(axis + 1)),
    dim: x.shape[axis],
  };
}

const clampIndex = (i: number, dim: number) => Math.min(Math.max(i, 0), dim - 1);

const gather: Rule<"gather"> = {
  arity: 2,
  shape: ([x, idx], { axis }) => {
    checkIndices("gather", idx);
    if (axis < 0 || axis >= x.shape.length) {
      throw new RangeError(`gather: axis ${axis} out of range for ${fmt(x.shape)}`);
    }
    if (x.shape[axis] === 0) throw new RangeError(`gather: cannot index the empty axis ${axis} of ${fmt(x.shape)}`);
    return { shape: [...x.shape.slice(0, axis), ...idx.shape, ...x.shape.slice(axis + 1)], dtype: x.dtype };
  },
  cpu: ([x, idx], [a, ia], { axis }, out) => {
    const { pre, nIdx, post, dim } = gatherBlocks(a, ia, axis);
    const res = allocHost(out.dtype, size(out.shape));
    for (let p = 0; p < pre; p++) {
      for (let j = 0; j < nIdx; j++) {
        const src = (p * dim + clampIndex(idx[j], dim)) * post;
        res.set(x.subarray(src, src + post), (p * nIdx + j) * post);
      }
    }
    return res;
  },
  vjp: (g, [x, idx], _y, { axis }) => [api.scatterAdd(g, idx, axis, x.shape[axis]), null],
  wgsl: {
    kind: "kernel",
    build: ([a, ia], out, { axis }) => {
      const { nIdx, post, dim } = gatherBlocks(a, ia, axis);
      const n = size(out.shape);
      const body = `
  let q = gid % ${post}u;
  let j = (gid / ${post}u) % ${nIdx}u;
  let p = gid / ${post * nIdx}u;
  let i = u32(clamp(in1[j], 0i, ${dim - 1}i));
  out[gid] = in0[(p * ${dim}u + i) * ${post}u + q];`;
      return { code: perThreadKernel([a.dtype, "int32"], out.dtype, n, body), threads: n, workgroupSize: WG };
    },
  },
};

const scatterAdd: Rule<"scatterAdd"> = {
  arity: 2,
  shape: ([u, idx], { axis, size: dim }) => {
    checkIndices("scatterAdd", idx);
    const r = idx.shape.length;
    const ok = axis >= 0 && axis + r <= u.shape.length && idx.shape.every((d, i) => u.shape[axis + i] === d) &&
      Number.isInteger(dim) && dim > 0;
    if (!ok) {
      throw new RangeError(`scatterAdd: updates ${fmt(u.shape)} do not hold indices ${fmt(idx.shape)} at axis ${axis}`);
    }
    return { shape: [...u.shape.slice(0, axis), dim, ...u.shape.slice(axis + r)], dtype: u.dtype };
  },
  cpu: ([u, idx], [, ia], { axis, size: dim }, out) => {
    const pre = size(out.shape.slice(0, axis));
    const post = size(out.shape.slice(axis + 1));
    const nIdx = size(ia.shape);
    const res = allocHost(out.dtype, size(out.shape));
    for (let p = 0; p < pre; p++) {
      for (let j = 0; j < nIdx; j++) {
        const dst = (p * dim + clampIndex(idx[j], dim)) * post;
        const src = (p * nIdx + j) * post;
        for (let q = 0; q < post; q++) res[dst + q] += u[src + q];
      }
    }
    return res;
  },
  vjp: (g, [_u, idx], _y, { axis }) => [api.gather(g, idx, axis), null],
  wgsl: {
    kind: "kernel",
    // One thread per destination row (and chunk of up to 128 trailing elements) scans the indices once and
    // adds every matching update row: no float atomics, a deterministic order, and the index scan is shared
    // by the whole row instead of repeated for each of its elements.
    build: ([u, ia], out, { axis, size: dim }) => {
      const post = size(out.shape.slice(axis + 1));
      const pre = size(out.shape.slice(0, axis));
      const nIdx = size(ia.shape);
      const chunk = Math.min(post, 128);
      const chunks = Math.ceil(post / chunk);
      const n = pre * dim * chunks;
      const t = wgslType(u.dtype);
      const body = `
  let c = gid % ${chunks}u;
  let s = (gid / ${chunks}u) % ${dim}u;
  let p = gid / ${chunks * dim}u;
  let q0 = c * ${chunk}u;
  let q1 = min(q0 + ${chunk}u, ${post}u);
  let dst = (p * ${dim}u + s) * ${post}u;
  for (var q = q0; q < q1; q++) { out[dst + q] = ${t}(0); }
  for (var j = 0u; j < ${nIdx}u; j++) {
    if (u32(clamp(in1[j], 0i, ${dim - 1}i)) == s) {
      let src = (p * ${nIdx}u + j) * ${post}u;
      for (var q = q0; q < q1; q++) { out[dst + q] += in0[src + q]; }
    }
  }`;
      return { code: perThreadKernel([u.dtype, "int32"], out.dtype, n, body), threads: n, workgroupSize: WG };
    },
  },
};

/** All movement rules. */
export const MOVEMENT_RULES = { reshape, stopGradient, transpose, broadcastTo, slice, pad, concat, gather, scatterAdd };
