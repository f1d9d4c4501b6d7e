/** Reductions over axes (sum, max, min) and argmax. */
import { isFloat } from "./dtype.ts";
import type { Aval, ReducePrim } from "./prim.ts";
import type { Rule } from "./rule.ts";
import { reduceAxes } from "./cpu_util.ts";
import { fmt, size, stridesOf } from "./shape.ts";
import * as api from "./api.ts";
import type { Tensor } from "./tensor.ts";
import { offsetOf, perThreadKernel, WG } from "../wgsl/codegen.ts";
import { wgslType } from "../wgsl/types.ts";

function reducedShape(shape: readonly number[], axes: readonly number[], keepdims: boolean): number[] {
  return keepdims ? shape.map((d, i) => (axes.includes(i) ? 1 : d)) : shape.filter((_, i) => !axes.includes(i));
}

function reduceAval(op: string, x: Aval, axes: readonly number[], keepdims: boolean): Aval {
  if (x.dtype === "bool") throw new TypeError(`${op}: cannot reduce bool ${fmt(x.shape)}; cast it first`);
  for (const a of axes) {
    if (a < 0 || a >= x.shape.length) throw new RangeError(`${op}: axis ${a} out of range for ${fmt(x.shape)}`);
  }
  if (op !== "sum" && axes.some((a) => x.shape[a] === 0)) {
    throw new RangeError(`${op}: cannot reduce an empty axis of ${fmt(x.shape)}`);
  }
  return { shape: reducedShape(x.shape, axes, keepdims), dtype: x.dtype };
}

/** The cotangent broadcast back over the reduced axes. */
function expandBack(g: Tensor, x: Tensor, axes: readonly number[]): Tensor {
  return api.broadcastTo(api.reshape(g, reducedShape(x.shape, axes, true)), x.shape);
}

function extreme(dtype: Aval["dtype"], sign: 1 | -1): string {
  // f32_bits (wgsl/types.ts): an infinity is not a valid WGSL const-expression in browsers.
  if (isFloat(dtype)) return sign > 0 ? "f32_bits(0x7f800000u)" : "f32_bits(0xff800000u)";
  if (dtype === "int32") return sign > 0 ? "2147483647i" : "(-2147483647i - 1i)";
  return sign > 0 ? "4294967295u" : "0u";
}

const DEFS: {
  [P in ReducePrim]: {
    init(d: Aval["dtype"]): number;
    initWgsl(d: Aval["dtype"]): string;
    step(acc: number, v: number): number;
    stepWgsl(acc: string, v: string): string;
    vjp(g: Tensor, x: Tensor, y: Tensor, axes: number[]): Tensor;
  };
} = {
  sum: {
    init: () => 0,
    initWgsl: (d) => `${wgslType(d)}(0)`,
    step: (a, v) => a + v,
    stepWgsl: (a, v) => `${a} + ${v}`,
    vjp: (g, x, _y, axes) => expandBack(g, x, axes),
  },
  max: {
    init: () => -Infinity,
    initWgsl: (d) => extreme(d, -1),
    step: (a, v) => (v > a || Number.isNaN(v) ? v : a),
    stepWgsl: (a, v) => `select(${a}, ${v}, ${v} > ${a} || ${v} != ${v})`,
    vjp: (g, x, y, axes) => extremeVjp(g, x, y, axes),
  },
  min: {
    init: () => Infinity,
    initWgsl: (d) => extreme(d, 1),
    step: (a, v) => (v < a || Number.isNaN(v) ? v : a),
    stepWgsl: (a, v) => `select(${a}, ${v}, ${v} < ${a} || ${v} != ${v})`,
    vjp: (g, x, y, axes) => extremeVjp(g, x, y, axes),
  },
};

/** Cotangent of max/min: shared equally among the elements equal to the extreme. */
function extremeVjp(g: Tensor, x: Tensor, y: Tensor, axes: number[]): Tensor {
  const hit = api.cast(api.equal(x, expandBack(y, x, axes)), x.dtype);
  const count = api.sum(hit, axes, true);
  return api.mul(hit, api.div(expandBack(g, x, axes), api.broadcastTo(count, x.shape)));
}

function reduceRule<P extends ReducePrim>(p: P): Rule<P> {
  const d = DEFS[p];
  return {
    arity: 1,
    shape: ([x], { axes, keepdims }) => reduceAval(p, x, axes, keepdims),
    cpu: ([x], [a], { axes }, out) => reduceAxes(x, a.shape, axes, out, d.init(a.dtype), d.step),
    vjp: (g, [x], y, { axes }) => [isFloat(x.dtype) ? d.vjp(g, x, y, axes) : null],
    wgsl: { kind: "reduce", init: d.initWgsl, step: d.stepWgsl },
  };
}

const argmaxRule: Rule<"argmax"> = {
  arity: 1,
  shape: ([x], { axis, keepdims }) => ({ ...reduceAval("argmax", x, [axis], keepdims), dtype: "int32" }),
  cpu: ([x], [a], { axis }, out) => {
    let best = -Infinity;
    return reduceAxes(x, a.shape, [axis], out, 0, (acc, v, pos) => {
      if (pos === 0 || v > best) {
        best = v;
        return pos;
      }
      return acc;
    });
  },
  vjp: () => [null],
  wgsl: {
    kind: "kernel",
    build: ([x], out, { axis }) => {
      const strides = stridesOf(x.shape);
      const kept = x.shape.map((_, i) => i).filter((i) => i !== axis);
      const n = size(out.shape);
      const body = `
  ${offsetOf("base", "gid", kept.map((i) => x.shape[i]), kept.map((i) => strides[i]))}
  var best = in0[base];
  var arg = 0i;
  for (var r = 1u; r < ${x.shape[axis]}u; r++) {
    let v = in0[base + r * ${strides[axis]}u];
    if (v > best) { best = v; arg = i32(r); }
  }
  out[gid] = arg;`;
      return { code: perThreadKernel([x.dtype], "int32", n, body), threads: n, workgroupSize: WG };
    },
  },
};

/** All reduction rules. */
export const REDUCE_RULES = {
  sum: reduceRule("sum"),
  max: reduceRule("max"),
  min: reduceRule("min"),
  argmax: argmaxRule,
};
