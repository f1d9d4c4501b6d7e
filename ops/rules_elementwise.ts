/**
 * Elementwise primitives, each declared by one formula: a CPU function, a WGSL expression and a derivative.
 * The shape rule (NumPy broadcasting, equal dtypes) is shared.
 */
import { assertDType, type DType, isFloat, isInt } from "./dtype.ts";
import type { Aval, BinaryPrim, ComparePrim, UnaryPrim } from "./prim.ts";
import type { Rule } from "./rule.ts";
import { mapBroadcast } from "./cpu_util.ts";
import { erf64 } from "./cpu_util.ts";
import { fmt } from "./shape.ts";
import * as api from "./api.ts";
import type { Tensor } from "./tensor.ts";
import { wgslType } from "../wgsl/types.ts";

type Kinds = "float" | "numeric" | "any";

function checkKind(op: string, a: Aval, kinds: Kinds): void {
  const ok = kinds === "any" || (kinds === "float" ? isFloat(a.dtype) : a.dtype !== "bool");
  if (!ok) throw new TypeError(`${op}: unsupported dtype ${a.dtype}${fmt(a.shape)} (needs ${kinds})`);
}

/** Shared rule: operands of one dtype that broadcast together. */
export function broadcastAval(op: string, ins: readonly Aval[], kinds: Kinds, outDtype?: DType): Aval {
  ins.forEach((a) => checkKind(op, a, kinds));
  const d = ins[0].dtype;
  for (const a of ins) {
    if (a.dtype !== d) {
      throw new TypeError(`${op}: dtype mismatch: ${ins.map((x) => `${x.dtype}${fmt(x.shape)}`).join(" vs ")}`);
    }
  }
  return { shape: api.broadcastShapeOf(op, ...ins.map((a) => a.shape)), dtype: outDtype ?? d };
}

interface UnaryDef {
  kinds: Kinds;
  cpu(x: number, dtype: DType): number;
  wgsl(x: string, dtype: DType): string;
  /** Cotangent of the operand from the output cotangent `g`, the operand `x` and the output `y`. */
  vjp: ((g: Tensor, x: Tensor, y: Tensor) => Tensor) | null;
}

const f = (dtype: DType) => wgslType(dtype);

const UNARY_DEFS: { [P in UnaryPrim]: UnaryDef } = {
  neg: {
    kinds: "numeric",
    cpu: (x) => -x,
    // WGSL has no unary minus on u32; 0u - x wraps like the CPU's Uint32Array store.
    wgsl: (x, d) => (d === "uint32" ? `(0u - ${x})` : `(-${x})`),
    vjp: (g) => api.neg(g),
  },
  exp: { kinds: "float", cpu: Math.exp, wgsl: (x) => `exp(${x})`, vjp: (g, _x, y) => api.mul(g, y) },
  log: { kinds: "float", cpu: Math.log, wgsl: (x) => `log(${x})`, vjp: (g, x) => api.div(g, x) },
  sqrt: { kinds: "float", cpu: Math.sqrt, wgsl: (x) => `sqrt(${x})`, vjp: (g, _x, y) => api.div(g, api.mul(y, 2)) },
  rsqrt: {
    kinds: "float",
    cpu: (x) => 1 / Math.sqrt(x),
    wgsl: (x) => `inverseSqrt(${x})`,
    vjp: (g, x, y) => api.mul(g, api.div(api.mul(y, -0.5), x)),
  },
  reciprocal: {
    kinds: "float",
    cpu: (x) => 1 / x,
    wgsl: (x) => `(1.0 / ${x})`,
    vjp: (g, _x, y) => api.neg(api.mul(g, api.mul(y, y))),
  },
  tanh: {
    kinds: "float",
    cpu: Math.tanh,
    wgsl: (x) => `tanh(${x})`,
    vjp: (g, _x, y) => api.mul(g, api.sub(1, api.mul(y, y))),
  },
  erf: {
    kinds: "float",
    cpu: erf64,
    wgsl: (x) => `erf_f32(${x})`,
    vjp: (g, x) => api.mul(g, api.mul(api.exp(api.neg(api.mul(x, x))), 2 / Math.sqrt(Math.PI))),
  },
  abs: {
    kinds: "numeric",
    cpu: Math.abs,
    wgsl: (x, d) => (d === "uint32" ? x : `abs(${x})`),
    vjp: (g, x) => api.mul(g, api.sign(x)),
  },
  sign: {
    kinds: "numeric",
    cpu: (x) => (x > 0 ? 1 : x < 0 ? -1 : x),
    wgsl: (x, d) => d === "float32" ? `sign_f32(${x})` : d === "uint32" ? `min(${x}, 1u)` : `sign(${x})`,
    vjp: null,
  },
  sin: { kinds: "float", cpu: Math.sin, wgsl: (x) => `sin(${x})`, vjp: (g, x) => api.mul(g, api.cos(x)) },
  cos: { kinds: "float", cpu: Math.cos, wgsl: (x) => `cos(${x})`, vjp: (g, x) => api.neg(api.mul(g, api.sin(x))) },
  floor: { kinds: "numeric", cpu: Math.floor, wgsl: (x, d) => (isInt(d) ? x : `floor(${x})`), vjp: null },
};

interface BinaryDef {
  kinds: Kinds;
  cpu(a: number, b: number, dtype: DType): number;
  wgsl(a: string, b: string, dtype: DType): string;
  /** Cotangents of both operands before summing back over broadcast dimensions. */
  vjp(g: Tensor, a: Tensor, b: Tensor, y: Tensor): [Tensor | null, Tensor | null];
}

/** Integer arithmetic wraps like WGSL (two's complement) and divides like WGSL (x/0 = x). */
function intDiv(a: number, b: number): number {
  return b === 0 ? a : Math.trunc(a / b);
}

/** Cotangent split for max/min: the selected operand gets g, ties share it equally. */
function pickVjp(g: Tensor, a: Tensor, b: Tensor, first: (a: Tensor, b: Tensor) => Tensor) {
  const ga = api.where(first(a, b), 1, api.where(api.equal(a, b), api.scalarLike(0.5, g), 0));
  const wa = api.cast(ga, g.dtype);
  return [api.mul(g, wa), api.mul(g, api.sub(1, wa))] as [Tensor, Tensor];
}

const BINARY_DEFS: { [P in BinaryPrim]: BinaryDef } = {
  add: { kinds: "numeric", cpu: (a, b) => a + b, wgsl: (a, b) => `(${a} + ${b})`, vjp: (g) => [g, g] },
  sub: { kinds: "numeric", cpu: (a, b) => a - b, wgsl: (a, b) => `(${a} - ${b})`, vjp: (g) => [g, api.neg(g)] },
  mul: {
    kinds: "numeric",
    cpu: (a, b, d) => (isInt(d) ? Math.imul(a, b) : a * b),
    wgsl: (a, b) => `(${a} * ${b})`,
    vjp: (g, a, b) => [api.mul(g, b), api.mul(g, a)],
  },
  div: {
    kinds: "numeric",
    cpu: (a, b, d) => (isInt(d) ? intDiv(a, b) : a / b),
    wgsl: (a, b) => `(${a} / ${b})`,
    vjp: (g, _a, b, y) => [api.div(g, b), api.neg(api.div(api.mul(g, y), b))],
  },
  pow: {
    kinds: "float",
    cpu: Math.pow,
    wgsl: (a, b) => `pow_f32(${a}, ${b})`,
    vjp: (g, a, b, y) => {
      const da = api.mul(g, api.mul(b, api.pow(a, api.sub(b, 1))));
      // d/db a^b = a^b log a, taken as 0 where a <= 0 (where the real power is not differentiable in b).
      const safeLog = api.log(api.where(api.greater(a, 0), a, 1));
      return [da, api.mul(g, api.mul(y, safeLog))];
    },
  },
  maximum: {
    kinds: "numeric",
    cpu: (a, b) => (Number.isNaN(a) || Number.isNaN(b) ? NaN : Math.max(a, b)),
    wgsl: (a, b) => `max(${a}, ${b})`,
    vjp: (g, a, b) => pickVjp(g, a, b, api.greater),
  },
  minimum: {
    kinds: "numeric",
    cpu: (a, b) => (Number.isNaN(a) || Number.isNaN(b) ? NaN : Math.min(a, b)),
    wgsl: (a, b) => `min(${a}, ${b})`,
    vjp: (g, a, b) => pickVjp(g, a, b, api.less),
  },
};

const COMPARE_DEFS: { [P in ComparePrim]: { cpu(a: number, b: number): boolean; op: string } } = {
  eq: { cpu: (a, b) => a === b, op: "==" },
  ne: { cpu: (a, b) => a !== b, op: "!=" },
  lt: { cpu: (a, b) => a < b, op: "<" },
  le: { cpu: (a, b) => a <= b, op: "<=" },
  gt: { cpu: (a, b) => a > b, op: ">" },
  ge: { cpu: (a, b) => a >= b, op: ">=" },
};

function unaryRule<P extends UnaryPrim>(p: P): Rule<P> {
  const d = UNARY_DEFS[p];
  return {
    arity: 1,
    shape: (ins) => broadcastAval(p, ins, d.kinds),
    cpu: (ins, avals, _p, out) => mapBroadcast(ins, avals, out, (x) => d.cpu(x, out.dtype)),
    vjp: (g, [x], y) => [d.vjp ? d.vjp(g, x, y) : null],
    wgsl: { kind: "map", expr: ([x], _ins, out) => d.wgsl(x, out.dtype) },
  };
}

function binaryRule<P extends BinaryPrim>(p: P): Rule<P> {
  const d = BINARY_DEFS[p];
  return {
    arity: 2,
    shape: (ins) => broadcastAval(p, ins, d.kinds),
    cpu: (ins, avals, _p, out) => mapBroadcast(ins, avals, out, (a, b) => d.cpu(a, b, out.dtype)),
    vjp: (g, [a, b], y) => {
      const [ga, gb] = d.vjp(g, a, b, y);
      return [ga && api.sumToShape(ga, a.shape), gb && api.sumToShape(gb, b.shape)];
    },
    wgsl: { kind: "map", expr: ([a, b], _ins, out) => d.wgsl(a, b, out.dtype) },
  };
}

function compareRule<P extends ComparePrim>(p: P): Rule<P> {
  const d = COMPARE_DEFS[p];
  return {
    arity: 2,
    shape: (ins) => broadcastAval(p, ins, "any", "bool"),
    cpu: (ins, avals, _p, out) => mapBroadcast(ins, avals, out, (a, b) => (d.cpu(a, b) ? 1 : 0)),
    vjp: () => [null, null],
    wgsl: { kind: "map", expr: ([a, b]) => `select(0u, 1u, ${a} ${d.op} ${b})` },
  };
}

function castValue(v: number, from: DType, to: DType): number {
  if (to === "bool") return v !== 0 ? 1 : 0;
  if (isInt(to) && isFloat(from)) {
    if (Number.isNaN(v)) return 0;
    const t = Math.trunc(v);
    // Saturate as WGSL does: to the nearest value representable in both the integer and the float type
    // (for float32 the largest is 2^31 - 128 for int32 and 2^32 - 256 for uint32).
    const f32 = from === "float32";
    if (to === "int32") return Math.max(-2147483648, Math.min(f32 ? 2147483520 : 2147483647, t));
    return Math.max(0, Math.min(f32 ? 4294967040 : 4294967295, t));
  }
  return v;
}

/** where and cast are elementwise too. */
const whereRule: Rule<"where"> = {
  arity: 3,
  shape: (ins) => {
    if (ins[0].dtype !== "bool") throw new TypeError(`where: condition must be bool, got ${ins[0].dtype}`);
    return broadcastAval("where", [{ shape: ins[0].shape, dtype: ins[1].dtype }, ins[1], ins[2]], "any");
  },
  cpu: (ins, avals, _p, out) => mapBroadcast(ins, avals, out, (c, a, b) => (c ? a : b)),
  vjp: (g, [c, a, b]) => {
    const zero = api.zerosLike(g);
    return [null, api.sumToShape(api.where(c, g, zero), a.shape), api.sumToShape(api.where(c, zero, g), b.shape)];
  },
  wgsl: { kind: "map", expr: ([c, a, b]) => `select(${b}, ${a}, ${c} != 0u)` },
};

const castRule: Rule<"cast"> = {
  arity: 1,
  shape: ([x], p) => {
    assertDType(p.dtype, "cast");
    return { shape: x.shape, dtype: p.dtype };
  },
  cpu: (ins, avals, p, out) => mapBroadcast(ins, avals, out, (v) => castValue(v, avals[0].dtype, p.dtype)),
  vjp: (g, [x]) => [isFloat(x.dtype) && isFloat(g.dtype) ? api.cast(g, x.dtype) : null],
  wgsl: {
    kind: "map",
    expr: ([x], [a], out) => {
      if (out.dtype === "bool") return `select(0u, 1u, ${x} != ${f(a.dtype)}(0))`;
      return `${f(out.dtype)}(${x})`;
    },
  },
};

/** All elementwise rules. */
export const ELEMENTWISE_RULES = {
  ...Object.fromEntries((Object.keys(UNARY_DEFS) as UnaryPrim[]).map((p) => [p, unaryRule(p)])) as {
    [P in UnaryPrim]: Rule<P>;
  },
  ...Object.fromEntries((Object.keys(BINARY_DEFS) as BinaryPrim[]).map((p) => [p, binaryRule(p)])) as {
    [P in BinaryPrim]: Rule<P>;
  },
  ...Object.fromEntries((Object.keys(COMPARE_DEFS) as ComparePrim[]).map((p) => [p, compareRule(p)])) as {
    [P in ComparePrim]: Rule<P>;
  },
  where: whereRule,
  cast: castRule,
};
