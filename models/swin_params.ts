/**
 * Swin backbone parameters: the tree types, the official initialisation and shape-only specs, with dotted paths
 * that are the official state-dict keys (without `backbone.`).
 *
 * @module
 */
import type { Tensor } from "../ops/tensor.ts";
import * as random from "../ops/random.ts";
import type { DType } from "../ops/dtype.ts";
import { full } from "../ops/create.ts";
import { ParamSpec } from "./spec.ts";
import { type SwinConfig, swinLayout } from "./swin_config.ts";

// ---------------------------------------------------------------------------------------------------------
// Parameters

/** LayerNorm or Linear parameters. */
export interface SwinAffine<L = Tensor> {
  /** Weight (Linear: `[out, in]`). */
  weight: L;
  /** Bias. */
  bias: L;
}

/** Parameters of one Swin block (official names). */
export interface SwinBlockParams<L = Tensor> {
  /** LayerNorm before attention. */
  norm1: SwinAffine<L>;
  /** Window attention: relative-position table `[(2ws−1)², heads]`, fused qkv, output projection. */
  attn: { relative_position_bias_table: L; qkv: SwinAffine<L>; proj: SwinAffine<L> };
  /** LayerNorm before the MLP. */
  norm2: SwinAffine<L>;
  /** MLP `C → ratio·C → C` with GELU. */
  mlp: { fc1: SwinAffine<L>; fc2: SwinAffine<L> };
}

/** Parameters of a patch merging (official names; the reduction has no bias). */
export interface PatchMergingParams<L = Tensor> {
  /** Linear `4C → 2C` without bias. */
  reduction: { weight: L };
  /** LayerNorm over `4C`. */
  norm: SwinAffine<L>;
}

/** Parameters of a stage. */
export interface SwinLayerParams<L = Tensor> {
  /** The stage's blocks. */
  blocks: SwinBlockParams<L>[];
  /** Patch merging after the stage (all stages but the last). */
  downsample?: PatchMergingParams<L>;
}

/** The whole backbone; `tree.paths` gives the official state-dict keys without `backbone.`. */
export interface SwinParams<L = Tensor> {
  /** Patch projection (conv weight `[C, inChans, P, P]`) and its LayerNorm. */
  patch_embed: { proj: SwinAffine<L>; norm: SwinAffine<L> };
  /** Stages. */
  layers: SwinLayerParams<L>[];
  /** Final LayerNorm. */
  norm: SwinAffine<L>;
  /** Mask token `[1, C]` (student only). */
  masked_embed?: L;
}

/** Options of `initSwin` (the parameters live on the key's backend). */
export interface InitOptions {
  /** Parameter dtype (float32 by default; float64 on the CPU for gradient checks). */
  dtype?: DType;
}

/** How a leaf is initialised. */
type InitKind = "trunc" | "zeros" | "ones" | "conv";

/** Builds the parameter tree of a config with leaves from `make` (in official state-dict order). */
function buildSwin<L>(config: SwinConfig, make: (kind: InitKind, shape: number[]) => L): SwinParams<L> {
  const layout = swinLayout(config);
  const linear = (outF: number, inF: number): SwinAffine<L> => ({
    weight: make("trunc", [outF, inF]),
    bias: make("zeros", [outF]),
  });
  const norm = (n: number): SwinAffine<L> => ({ weight: make("ones", [n]), bias: make("zeros", [n]) });
  const C = config.embedDim;
  const P = config.patchSize;
  const params: SwinParams<L> = {
    patch_embed: {
      proj: { weight: make("conv", [C, config.inChans, P, P]), bias: make("conv", [C]) },
      norm: norm(C),
    },
    layers: layout.map((st) => {
      const c = st.dim;
      const hidden = Math.floor(c * config.mlpRatio);
      const layer: SwinLayerParams<L> = {
        blocks: st.shifts.map(() => ({
          norm1: norm(c),
          attn: {
            relative_position_bias_table: make("trunc", [(2 * st.windowSize - 1) ** 2, st.numHeads]),
            qkv: linear(3 * c, c),
            proj: linear(c, c),
          },
          norm2: norm(c),
          mlp: { fc1: linear(hidden, c), fc2: linear(c, hidden) },
        })),
      };
      if (st.downsample) layer.downsample = { reduction: { weight: make("trunc", [2 * c, 4 * c]) }, norm: norm(4 * c) };
      return layer;
    }),
    norm: norm(C * 2 ** (layout.length - 1)),
  };
  if (config.maskedEmbed) params.masked_embed = make("zeros", [1, C]);
  return params;
}

/**
 * Official initialisation: Linear weights and relative-position tables truncated normal (std 0.02, cut at
 * ±2), biases 0, LayerNorms 1/0, the patch convolution PyTorch's default (uniform ±1/sqrt(fan_in) for weight
 * and bias), `masked_embed` zeros. Key order follows the official state dict.
 *
 * @example
 * ```ts
 * import { initSwin, random, swinTest, tree } from "./mod.ts";
 * const params = initSwin(random.key(0), swinTest());
 * tree.paths(params)[0][0]; // "patch_embed.proj.weight"
 * ```
 */
export function initSwin(key: Tensor, config: SwinConfig, opts: InitOptions = {}): SwinParams {
  random.assertKey(key, "initSwin");
  const dtype = opts.dtype ?? "float32";
  const backend = key.backend;
  let counter = 0;
  const bound = 1 / Math.sqrt(config.inChans * config.patchSize ** 2);
  return buildSwin(config, (kind, shape) => {
    switch (kind) {
      case "trunc":
        return random.truncatedNormal(random.foldIn(key, counter++), shape, { std: 0.02, dtype });
      case "conv":
        return random.uniform(random.foldIn(key, counter++), shape, { min: -bound, max: bound, dtype });
      default:
        return full(shape, kind === "ones" ? 1 : 0, { dtype, backend });
    }
  });
}

/**
 * The parameter tree of a config with `ParamSpec` leaves (shape and dtype, no data): what `loadWeightsIntoModel`
 * needs to load a checkpoint without initialising the model.
 *
 * @example
 * ```ts
 * import { swinSpec, swinTest, tree } from "./mod.ts";
 * const [name, spec] = tree.paths(swinSpec(swinTest()))[0];
 * console.log(name, String(spec)); // patch_embed.proj.weight float32[16,3,4,4]
 * ```
 */
export function swinSpec(config: SwinConfig, dtype: DType = "float32"): SwinParams<ParamSpec> {
  return buildSwin(config, (_kind, shape) => new ParamSpec(shape, dtype));
}
