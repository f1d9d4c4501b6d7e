/**
 * Shared by the evaluation examples: a ViT backbone from a training checkpoint (`examples/pretrain.ts --out`),
 * from a safetensors file of backbone parameters, or freshly initialised; the intermediate block outputs that
 * linear probing needs; permission checks that name the flag to add.
 *
 * @module
 */
import type { Tensor } from "../../ops/tensor.ts";
import { fromPaths, leaves, map as treeMap } from "../../autograd/tree.ts";
import type { Backend } from "../../ops/backend.ts";
import * as api from "../../ops/api.ts";
import * as nn from "../../ops/nn.ts";
import * as random from "../../ops/random.ts";
import { parseSafetensors, type SafetensorsFile } from "../../models/safetensors.ts";
import { CheckpointError } from "../../models/format.ts";
import { fromTyped } from "../../ops/create.ts";
import {
  attention,
  initVit,
  interpolatePosEmbed,
  patchEmbed,
  VIT_PRESETS,
  type VitConfig,
  vitConfig,
  type VitParams,
  vitParamShapes,
} from "../../models/vit.ts";
import { PRESETS, type PretrainConfig } from "../../train/presets.ts";
import { backboneConfig, initState } from "../../train/pretrain.ts";
import { loadTrainingState } from "../../train/checkpoint.ts";

export { need, UsageError } from "./cli.ts";
import { readBytes, UsageError } from "./cli.ts";

/** Where the backbone comes from. */
export interface BackboneSource {
  /** A training checkpoint (`checkpoint.safetensors` of `examples/pretrain.ts --out DIR`). */
  checkpoint?: string;
  /** A safetensors file of backbone parameters (official names, optionally under `backbone.`/`teacher.backbone.`). */
  weights?: string;
  /** A randomly initialised backbone of `preset`. */
  random?: boolean;
  /** Preset for `random` and for the normalisation of `weights` (default `embedded-small`). */
  preset?: string;
  /** Attention heads of `weights` (default: metadata `numHeads`, else the ViT size of that width; see `vitHeads`). */
  heads?: number;
  /** Use the student instead of the teacher of a checkpoint. */
  student?: boolean;
  /** Seed of the random initialisation (default 0). */
  seed?: number;
}

/** A backbone ready to run. */
export interface Backbone {
  /** The parameters (teacher: no `masked_embed`). */
  params: VitParams;
  /** Its architecture (`numHeads`, `imgSize`, `inChans`, ...). */
  config: VitConfig;
  /** The training configuration it came with (normalisation: `cfg.augment.mean/std`). */
  cfg: PretrainConfig;
  /** A short description for the console. */
  description: string;
}

/**
 * The attention heads of a ViT of width `D` whose file says nothing of its architecture: `given` (a `--heads`
 * flag), else the file's metadata (`numHeads` / `num_heads`), else the official size of that width (vit_tiny
 * 192: 3, vit_small 384: 6, vit_base 768: 12, vit_large 1024: 16). Refuses to guess any other width: the heads
 * change every feature, and a wrong count runs without error.
 */
export function vitHeads(
  D: number,
  metadata: ReadonlyMap<string, unknown> | Record<string, unknown>,
  given: number | undefined,
  what: string,
): { heads: number; from: string } {
  if (given !== undefined) return { heads: given, from: "--heads" };
  const get = (k: string) => metadata instanceof Map ? metadata.get(k) : (metadata as Record<string, unknown>)[k];
  for (const key of ["numHeads", "num_heads"]) {
    const v = get(key);
    if (v === undefined) continue;
    const n = Number(v);
    if (!(Number.isInteger(n) && n >= 1 && D % n === 0)) {
      throw new UsageError(`${what}: metadata ${key} = ${JSON.stringify(v)} does not divide the width ${D}`);
    }
    return { heads: n, from: `metadata ${key}` };
  }
  const size = Object.entries(VIT_PRESETS).find(([, p]) => p.embedDim === D);
  if (size) return { heads: size[1].numHeads, from: `${size[0]}, the ViT of width ${D}` };
  throw new UsageError(
    `${what}: a ViT of width ${D}, whose number of attention heads neither the file's metadata (numHeads) nor ` +
      `a ViT size (${
        Object.entries(VIT_PRESETS).map(([a, p]) => `${a} ${p.embedDim}`).join(", ")
      }) gives: pass --heads N`,
  );
}

/**
 * Throws a usage error naming the flags to fix (`fix`, followed by the presets that would fit) when a
 * normalisation of `mean.length` channels cannot apply to a model of `channels` input channels (e.g. ImageNet's
 * 3-channel mean for a 1-channel model).
 */
export function checkNormChannels(
  channels: number,
  mean: readonly number[],
  model: string,
  norm: string,
  fix = "--preset",
): void {
  if (mean.length === channels) return;
  const fits = Object.values(PRESETS).filter((p) => p.augment.mean.length === channels).map((p) => p.name);
  throw new UsageError(
    `${model} takes ${channels} input channel(s) but ${norm} normalises ${mean.length}: ` +
      (fits.length ? `pass ${fix} ${fits.join(" | ")}` : `no preset normalises ${channels} channel(s)`),
  );
}

function presetOf(name = "embedded-small"): PretrainConfig {
  const p = PRESETS[name];
  if (!p) throw new UsageError(`--preset: unknown preset '${name}' (${Object.keys(PRESETS).join(", ")})`);
  return p;
}

/** Frees every tensor of a tree. */
export function disposeTree(t: unknown): void {
  treeMap((x: Tensor) => x.dispose(), t);
}

/** Loads (or initialises) a backbone as `src` says, on `backend`. */
export async function loadBackbone(src: BackboneSource, backend: Backend): Promise<Backbone> {
  const given = [src.checkpoint, src.weights, src.random].filter((x) => x).length;
  if (given !== 1) throw new UsageError("give exactly one of --checkpoint FILE, --weights FILE or --random");
  if (src.random) {
    const cfg = presetOf(src.preset);
    if (cfg.swin) throw new UsageError(`--random: preset ${cfg.name} has a Swin backbone (ViT only here)`);
    const config = backboneConfig(cfg, { channels: cfg.augment.channels, size: cfg.backbone.imgSize ?? 224 });
    const { masked_embed: _m, ...params } = initVit(random.key(src.seed ?? 0, backend), config);
    _m?.dispose();
    return {
      params: params as VitParams,
      config,
      cfg,
      description: `random ${cfg.name} backbone (seed ${src.seed ?? 0})`,
    };
  }
  if (src.checkpoint) return await fromCheckpoint(src.checkpoint, backend, src.student ?? false);
  return await fromWeights(src, backend);
}

/** A safetensors file a flag names; a wrong format or a corrupt file is a usage error naming both. */
function parseFlagFile(bytes: Uint8Array, path: string, flag: string): SafetensorsFile {
  try {
    return parseSafetensors(bytes, path);
  } catch (e) {
    if (e instanceof CheckpointError) throw new UsageError(`${flag} ${e.message}`);
    throw e;
  }
}

async function fromCheckpoint(path: string, backend: Backend, student: boolean): Promise<Backbone> {
  const file = parseFlagFile(await readBytes(path, "--checkpoint"), path, "--checkpoint");
  if (file.metadata.format !== "ibot-ts-checkpoint" || !file.metadata.meta) {
    throw new UsageError(
      `--checkpoint ${path}: not an ibot-ts training checkpoint (for a file of backbone parameters use --weights)`,
    );
  }
  const meta = JSON.parse(file.metadata.meta) as { config?: PretrainConfig; preset?: string; iteration: number };
  const cfg = meta.config ?? presetOf(meta.preset);
  if (cfg.swin) {
    throw new UsageError(
      `--checkpoint ${path}: a Swin (${cfg.swin.arch}) checkpoint; this example takes ViTs only (k-NN of a Swin: ` +
        "examples/knn.ts)",
    );
  }
  // The data set's channels and image size are not in the config: read them off the stored tensors.
  const pos = file.tensors.get("teacher.backbone.pos_embed");
  const patch = file.tensors.get("teacher.backbone.patch_embed.proj.weight");
  if (!pos || !patch) throw new UsageError(`--checkpoint ${path}: no teacher backbone in the file`);
  const grid = Math.round(Math.sqrt(pos.shape[1] - 1));
  const config = backboneConfig(cfg, { channels: patch.shape[1], size: grid * patch.shape[2] });
  const template = initState(cfg, config, random.key(0, backend));
  const loaded = await loadTrainingState(path, template, backend);
  disposeTree(template);
  const { state } = loaded;
  const keep = student ? state.student.backbone : state.teacher.backbone;
  const { masked_embed: _m, ...params } = keep as VitParams;
  // Free everything but the chosen backbone.
  const mine = new Set(leaves<Tensor>(params));
  for (const t of leaves<Tensor>(state)) if (!mine.has(t)) t.dispose();
  return {
    params: params as VitParams,
    config,
    cfg,
    description: `${student ? "student" : "teacher"} of ${path} (${cfg.name}, step ${meta.iteration})`,
  };
}

async function fromWeights(src: BackboneSource, backend: Backend): Promise<Backbone> {
  const path = src.weights!;
  const file = parseFlagFile(await readBytes(path, "--weights"), path, "--weights");
  const names = [...file.tensors.keys()];
  const prefix = ["teacher.backbone.", "backbone.", "module.backbone.", ""].find((p) =>
    names.includes(`${p}patch_embed.proj.weight`)
  );
  if (prefix === undefined) {
    throw new UsageError(`--weights ${path}: no 'patch_embed.proj.weight' (a ViT backbone state dict?)`);
  }
  const get = (n: string) => file.tensors.get(prefix + n);
  const patch = get("patch_embed.proj.weight")!;
  const pos = get("pos_embed");
  const [D, C, P] = patch.shape;
  const depth = names.filter((n) => n.startsWith(prefix + "blocks.") && n.endsWith(".norm1.weight")).length;
  const grid = pos ? Math.round(Math.sqrt(pos.shape[1] - 1)) : 0;
  const fc1 = get("blocks.0.mlp.fc1.weight");
  const cfg = presetOf(src.preset);
  checkNormChannels(C, cfg.augment.mean, `--weights ${path}`, `--preset ${cfg.name}`);
  const presetMatch = Object.values(PRESETS).find((p) => p.backbone.embedDim === D);
  const presetHeads = presetMatch ? { numHeads: vitConfig(presetMatch.backbone).numHeads } : {};
  const { heads } = vitHeads(D, { ...presetHeads, ...file.metadata }, src.heads, `--weights ${path}`);
  const config = vitConfig({
    imgSize: grid * P,
    patchSize: P,
    inChans: C,
    embedDim: D,
    depth,
    numHeads: heads,
    mlpRatio: fc1 ? fc1.shape[0] / D : 4,
    qkvBias: names.includes(`${prefix}blocks.0.attn.qkv.bias`),
    maskedEmbed: false,
  });
  const want = vitParamShapes(config);
  const problems: string[] = [];
  for (const [n, shape] of want) {
    const t = get(n);
    if (!t) problems.push(`missing '${prefix}${n}' [${shape}]`);
    else if (t.shape.join() !== shape.join()) problems.push(`'${prefix}${n}' is [${t.shape}], expected [${shape}]`);
  }
  if (problems.length) throw new UsageError(`--weights ${path} is not a ViT backbone:\n  ${problems.join("\n  ")}`);
  const leaves = want.map(([n]): [string, Tensor] => {
    const h = get(n)!;
    const data = h.dtype === "float32" ? h.data : Float32Array.from(h.data as ArrayLike<number>);
    return [n, fromTyped(data, h.shape, "float32", backend)];
  });
  return {
    params: fromPaths(leaves) as unknown as VitParams,
    config,
    cfg,
    description: `${path} (ViT D ${D}, depth ${depth}, ${heads} heads, patch ${P}; normalised as ${cfg.name})`,
  };
}

/** Options of `blockOutputs`. */
export interface BlockOutputOptions {
  /** Attention heads. */
  numHeads: number;
  /** LayerNorm epsilon (1e-6). */
  layerNormEps?: number;
}

/**
 * The tokens `[B, 1 + N, D]` after each of the last `n` blocks, each passed through the final LayerNorm
 * (the official `get_intermediate_layers`), for `[B, C, H, W]` images, in eval mode. The last entry equals
 * `vit(params, images, { ...opts, returnAllTokens: true })`.
 */
export function blockOutputs(params: VitParams, images: Tensor, opts: BlockOutputOptions, n: number): Tensor[] {
  const eps = opts.layerNormEps ?? 1e-6;
  const depth = params.blocks.length;
  if (!(Number.isInteger(n) && n >= 1 && n <= depth)) {
    throw new RangeError(`blockOutputs: n = ${n} must be in [1, ${depth}] (the depth)`);
  }
  const P = params.patch_embed.proj.weight.shape[2];
  const [B, , H, W] = images.shape;
  const gh = Math.floor(H / P);
  const gw = Math.floor(W / P);
  let x = patchEmbed(params.patch_embed.proj, images);
  const D = x.shape[2];
  x = api.concat([api.broadcastTo(params.cls_token, [B, 1, D]), x], 1);
  x = api.add(x, interpolatePosEmbed(params.pos_embed, gh, gw, H === W));
  const out: Tensor[] = [];
  params.blocks.forEach((b, i) => {
    x = api.add(x, attention(b.attn, nn.layerNorm(x, b.norm1.weight, b.norm1.bias, eps), opts.numHeads).out);
    const h = nn.layerNorm(x, b.norm2.weight, b.norm2.bias, eps);
    x = api.add(
      x,
      nn.linear(nn.gelu(nn.linear(h, b.mlp.fc1.weight, b.mlp.fc1.bias)), b.mlp.fc2.weight, b.mlp.fc2.bias),
    );
    if (i >= depth - n) out.push(nn.layerNorm(x, params.norm.weight, params.norm.bias, eps));
  });
  return out;
}

/** How linear-probe features are made (ibot-spec §8.2). */
export interface ProbeFeatureMode {
  /** CLS tokens of the last this many blocks, concatenated (4 for ViT-S/T, 1 for ViT-B/L). */
  nLastBlocks: number;
  /** Also concatenate the mean of the last block's patch tokens (ViT-B/L: true). */
  avgpool: boolean;
}

/** The official choice: ViT-S and smaller: last 4 CLS tokens; wider models (ViT-B/L): last CLS + mean patch. */
export function defaultProbeMode(config: Pick<VitConfig, "embedDim" | "depth">): ProbeFeatureMode {
  return config.embedDim <= 384
    ? { nLastBlocks: Math.min(4, config.depth), avgpool: false }
    : { nLastBlocks: 1, avgpool: true };
}

/** Linear-probe features `[B, F]` of `[B, C, H, W]` (normalised) images. */
export function probeFeatures(
  params: VitParams,
  images: Tensor,
  opts: BlockOutputOptions,
  mode: ProbeFeatureMode,
): Tensor {
  const outs = blockOutputs(params, images, opts, mode.nLastBlocks);
  const [B, T, D] = outs[0].shape;
  const cls = outs.map((o) => api.reshape(api.slice(o, [0, 0, 0], [B, 1, D]), [B, D]));
  if (mode.avgpool) cls.push(api.mean(api.slice(outs.at(-1)!, [0, 1, 0], [B, T, D]), 1));
  return cls.length === 1 ? cls[0] : api.concat(cls, 1);
}
