/**
 * The backbones the trainer pretrains, behind one small interface: a ViT (`vit_*`, spec §1) or a Swin
 * (`swin_*`, spec §2). `resolveBackbone` turns a preset's `backbone` entry into a `BackboneSpec`; the functions
 * below initialise it, run it for the training step (all tokens after the final norm: CLS or, for Swin, the
 * average-pooled token, followed by the patch / last-stage tokens), give its k-NN features (that first token,
 * `[B, D]`) and the MIM mask grid of a crop.
 *
 * Swin on small images. The official Swin-T (patch 4, four stages, window 7) is built for 224-px crops: its last
 * stage is a 7x7 grid, which is also the MIM mask grid (cell `patch·8` = 32 px, spec §2.5). On 28/32-px data the
 * same model would end on a 1x1 grid (one token; MIM meaningless). So a Swin preset without explicit sizes is
 * adapted to the global crop size (`smallSwin`): patch 4 (else 2), the arch's first stages as long as the last
 * stage keeps a grid of at least 4x4 that the crop divides exactly, and a window equal to that last grid (the
 * last stage attends globally, as Swin-T/7's 7x7 stage does; earlier stages use shifted windows). Widths,
 * heads, depths, MLP ratio and drop path are the arch's. At 224 px this gives exactly the official Swin-T/7;
 * at 32 px a two-stage Swin-T (patch 4, 8x8 → 4x4, window 4, dims 96/192, 4x4 mask grid of 8-px cells);
 * at 28 px a two-stage Swin-T with patch 2 (14x14 → 7x7, window 7, dims 96/192, 7x7 mask grid of 4-px cells).
 *
 * @module
 */
import type { Tensor } from "../ops/tensor.ts";
import { initVit, vit, type VitConfig, vitConfig, type VitConfigInput, type VitParams } from "../models/vit.ts";
import { initSwin, swin, type SwinConfig, swinLayout, swinOutDim, type SwinParams } from "../models/swin.ts";
import type { PretrainConfig } from "./presets.ts";

/** Names of the official Swin architectures (spec §2.1). */
export type SwinArch = "swin_tiny" | "swin_small" | "swin_base" | "swin_large";

/**
 * The official Swin presets: stage-1 width, depths, heads and the student's drop-path rate (spec §2.1).
 *
 * @example
 * ```ts
 * import { SWIN_PRESETS } from "./mod.ts";
 * console.log(SWIN_PRESETS.swin_tiny.depths); // [2, 2, 6, 2]
 * ```
 */
export const SWIN_PRESETS: Readonly<
  Record<SwinArch, Readonly<Pick<SwinConfig, "embedDim" | "depths" | "numHeads" | "dropPathRate">>>
> = Object.freeze({
  swin_tiny: Object.freeze({ embedDim: 96, depths: [2, 2, 6, 2], numHeads: [3, 6, 12, 24], dropPathRate: 0.1 }),
  swin_small: Object.freeze({ embedDim: 96, depths: [2, 2, 18, 2], numHeads: [3, 6, 12, 24], dropPathRate: 0.2 }),
  swin_base: Object.freeze({ embedDim: 128, depths: [2, 2, 18, 2], numHeads: [4, 8, 16, 32], dropPathRate: 0.2 }),
  swin_large: Object.freeze({ embedDim: 192, depths: [2, 2, 18, 2], numHeads: [6, 12, 24, 48], dropPathRate: 0.2 }),
});

/**
 * A Swin backbone entry of a preset: an official `arch` and any overrides. `imgSize` (the global crop size),
 * `inChans` (the data's) and `maskedEmbed` are filled in by `resolveBackbone`; sizes not given are adapted to
 * the global crop size (`smallSwin`); `dropPathRate` defaults to the arch's (the official recipe does not pass
 * `--drop_path` for Swin).
 */
export type SwinBackboneInput = Partial<Omit<SwinConfig, "imgSize" | "inChans" | "maskedEmbed">> & { arch: SwinArch };

/** A backbone entry: a ViT config (optionally with a `vit_*` arch) or a Swin one. */
export type BackboneInput = Exclude<VitConfigInput, string> | SwinBackboneInput;

/** A resolved backbone: its kind and full config. */
export type BackboneSpec = { kind: "vit"; config: VitConfig } | { kind: "swin"; config: SwinConfig };

/** Parameters of either backbone. */
export type BackboneParams = VitParams | SwinParams;

/**
 * Whether a backbone entry (or an `--arch` name) is a Swin.
 *
 * @example
 * ```ts
 * import { isSwin } from "./mod.ts";
 * console.log(isSwin({ arch: "swin_tiny" }), isSwin("vit_small")); // true false
 * ```
 */
export function isSwin(b: BackboneInput | string | undefined): b is SwinBackboneInput {
  const arch = typeof b === "string" ? b : b?.arch;
  return typeof arch === "string" && arch.startsWith("swin_");
}

/** The smallest last-stage grid `smallSwin` accepts (a 4x4 MIM mask grid). */
const MIN_LAST_GRID = 4;

/**
 * The sizes of an official Swin `arch` adapted to square crops of `cropSize` px (see the module doc): patch 4
 * (else 2), the first stages of the arch while the last stage keeps an exact grid of at least 4x4, window =
 * that last grid. Throws naming the sizes when no such layout exists (crops too small or not divisible).
 *
 * @example
 * ```ts
 * import { smallSwin } from "./mod.ts";
 * const s = smallSwin("swin_tiny", 32); // patch 4, depths [2, 2], heads [3, 6], window 4
 * smallSwin("swin_tiny", 224); // the official Swin-T/7: patch 4, depths [2, 2, 6, 2], window 7
 * ```
 */
export function smallSwin(arch: SwinArch, cropSize: number): Required<Omit<SwinBackboneInput, "eps" | "remat">> {
  const p = SWIN_PRESETS[arch];
  if (!p) throw new RangeError(`swin: unknown arch '${arch}' (one of ${Object.keys(SWIN_PRESETS).join(", ")})`);
  const layoutFor = (patch: number) => {
    if (cropSize % patch !== 0) return 0;
    const grid = cropSize / patch;
    let stages = 0;
    for (let s = 1; s <= p.depths.length; s++) {
      const f = 2 ** (s - 1);
      if (grid % f === 0 && grid / f >= MIN_LAST_GRID) stages = s;
      else break;
    }
    return stages;
  };
  const [s4, s2] = [layoutFor(4), layoutFor(2)];
  const patch = s4 >= 2 || s4 >= s2 ? 4 : 2; // patch 4 unless only patch 2 gives a hierarchy
  const stages = patch === 4 ? s4 : s2;
  if (!stages) {
    throw new RangeError(
      `swin: ${arch} cannot be laid out for ${cropSize}-px global crops: it needs a crop size that is a multiple ` +
        `of the patch (4 or 2) times 2^(stages-1) with a last-stage grid of at least ${MIN_LAST_GRID}x${MIN_LAST_GRID} ` +
        `(e.g. 16, 28, 32, 224 px)`,
    );
  }
  return {
    arch,
    patchSize: patch,
    embedDim: p.embedDim,
    depths: p.depths.slice(0, stages),
    numHeads: p.numHeads.slice(0, stages),
    windowSize: cropSize / patch / 2 ** (stages - 1),
    mlpRatio: 4,
    dropPathRate: p.dropPathRate,
  };
}

/** Data properties a backbone depends on. */
export interface BackboneData {
  /** Image channels. */
  channels: number;
  /** Image side (ViT: the size `pos_embed` is built for). */
  size: number;
}

/**
 * Resolves a preset's backbone for a dataset: `cfg.swin` when set, else the ViT `cfg.backbone`. A ViT gets the
 * data's channels and image size and the preset's drop path; a Swin is built for the global crop size (as the
 * official one is for 224) with the data's channels, its missing sizes adapted by `smallSwin`. The student
 * config (with `masked_embed`).
 *
 * @example
 * ```ts
 * import { PRESETS, resolveBackbone } from "./mod.ts";
 * const cfg = { ...PRESETS["embedded-small"], swin: { arch: "swin_tiny" as const } };
 * const spec = resolveBackbone(cfg, { channels: 3, size: 32 }); // kind "swin", 2 stages, window 4
 * ```
 */
export function resolveBackbone(cfg: PretrainConfig, ds: BackboneData): BackboneSpec {
  const b = cfg.swin;
  if (!b) {
    return {
      kind: "vit",
      config: vitConfig({ ...cfg.backbone, inChans: ds.channels, imgSize: ds.size, dropPathRate: cfg.dropPath }),
    };
  }
  const crop = cfg.augment.globalCrops.size;
  const defined = Object.fromEntries(Object.entries(b).filter(([, v]) => v !== undefined));
  const { arch, ...rest } = { ...smallSwinOrEmpty(b, crop), ...defined } as SwinBackboneInput;
  const config: SwinConfig = {
    imgSize: crop,
    inChans: ds.channels,
    patchSize: 4,
    embedDim: SWIN_PRESETS[arch].embedDim,
    depths: SWIN_PRESETS[arch].depths,
    numHeads: SWIN_PRESETS[arch].numHeads,
    windowSize: 7,
    mlpRatio: 4,
    eps: 1e-6,
    dropPathRate: SWIN_PRESETS[arch].dropPathRate,
    ...rest,
    maskedEmbed: true,
  };
  swinLayout(config); // validates depths/heads/resolution
  maskGrid({ kind: "swin", config }, crop); // the global crops must tile the last stage exactly
  const local = cfg.augment.localCrops;
  if (local.number > 0 && local.size < config.patchSize) {
    throw new RangeError(`swin: local crops of ${local.size} px are smaller than the patch (${config.patchSize} px)`);
  }
  return { kind: "swin", config };
}

/** `smallSwin` when the entry leaves sizes to adapt, else nothing (an explicit config is taken as it is). */
function smallSwinOrEmpty(b: SwinBackboneInput, crop: number): Partial<SwinBackboneInput> {
  if (!(b.arch in SWIN_PRESETS)) {
    throw new RangeError(`swin: unknown arch '${b.arch}' (one of ${Object.keys(SWIN_PRESETS).join(", ")})`);
  }
  const explicit = b.patchSize !== undefined && b.depths !== undefined && b.windowSize !== undefined;
  return explicit ? {} : smallSwin(b.arch, crop);
}

/**
 * The backbone's output width D.
 *
 * @example
 * ```ts
 * import { backboneDim, PRESETS, resolveBackbone } from "./mod.ts";
 * console.log(backboneDim(resolveBackbone(PRESETS["embedded-small"], { channels: 3, size: 32 }))); // 64
 * ```
 */
export function backboneDim(spec: BackboneSpec): number {
  return spec.kind === "vit" ? spec.config.embedDim : swinOutDim(spec.config);
}

/**
 * A fresh student backbone (official initialisation, with `masked_embed`).
 *
 * @example
 * ```ts
 * import { initBackbone, PRESETS, random, resolveBackbone } from "./mod.ts";
 * const params = initBackbone(random.key(0), resolveBackbone(PRESETS["embedded-small"], { channels: 3, size: 32 }));
 * ```
 */
export function initBackbone(key: Tensor, spec: BackboneSpec): BackboneParams {
  return spec.kind === "vit" ? initVit(key, spec.config) : initSwin(key, spec.config);
}

/** Options of `backboneTokens`. */
export interface BackboneForwardOptions {
  /** MIM masks `[B, gh, gw]` on `maskGrid` (student global crops only). */
  masks?: Tensor;
  /** Stochastic depth on (needs `key`). */
  train?: boolean;
  /** PRNG key of stochastic depth. */
  key?: Tensor;
}

/**
 * All tokens after the final norm, `[B, 1 + N, D]`: the ViT's CLS and patch tokens, or the Swin's
 * average-pooled token and last-stage tokens (what `ibotStep`'s `backbone` returns).
 *
 * @example
 * ```ts ignore
 * const tokens = backboneTokens(spec, params, images, { train: false }); // [B, 1 + N, D]
 * ```
 */
export function backboneTokens(
  spec: BackboneSpec,
  params: BackboneParams,
  images: Tensor,
  opts: BackboneForwardOptions = {},
): Tensor {
  if (spec.kind === "vit") return vit(params as VitParams, images, { ...spec.config, returnAllTokens: true, ...opts });
  return swin(params as SwinParams, images, { config: spec.config, returnAllTokens: true, ...opts });
}

/**
 * k-NN / evaluation features `[B, D]`: the ViT's CLS token or the Swin's average-pooled token, after the final
 * norm (spec §2.6, §8.1), in eval mode.
 *
 * @example
 * ```ts ignore
 * const feats = backboneFeatures(spec, params, images); // [B, D]
 * ```
 */
export function backboneFeatures(spec: BackboneSpec, params: BackboneParams, images: Tensor): Tensor {
  if (spec.kind === "vit") return vit(params as VitParams, images, { ...spec.config });
  return swin(params as SwinParams, images, { config: spec.config, returnAllTokens: false });
}

/**
 * The MIM mask grid of a square crop: the patch grid for a ViT; the last stage's grid for a Swin (cells of
 * `patch·2^(stages−1)` px: 32 px for the official Swin-T, spec §2.5), which must tile the crop exactly.
 *
 * @example
 * ```ts
 * import { maskGrid, PRESETS, resolveBackbone } from "./mod.ts";
 * const spec = resolveBackbone(PRESETS["embedded-small"], { channels: 3, size: 32 });
 * console.log(maskGrid(spec, 32)); // [4, 4]: the ViT's patch grid (patch 8); also the 32-px Swin-T's last stage
 * ```
 */
export function maskGrid(spec: BackboneSpec, cropSize: number): [number, number] {
  if (spec.kind === "vit") {
    const g = Math.floor(cropSize / spec.config.patchSize);
    return [g, g];
  }
  const cell = spec.config.patchSize * 2 ** (spec.config.depths.length - 1);
  if (cropSize % cell !== 0 || cropSize < cell) {
    throw new RangeError(
      `swin: ${cropSize}-px global crops are not a multiple of the mask cell (patch ${spec.config.patchSize} x ` +
        `2^${spec.config.depths.length - 1} = ${cell} px, the last stage's token); pick another crop size or Swin`,
    );
  }
  return [cropSize / cell, cropSize / cell];
}

/** A resolved backbone of either kind, from a ViT config or a `BackboneSpec`. */
export function asBackboneSpec(b: VitConfig | BackboneSpec): BackboneSpec {
  return "kind" in b ? b : { kind: "vit", config: b };
}
