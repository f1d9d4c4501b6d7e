/** WGSL storage types of our dtypes and the helper functions every generated shader may call. */
import type { DType } from "../ops/dtype.ts";

/** The WGSL scalar type that stores a dtype (bool is stored as u32 0/1; float64 has none). */
export function wgslType(dtype: DType): "f32" | "i32" | "u32" {
  switch (dtype) {
    case "float32":
      return "f32";
    case "int32":
      return "i32";
    case "uint32":
    case "bool":
      return "u32";
    case "float64":
      throw new TypeError("float64 has no WGSL type; use the cpu backend for float64");
  }
}

/** WGSL source of helpers (erf, pow, threefry) included in generated shaders that need them. */
export const PRELUDE = /* wgsl */ `
// Infinities and NaNs are not representable in a WGSL const-expression (Tint, in browsers, rejects
// bitcast<f32>(0x7f800000u); naga accepts it): a function call is never const, so build them from bits at run time.
fn f32_bits(b: u32) -> f32 { return bitcast<f32>(b); }

fn erf_f32(x: f32) -> f32 {
  let a = abs(x);
  if (a < 0.5) {
    let x2 = x * x;
    return x * (1.1283791671 + x2 * (-0.3761263890 + x2 * (0.1128379167 + x2 * (-0.0268661706 + x2 * 0.0052239776))));
  }
  let t = 1.0 / (1.0 + 0.3275911 * a);
  let y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * exp(-a * a);
  return select(y, -y, x < 0.0);
}

fn pow_f32(a: f32, b: f32) -> f32 {
  if (b == 0.0) { return 1.0; }
  if (a == 0.0) { return select(0.0, f32_bits(0x7f800000u), b < 0.0); }
  if (a > 0.0) { return exp2(b * log2(a)); }
  if (floor(b) != b) { return f32_bits(0x7fc00000u); }
  let m = exp2(b * log2(-a));
  return select(m, -m, (i32(b) & 1) == 1);
}

fn sign_f32(x: f32) -> f32 { return select(select(0.0, 1.0, x > 0.0), -1.0, x < 0.0); }

fn rotl(x: u32, r: u32) -> u32 { return (x << r) | (x >> (32u - r)); }

fn threefry2x32(k0: u32, k1: u32, c0: u32, c1: u32) -> vec2<u32> {
  let k2 = k0 ^ k1 ^ 0x1BD11BDAu;
  var ks = array<u32, 3>(k0, k1, k2);
  var x0 = c0 + k0;
  var x1 = c1 + k1;
  for (var i = 0u; i < 5u; i++) {
    var r = vec4<u32>(13u, 15u, 26u, 6u);
    if ((i & 1u) == 1u) { r = vec4<u32>(17u, 29u, 16u, 24u); }
    for (var j = 0u; j < 4u; j++) {
      x0 = x0 + x1;
      x1 = rotl(x1, r[j]);
      x1 = x1 ^ x0;
    }
    x0 = x0 + ks[(i + 1u) % 3u];
    x1 = x1 + ks[(i + 2u) % 3u] + i + 1u;
  }
  return vec2<u32>(x0, x1);
}
`;
