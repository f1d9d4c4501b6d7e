/**
 * The iBOT projection head (`iBOTHead`, a `DINOHead`, spec §3) as pure functions over a params tree:
 * an MLP with exact GELU (`mlp.0`, `mlp.2`, `mlp.4` for 3 layers), an l2-normalised bottleneck, and a
 * weight-normalised last layer without bias (`last_layer.weight_g` [out, 1], `last_layer.weight_v`
 * [out, bottleneck]). Shared head: one prototype layer serves CLS and patch tokens.
 *
 * @module
 */
import type { Tensor } from "../ops/tensor.ts";
import * as api from "../ops/api.ts";
import * as nn from "../ops/nn.ts";
import * as random from "../ops/random.ts";
import { full } from "../ops/create.ts";
import type { DType } from "../ops/dtype.ts";
import { fmt } from "../ops/shape.ts";
import { fromPaths } from "../autograd/tree.ts";

/** Head hyperparameters (defaults of `DINOHead` / `iBOTHead`). */
export interface HeadConfig {
  /** Input width (the backbone's D). */
  inDim: number;
  /** Hidden width of the MLP (2048). */
  hiddenDim?: number;
  /** Bottleneck width before the prototypes (256). */
  bottleneckDim?: number;
  /** Number of prototypes K (`out_dim`). */
  outDim: number;
  /** Linear layers in the MLP (3); with 1 the MLP is a single Linear named `mlp.weight` / `mlp.bias`. */
  nlayers?: number;
  /** Freeze `weight_g` at 1 (true): unit-norm prototypes. */
  normLastLayer?: boolean;
}

/** A Linear layer in PyTorch layout. */
export interface HeadLinear {
  /** `[out, in]`. */
  weight: Tensor;
  /** `[out]`. */
  bias: Tensor;
}

/**
 * The head tree. `mlp` is keyed by the official `nn.Sequential` indices (`"0"`, `"2"`, `"4"`: the GELUs sit at
 * the odd indices), so that `tree.paths` gives `mlp.0.weight` ... exactly as the state dict, and a tree built by
 * `tree.fromPaths` from a checkpoint has this same shape. With `nlayers = 1`, `mlp` is the Linear itself.
 */
export interface HeadParams {
  /** The MLP Linears by `nn.Sequential` index (or one Linear when `nlayers = 1`). */
  mlp: Record<string, HeadLinear> | HeadLinear;
  /** The weight-normalised prototypes: `weight_g` `[K, 1]`, `weight_v` `[K, bottleneck]`. */
  last_layer: { weight_g: Tensor; weight_v: Tensor };
}

/** Options of `initHead`. */
export interface InitHeadOptions {
  /** Parameter dtype (float32 by default). */
  dtype?: DType;
}

/**
 * Initialises a head as the official code does (spec §3.4): MLP weights truncated normal std 0.02 (absolute ±2),
 * biases 0; `weight_v` PyTorch's default Linear init uniform(±1/sqrt(bottleneckDim)); `weight_g` = 1.
 * Parameters live on the key's backend; the leaves follow `headParamShapes(config)`, each from its own key.
 *
 * @example
 * ```ts
 * import { initHead, random, tree } from "./mod.ts";
 * const p = initHead(random.key(0), { inDim: 48, hiddenDim: 64, bottleneckDim: 32, outDim: 128 });
 * tree.paths(p).map(([k]) => k); // mlp.0.weight, mlp.0.bias, mlp.2.*, mlp.4.*, last_layer.weight_g, last_layer.weight_v
 * ```
 */
export function initHead(key: Tensor, config: HeadConfig, opts: InitHeadOptions = {}): HeadParams {
  random.assertKey(key, "initHead");
  const shapes = headParamShapes(config);
  const dtype = opts.dtype ?? "float32";
  const backend = key.backend;
  const keys = random.split(key, shapes.length);
  const leaf = ([name, shape]: [string, number[]], i: number): [string, Tensor] => {
    if (name === "last_layer.weight_v") {
      const bound = 1 / Math.sqrt(shape[1]);
      return [name, random.uniform(keys[i], shape, { dtype, min: -bound, max: bound })];
    }
    if (name.endsWith(".weight")) {
      return [name, random.truncatedNormal(keys[i], shape, { std: 0.02, lower: -2, upper: 2, dtype })];
    }
    return [name, full(shape, name === "last_layer.weight_g" ? 1 : 0, { dtype, backend })];
  };
  return fromPaths(shapes.map(leaf)) as unknown as HeadParams;
}

/**
 * The official head state-dict keys (without `head.`) and shapes, in order: `mlp.{0,2,4}.{weight,bias}` (or
 * `mlp.{weight,bias}` for one layer), `last_layer.weight_g` [K, 1], `last_layer.weight_v` [K, bottleneck].
 *
 * @example
 * ```ts
 * import { headParamShapes } from "./mod.ts";
 * console.log(headParamShapes({ inDim: 192, outDim: 1024 }).at(-1)); // ["last_layer.weight_v", [1024, 256]]
 * ```
 */
export function headParamShapes(config: HeadConfig): [string, number[]][] {
  const { inDim, outDim, hiddenDim = 2048, bottleneckDim = 256, nlayers = 3 } = config;
  for (const [n, v] of Object.entries({ inDim, outDim, hiddenDim, bottleneckDim, nlayers })) {
    if (!Number.isInteger(v) || v < 1) throw new RangeError(`initHead: ${n} must be a positive integer, got ${v}`);
  }
  const out: [string, number[]][] = [];
  if (nlayers === 1) out.push(["mlp.weight", [bottleneckDim, inDim]], ["mlp.bias", [bottleneckDim]]);
  for (let i = 0; nlayers > 1 && i < nlayers; i++) {
    const inp = i === 0 ? inDim : hiddenDim;
    const o = i === nlayers - 1 ? bottleneckDim : hiddenDim;
    out.push([`mlp.${2 * i}.weight`, [o, inp]], [`mlp.${2 * i}.bias`, [o]]);
  }
  out.push(["last_layer.weight_g", [outDim, 1]], ["last_layer.weight_v", [outDim, bottleneckDim]]);
  return out;
}

/** Options of `head`. */
export interface HeadOptions {
  /**
   * True (default, the iBOT/DINO default and the teacher's setting): `weight_g` is a constant, passed through
   * `stopGradient`, so its gradient is exactly zero (PyTorch: `requires_grad = False`). False: `weight_g` learns.
   */
  normLastLayer?: boolean;
}

function isLinear(x: unknown): x is HeadLinear {
  return typeof x === "object" && x !== null && "weight" in x && "bias" in x;
}

/** The MLP layers in application order (numeric keys ascending). */
function mlpLayers(mlp: HeadParams["mlp"]): HeadLinear[] {
  if (isLinear(mlp)) return [mlp];
  return Object.keys(mlp).sort((a, b) => Number(a) - Number(b)).map((k) => mlp[k]);
}

/**
 * The effective last-layer weight `W = g * v / ||v||_row` (PyTorch `weight_norm`, dim 0; no epsilon).
 *
 * @example
 * ```ts
 * import { initHead, random, weightNormWeight } from "./mod.ts";
 * const h = initHead(random.key(0), { inDim: 8, outDim: 16, hiddenDim: 32, bottleneckDim: 4 });
 * console.log(weightNormWeight(h.last_layer).shape); // [16, 4]
 * ```
 */
export function weightNormWeight(last: HeadParams["last_layer"], normLastLayer = true): Tensor {
  const g = normLastLayer ? api.stopGradient(last.weight_g) : last.weight_g;
  const v = last.weight_v;
  return api.mul(v, api.div(g, api.sqrt(api.sum(api.mul(v, v), 1, true))));
}

/**
 * The head on tokens of any shape `[..., D]` (CLS tokens `[B, D]` or patch tokens `[B, N, D]`): the MLP with
 * exact GELU between layers, `F.normalize` (eps 1e-12) of the bottleneck, then the weight-normalised
 * prototype layer. Returns logits `[..., K]`. Equal to `headPrototypes(params, headFeatures(params, tokens))`.
 *
 * @example
 * ```ts
 * import { head, initHead, random, zeros } from "./mod.ts";
 * const p = initHead(random.key(0), { inDim: 48, hiddenDim: 64, bottleneckDim: 32, outDim: 128 });
 * head(p, zeros([2, 17, 48])).shape; // [2, 17, 128]
 * ```
 */
export function head(params: HeadParams, tokens: Tensor, opts: HeadOptions = {}): Tensor {
  return headPrototypes(params, headFeatures(params, tokens), opts);
}

/**
 * The head up to its last layer: the MLP and the l2-normalised bottleneck, `[..., D]` → `[..., bottleneck]`.
 * The prototype layer is linear without bias, so the mean of the logits over tokens equals
 * `headPrototypes` of the mean of these features (the iBOT step computes its patch center that way).
 *
 * @example
 * ```ts
 * import { headFeatures, initHead, random, zeros } from "./mod.ts";
 * const p = initHead(random.key(0), { inDim: 48, hiddenDim: 64, bottleneckDim: 32, outDim: 128 });
 * headFeatures(p, zeros([2, 17, 48])).shape; // [2, 17, 32]
 * ```
 */
export function headFeatures(params: HeadParams, tokens: Tensor): Tensor {
  const layers = mlpLayers(params.mlp);
  const inDim = layers[0].weight.shape[1];
  if (tokens.rank < 1 || tokens.shape[tokens.rank - 1] !== inDim) {
    throw new RangeError(`head: tokens ${fmt(tokens.shape)} do not end in the head's input width ${inDim}`);
  }
  let x = tokens;
  layers.forEach((l, i) => {
    x = nn.linear(x, l.weight, l.bias);
    if (i < layers.length - 1) x = nn.gelu(x);
  });
  return nn.l2Normalize(x, -1, 1e-12);
}

/**
 * The head's weight-normalised prototype layer on bottleneck features `[..., bottleneck]` → logits `[..., K]`.
 *
 * @example
 * ```ts
 * import { headPrototypes, initHead, random, zeros } from "./mod.ts";
 * const p = initHead(random.key(0), { inDim: 48, hiddenDim: 64, bottleneckDim: 32, outDim: 128 });
 * headPrototypes(p, zeros([5, 32])).shape; // [5, 128]
 * ```
 */
export function headPrototypes(params: HeadParams, features: Tensor, opts: HeadOptions = {}): Tensor {
  const w = weightNormWeight(params.last_layer, opts.normLastLayer ?? true);
  if (features.rank < 1 || features.shape[features.rank - 1] !== w.shape[1]) {
    throw new RangeError(`head: features ${fmt(features.shape)} do not end in the bottleneck width ${w.shape[1]}`);
  }
  return nn.linear(features, w);
}
