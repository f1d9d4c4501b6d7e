/**
 * The model side of a pretraining run: the step's model functions and constants (`stepConfig`) and a fresh
 * training state (`initState`), both read off a resolved run (`resolveRun`) or, as before, a preset and its
 * resolved backbone.
 *
 * @module
 */
import type { Tensor } from "../ops/tensor.ts";
import { tidy } from "../ops/engine.ts";
import { map as treeMap } from "../autograd/tree.ts";
import { zeros } from "../ops/create.ts";
import * as random from "../ops/random.ts";
import { slice } from "../ops/api.ts";
import { head, headFeatures, type HeadParams, headPrototypes, initHead } from "../models/head.ts";
import type { VitConfig, VitParams } from "../models/vit.ts";
import {
  asBackboneSpec,
  backboneDim,
  type BackboneParams,
  type BackboneSpec,
  backboneTokens,
  initBackbone,
  resolveBackbone,
} from "./backbone.ts";
import { multiCrop } from "./augment.ts";
import { adamwInit } from "./optim.ts";
import type { IbotState, IbotStepConfig } from "./step.ts";
import type { PretrainConfig } from "./presets.ts";
import type { Dataset } from "./data/dataset.ts";
import { isRunSpec, type RunSpec } from "./run_spec.ts";

type State = IbotState<BackboneParams, HeadParams>;

/** The configuration and backbone of a run, or of a preset with its backbone given separately. */
function parts(a: PretrainConfig | RunSpec, b: VitConfig | BackboneSpec | undefined, where: string) {
  if (isRunSpec(a)) return { cfg: a.config, spec: a.backbone };
  if (b === undefined) throw new TypeError(`${where}: a preset needs its resolved backbone (or pass resolveRun(...))`);
  return { cfg: a, spec: asBackboneSpec(b) };
}

/**
 * The ViT configuration of a ViT preset (`resolveBackbone` handles both kinds; this throws for a Swin preset).
 */
export function backboneConfig(cfg: PretrainConfig, ds: Pick<Dataset, "channels" | "size">): VitConfig {
  const spec = resolveBackbone(cfg, ds);
  if (spec.kind !== "vit") throw new TypeError(`backboneConfig: preset ${cfg.name} has a Swin backbone`);
  return spec.config;
}

/**
 * The training step's model functions and constants of a resolved run (or of a preset and its resolved
 * backbone, ViT or Swin).
 */
export function stepConfig(run: RunSpec): IbotStepConfig<BackboneParams, HeadParams>;
export function stepConfig(
  cfg: PretrainConfig,
  b: VitConfig | BackboneSpec,
): IbotStepConfig<BackboneParams, HeadParams>;
export function stepConfig(
  a: PretrainConfig | RunSpec,
  b?: VitConfig | BackboneSpec,
): IbotStepConfig<BackboneParams, HeadParams> {
  const { cfg, spec } = parts(a, b, "stepConfig");
  const { normLastLayer } = cfg.head;
  return {
    backbone: (p, images, o) => backboneTokens(spec, p, images, o),
    head: (h, tokens) => head(h, tokens, { normLastLayer }),
    headFeatures,
    headPrototypes: (h, z) => headPrototypes(h, z, { normLastLayer }),
    // Without the official norm_last_layer, the prototype layer's weight_g is a trained parameter.
    trainable: normLastLayer ? undefined : () => true,
    globalCrops: cfg.augment.globalCrops.number,
    studentTemp: cfg.studentTemp,
    clipGrad: cfg.clipGrad,
    augment: (k, x) => multiCrop(k, x, cfg.augment),
  };
}

/**
 * A fresh state: student and teacher (a copy without `masked_embed`), AdamW, zero centers, the key. Takes a
 * resolved run, or a preset with a ViT config or a resolved `BackboneSpec` (ViT or Swin).
 */
export function initState(cfg: PretrainConfig, vc: VitConfig, key: Tensor): IbotState<VitParams, HeadParams>;
export function initState(cfg: PretrainConfig, spec: VitConfig | BackboneSpec, key: Tensor): State;
export function initState(run: RunSpec, key: Tensor): State;
export function initState(a: PretrainConfig | RunSpec, b: VitConfig | BackboneSpec | Tensor, k?: Tensor): State {
  const key = k ?? (b as Tensor);
  const { cfg, spec } = parts(a, k ? (b as VitConfig | BackboneSpec) : undefined, "initState");
  // The initialisers' temporaries are freed here, not left to the garbage collector (GiBs for a ViT-S/16 on a GPU).
  return tidy(() => {
    const [kb, kh, kstate] = random.split(key, 3);
    const student = {
      backbone: initBackbone(kb, spec),
      head: initHead(kh, { inDim: backboneDim(spec), ...cfg.head }),
    };
    // The teacher has no mask token: `masked_embed` is outside the EMA (spec §7.4).
    const { masked_embed: _unused, ...tb } = student.backbone as BackboneParams & { masked_embed?: Tensor };
    const copy = (t: Tensor) => slice(t, t.shape.map(() => 0)).add(0); // a distinct buffer with equal values
    const teacher = {
      backbone: treeMap(copy, tb) as unknown as BackboneParams,
      head: treeMap(copy, student.head) as unknown as HeadParams,
    };
    const K = cfg.head.outDim;
    return {
      student,
      teacher,
      opt: adamwInit(student),
      center: zeros([1, K], { backend: key.backend }),
      center2: zeros([1, 1, K], { backend: key.backend }),
      key: kstate,
    };
  });
}
