/**
 * Weighted k-NN evaluation (the DINO protocol, ibot-spec §8.1, `train/knn.ts`) of a frozen backbone: the
 * teacher's CLS token (ViT) or average-pooled token (Swin) after the final norm, l2-normalised, cosine
 * similarity to every training feature, the top-k vote with weights `exp(sim / T)`, top-1 on the test split.
 *
 * The backbone comes from a training checkpoint of `examples/pretrain.ts --out DIR` (ViT or Swin, the teacher
 * by default) or from an official iBOT checkpoint (`checkpoint.pth`, `checkpoint_teacher.pth` or a safetensors
 * conversion) with `--arch`. `--random` adds a randomly initialised network of the same architecture.
 *
 * ```sh
 * deno run --unstable-webgpu --allow-read=runs/emb examples/knn.ts --checkpoint runs/emb/checkpoint.safetensors --random
 * deno run --unstable-webgpu --allow-read=ckpt examples/knn.ts --weights ckpt/checkpoint_teacher.pth --arch vit_small
 * ```
 *
 * @module
 */
import { parseArgs } from "node:util";
import { readBytes, runCli, seedFlag, UsageError } from "./lib/cli.ts";
import { FOLDER_TEST_FRACTION, loadData } from "./lib/data.ts";
import { checkNormChannels, vitHeads } from "./lib/model.ts";
import { initBackend } from "../mod.ts";
import type { Tensor } from "../ops/tensor.ts";
import { jit } from "../autograd/jit.ts";
import { map as treeMap } from "../autograd/tree.ts";
import type { Backend } from "../ops/backend.ts";
import * as api from "../ops/api.ts";
import * as random from "../ops/random.ts";
import { type HostTensor, parseSafetensors, type SafetensorsFile } from "../models/safetensors.ts";
import { loadWeightsIntoModel, readModelWeights, specFromShapes } from "../models/checkpoint.ts";
import { stateDict } from "../models/pth.ts";
import { type SwinConfig, swinSpec } from "../models/swin.ts";
import { VIT_PRESETS, type VitArch, vitConfig, vitParamShapes } from "../models/vit.ts";
import {
  backboneFeatures,
  type BackboneParams,
  type BackboneSpec,
  initBackbone,
  isSwin,
  resolveBackbone,
  SWIN_PRESETS,
  type SwinArch,
} from "../train/backbone.ts";
import { AUGMENT_PRESETS, normalize } from "../train/augment.ts";
import { knnAccuracy } from "../train/knn.ts";
import { splitFeatures } from "../train/features.ts";
import { PRESETS, type PretrainConfig } from "../train/presets.ts";
import type { Dataset } from "../train/data/dataset.ts";
import { FMNIST_DIR } from "../train/data/fmnist.ts";

const ARCHS = [...Object.keys(VIT_PRESETS), ...Object.keys(SWIN_PRESETS)];

const USAGE = `Usage: deno run --unstable-webgpu [permissions] examples/knn.ts [options]

Weighted k-NN (DINO protocol, ibot-spec 8.1) of a frozen backbone: the teacher's CLS token (ViT) or
average-pooled token (Swin) after the final norm, l2-normalised; the k nearest training features vote
with weights exp(sim / T); top-1 on the test split.

Model (one of; --random alone evaluates a random network of --preset):
  --checkpoint FILE   a training checkpoint of examples/pretrain.ts --out DIR (DIR/checkpoint.safetensors),
                      ViT or Swin; the teacher (--student for the student). Needs --allow-read=FILE
  --weights FILE      an official iBOT checkpoint: checkpoint.pth (its 'teacher'), checkpoint_teacher.pth
                      ('state_dict') or safetensors of backbone keys; needs --arch and --allow-read=FILE
  --arch NAME         the architecture of --weights: ${ARCHS.join(" | ")}
                      (patch size and Swin window read from the file; the file must fit the arch), or
                      vit | swin (every size read from the file; a ViT's heads from --heads, else the
                      file's metadata numHeads, else the ViT size of that width: tiny 192 -> 3, small
                      384 -> 6, base 768 -> 12, large 1024 -> 16; any other width needs --heads)
  --key NAME          the state dict to use (default: teacher, else state_dict, else student, else the
                      top level)
  --heads N           attention heads of an --arch vit file
  --img-size N        the image size a Swin of --weights was built for (default 224; fixes its windows)
  --allow-unknown-globals
                      skip Python objects of a --weights .pth outside the allowlist of a weights file
                      instead of refusing the file (nothing is executed either way)
  --random            also evaluate a randomly initialised network of the same architecture
  --preset NAME       ${Object.keys(PRESETS).join(" | ")} (default embedded-small): the network of --random
                      alone; also the normalisation of --weights with --norm preset

Data:
  --data SOURCE       embedded | fmnist | <image folder> (default: the checkpoint's preset's, else embedded;
                      fmnist needs --allow-read=${FMNIST_DIR}, a folder --allow-read=<folder>). A folder
                      without train/ and val/ holds out ${100 * FOLDER_TEST_FRACTION}% of each class as the queries
  --train-limit N     use the first N training images
  --test-limit N      use the first N test images
  --norm WHICH        imagenet | preset: normalisation of --weights (default imagenet; a 1-channel
                      model needs --norm preset with a 1-channel --preset)

k-NN:
  --ks LIST           comma-separated neighbour counts (default 10,20,100,200; clipped to the train size)
  --temperature T     vote temperature (default 0.07)
  --seed N            seed of --random (default: the checkpoint's seed, else 0)
  --backend NAME      auto | webgpu | cpu (default auto)
  -h, --help          show this help`;

/** A backbone ready for feature extraction. */
export interface KnnModel {
  /** Architecture. */
  spec: BackboneSpec;
  /** Parameters without `masked_embed`. */
  params: BackboneParams;
  /** Input normalisation. */
  mean: readonly number[];
  /** Input normalisation. */
  std: readonly number[];
  /** For the console. */
  description: string;
  /** The training config of a checkpoint. */
  cfg?: PretrainConfig;
  /** The checkpoint's seed. */
  seed?: number;
}

/** The expected (ParamSpec) tree of a backbone, for `loadWeightsIntoModel`. */
function expectedTree(spec: BackboneSpec): unknown {
  return spec.kind === "vit" ? specFromShapes(vitParamShapes(spec.config)) : swinSpec(spec.config);
}

function dropMaskToken(params: BackboneParams): BackboneParams {
  const { masked_embed: m, ...rest } = params as BackboneParams & { masked_embed?: Tensor };
  m?.dispose();
  return rest as BackboneParams;
}

/** A checkpoint of `examples/pretrain.ts --out`: its teacher (or student) backbone, config and seed. */
export async function modelFromCheckpoint(path: string, backend: Backend, student = false): Promise<KnnModel> {
  const flag = "--checkpoint";
  let file: SafetensorsFile;
  try {
    file = parseSafetensors(await readBytes(path, flag), path);
  } catch (e) {
    if (e instanceof UsageError) throw e;
    throw new UsageError(`${flag} ${path}: not a safetensors file (${(e as Error).message})`);
  }
  if (file.metadata.format !== "ibot-ts-checkpoint" || !file.metadata.meta) {
    throw new UsageError(
      `${flag} ${path}: not an ibot-ts training checkpoint (an official or backbone-only file goes to --weights)`,
    );
  }
  const meta = JSON.parse(file.metadata.meta) as {
    config?: PretrainConfig;
    preset?: string;
    iteration: number;
    seed?: number;
  };
  const cfg = meta.config ?? PRESETS[meta.preset ?? ""];
  if (!cfg) throw new UsageError(`${flag} ${path}: no training config in its metadata`);
  const who = student ? "student" : "teacher";
  const prefix = `${who}.backbone.`;
  const patch = file.tensors.get(`${prefix}patch_embed.proj.weight`);
  if (!patch) throw new UsageError(`${flag} ${path}: no ${who} backbone in the file`);
  // Channels (and a ViT's image size) are the data's, not in the config: read them off the stored tensors.
  const pos = file.tensors.get(`${prefix}pos_embed`);
  const size = pos ? Math.round(Math.sqrt(pos.shape[1] - 1)) * patch.shape[2] : cfg.augment.globalCrops.size;
  const resolved = resolveBackbone(cfg, { channels: patch.shape[1], size });
  const spec = withMaskToken(resolved, student);
  let params: BackboneParams;
  try {
    params = await loadWeightsIntoModel(expectedTree(spec), file.tensors, {
      prefix,
      backend,
      strict: true,
    }) as BackboneParams;
  } catch (e) {
    throw new UsageError(`${flag} ${path}: the ${who} does not fit its own config: ${(e as Error).message}`);
  }
  const arch = cfg.swin ? cfg.swin.arch : cfg.backbone.arch ?? "ViT";
  return {
    spec: resolved,
    params: dropMaskToken(params),
    mean: cfg.augment.mean,
    std: cfg.augment.std,
    cfg,
    seed: meta.seed,
    description: `${who} of ${path} (${cfg.name}, ${arch}, step ${meta.iteration})`,
  };
}

function withMaskToken(spec: BackboneSpec, on: boolean): BackboneSpec {
  return spec.kind === "vit"
    ? { kind: "vit", config: { ...spec.config, maskedEmbed: on } }
    : { kind: "swin", config: { ...spec.config, maskedEmbed: on } };
}

/** Options of `modelFromWeights`. */
export interface WeightsOptions {
  /** `vit_*`, `swin_*`, or `vit` / `swin` (sizes from the file). */
  arch: string;
  /** The state dict to use (default: teacher, else state_dict, else student, else the top level). */
  key?: string;
  /** Heads of an `--arch vit` file. */
  heads?: number;
  /** The image size a Swin was built for (default 224). */
  imgSize?: number;
  /** Normalisation (default ImageNet's). */
  mean?: readonly number[];
  /** Normalisation (default ImageNet's). */
  std?: readonly number[];
  /** Skip Python globals of a `.pth` outside the allowlist instead of refusing the file. */
  skipUnknownGlobals?: boolean;
}

/** `loadWeightsIntoModel`'s error with wrong shapes first and at most 8 entries per section. */
function shortLoadError(message: string): string {
  const sections: { title: string; items: string[] }[] = [];
  for (const line of message.split("\n").slice(1)) {
    if (/^ {2}\S/.test(line)) sections.push({ title: line.trim(), items: [] });
    else if (sections.length) sections.at(-1)!.items.push(line.trim());
  }
  if (!sections.length) return message;
  const rank = (t: string) => ["wrong shape", "bad buffer", "unexpected", "missing"].findIndex((w) => t.startsWith(w));
  sections.sort((a, b) => rank(a.title) - rank(b.title));
  return sections.map(({ title, items }) =>
    [
      `  ${title}`,
      ...items.slice(0, 8).map((i) => `    ${i}`),
      ...(items.length > 8 ? [`    ... and ${items.length - 8} more`] : []),
    ].join("\n")
  ).join("\n");
}

/** The sizes of a backbone state dict, for error messages. */
function fileSizes(get: (n: string) => HostTensor | undefined, D: number, P: number): string {
  if (get("layers.0.blocks.0.norm1.weight")) {
    let stages = 0;
    while (get(`layers.${stages}.blocks.0.norm1.weight`)) stages++;
    return `a Swin with C ${D}, ${stages} stage(s), patch ${P}`;
  }
  let depth = 0;
  while (get(`blocks.${depth}.norm1.weight`)) depth++;
  return `a ViT with D ${D}, depth ${depth}, patch ${P}`;
}

function modelSizes(spec: BackboneSpec): string {
  return spec.kind === "vit"
    ? `D ${spec.config.embedDim}, depth ${spec.config.depth}, patch ${spec.config.patchSize}`
    : `C ${spec.config.embedDim}, ${spec.config.depths.length} stages (depths ${spec.config.depths.join("-")}), ` +
      `patch ${spec.config.patchSize}`;
}

/** An official iBOT checkpoint (`.pth` or safetensors) as a backbone of `opts.arch`. */
export async function modelFromWeights(path: string, backend: Backend, opts: WeightsOptions): Promise<KnnModel> {
  const flag = "--weights";
  const { arch } = opts;
  if (!ARCHS.includes(arch) && arch !== "vit" && arch !== "swin") {
    throw new UsageError(`--arch: unknown '${arch}' (${ARCHS.join(", ")}, vit, swin)`);
  }
  await readBytes(path, flag); // the permission and existence checks, with the flag's name
  let named: Map<string, HostTensor>;
  let metadata: ReadonlyMap<string, unknown>;
  try {
    ({ tensors: named, values: metadata } = await readModelWeights(path, {
      skipUnknownGlobals: opts.skipUnknownGlobals,
    }));
  } catch (e) {
    const message = (e as Error).message; // a CheckpointError names the file already
    throw new UsageError(`${flag} ${message.startsWith(`${path}:`) ? message : `${path}: ${message}`}`);
  }
  const hasPatch = (m: ReadonlyMap<string, unknown>, p: string) => m.has(`${p}patch_embed.proj.weight`);
  const prefixes = ["backbone.", "module.backbone.", ""];
  const keys = opts.key !== undefined ? [opts.key] : ["teacher", "state_dict", "student", ""];
  let sd: Map<string, HostTensor> | undefined;
  let prefix = "";
  let used = "";
  for (const k of keys) {
    const m = stateDict(named, k);
    const p = prefixes.find((q) => hasPatch(m, q));
    if (p !== undefined) [sd, prefix, used] = [m, p, k];
    if (sd) break;
  }
  if (!sd) {
    throw new UsageError(
      `${flag} ${path}: no backbone found (no 'patch_embed.proj.weight' under ${
        keys.map((k) => `'${k || "<top level>"}'`).join(", ")
      }; see examples/inspect_checkpoint.ts)`,
    );
  }
  const get = (n: string) => sd!.get(prefix + n);
  const patch = get("patch_embed.proj.weight")!;
  const [D, C, P] = patch.shape;
  const maskedEmbed = get("masked_embed") !== undefined;
  let spec: BackboneSpec;
  let headsFrom = "";
  if (isSwin(arch) || arch === "swin") {
    const depths: number[] = [];
    for (let s = 0; get(`layers.${s}.blocks.0.norm1.weight`); s++) {
      let j = 0;
      while (get(`layers.${s}.blocks.${j}.norm1.weight`)) j++;
      depths.push(j);
    }
    const table = (s: number) => get(`layers.${s}.blocks.0.attn.relative_position_bias_table`);
    const t0 = table(0);
    if (!t0) throw new UsageError(`${flag} ${path}: --arch ${arch} but the file has no Swin attention tables`);
    const fc1 = get("layers.0.blocks.0.mlp.fc1.weight");
    const base = arch === "swin"
      ? {
        embedDim: D,
        depths,
        numHeads: depths.map((_, s) => table(s)?.shape[1] ?? 1),
        mlpRatio: fc1 ? fc1.shape[0] / D : 4,
      }
      : { ...SWIN_PRESETS[arch as SwinArch], mlpRatio: 4 };
    const config: SwinConfig = {
      imgSize: opts.imgSize ?? 224,
      patchSize: P,
      inChans: C,
      windowSize: (Math.round(Math.sqrt(t0.shape[0])) + 1) / 2,
      eps: 1e-6,
      ...base,
      dropPathRate: 0,
      maskedEmbed,
    };
    spec = { kind: "swin", config };
  } else {
    const pos = get("pos_embed");
    if (!pos) throw new UsageError(`${flag} ${path}: --arch ${arch} but the file has no ViT 'pos_embed'`);
    const depth = [...sd.keys()].filter((n) => n.startsWith(`${prefix}blocks.`) && n.endsWith(".norm1.weight")).length;
    const fc1 = get("blocks.0.mlp.fc1.weight");
    const found = arch === "vit" ? vitHeads(D, metadata, opts.heads, `${flag} ${path} --arch vit`) : null;
    headsFrom = found ? ` (${found.from})` : "";
    const sizes = found
      ? {
        embedDim: D,
        depth,
        numHeads: found.heads,
        mlpRatio: fc1 ? fc1.shape[0] / D : 4,
      }
      : { ...VIT_PRESETS[arch as VitArch] };
    try {
      spec = {
        kind: "vit",
        config: vitConfig({
          ...sizes,
          imgSize: Math.round(Math.sqrt(pos.shape[1] - 1)) * P,
          patchSize: P,
          inChans: C,
          qkvBias: get("blocks.0.attn.qkv.bias") !== undefined,
          maskedEmbed,
        }),
      };
    } catch (e) {
      throw new UsageError(`${flag} ${path} as --arch ${arch}: ${(e as Error).message}`);
    }
  }
  const mean = opts.mean ?? AUGMENT_PRESETS.imagenet.mean;
  const norm = opts.mean ? "--norm preset" : "--norm imagenet (the default)";
  checkNormChannels(C, mean, `${flag} ${path}`, norm, "--norm preset --preset");
  let params: BackboneParams;
  try {
    params = await loadWeightsIntoModel(expectedTree(spec), sd, { prefix, backend, strict: true }) as BackboneParams;
  } catch (e) {
    throw new UsageError(
      `${flag} ${path} does not fit --arch ${arch}: the file has ${fileSizes(get, D, P)}, the model ` +
        `${modelSizes(spec)}\n${shortLoadError((e as Error).message)}`,
    );
  }
  const where = used ? `'${used}'` : "top level";
  const heads = spec.kind === "vit" ? `, ${spec.config.numHeads} heads${headsFrom}` : "";
  const sizes = `${spec.kind === "vit" ? "ViT" : "Swin"} ${modelSizes(spec)}${heads}`;
  return {
    spec: withMaskToken(spec, false),
    params: dropMaskToken(params),
    mean,
    std: opts.std ?? AUGMENT_PRESETS.imagenet.std,
    description: `${path} (${where}, ${sizes})`,
  };
}

/**
 * k-NN features `[n, D]` of a split: normalised images (grey images repeated to 3 channels for an RGB model)
 * through `backboneFeatures` (CLS / average-pooled token after the final norm).
 */
export async function features(
  model: Pick<KnnModel, "spec" | "params" | "mean" | "std">,
  ds: Dataset,
  split: "train" | "test",
  backend: Backend,
  limit?: number,
): Promise<Tensor> {
  const { spec, mean, std } = model;
  const want = spec.config.inChans;
  const fwd = jit((p: BackboneParams, x: Tensor) => {
    const rgb = x.shape[1] === 1 && want === 3 ? api.concat([x, x, x], 1) : x;
    return backboneFeatures(spec, p, normalize(rgb, mean, std));
  });
  try {
    return await splitFeatures(ds, split, backend, (x) => fwd(model.params, x), limit);
  } finally {
    fwd.dispose();
  }
}

/** k-NN top-1 per k of a model on a dataset (the first `limits` images of each split). */
export async function knnOf(
  model: KnnModel,
  ds: Dataset,
  backend: Backend,
  ks: number[],
  temperature: number,
  limits: { train?: number; test?: number } = {},
): Promise<Record<number, number>> {
  const train = await features(model, ds, "train", backend, limits.train);
  const test = await features(model, ds, "test", backend, limits.test);
  try {
    return await knnAccuracy(
      train,
      ds.train.labels.subarray(0, train.shape[0]),
      test,
      ds.test.labels.subarray(0, test.shape[0]),
      ds.numClasses,
      { ks, temperature },
    );
  } finally {
    train.dispose();
    test.dispose();
  }
}

function positiveInt(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`--${name} must be a positive integer, got '${v}'`);
  return n;
}

/** Result of `main`: top-1 per k of the model and of the random network (when evaluated). */
export interface KnnCliResult {
  /** Top-1 per k of the model (empty with `--random` alone). */
  model: Record<number, number>;
  /** Top-1 per k of the random network (empty without `--random`). */
  random: Record<number, number>;
}

/** The command line: parses `args`, evaluates, prints with `log`; returns the exit code and the accuracies. */
export async function main(
  args: string[] = Deno.args,
  log: (line: string) => void = console.log,
): Promise<{ code: number; result?: KnnCliResult }> {
  const { values } = parseArgs({
    args,
    options: {
      checkpoint: { type: "string" },
      weights: { type: "string" },
      arch: { type: "string" },
      key: { type: "string" },
      heads: { type: "string" },
      "img-size": { type: "string" },
      "allow-unknown-globals": { type: "boolean" },
      student: { type: "boolean" },
      random: { type: "boolean" },
      preset: { type: "string" },
      data: { type: "string" },
      "train-limit": { type: "string" },
      "test-limit": { type: "string" },
      norm: { type: "string" },
      ks: { type: "string" },
      temperature: { type: "string" },
      seed: { type: "string" },
      backend: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
  });
  if (values.help) {
    log(USAGE);
    return { code: 0 };
  }
  const sources = [values.checkpoint, values.weights].filter((x) => x !== undefined).length;
  if (sources > 1) throw new UsageError("give one of --checkpoint FILE or --weights FILE");
  if (sources === 0 && !values.random) throw new UsageError("give --checkpoint FILE, --weights FILE or --random");
  if (values.weights !== undefined && !values.arch) {
    throw new UsageError(`--weights needs --arch (${ARCHS.join(", ")}, vit, swin)`);
  }
  if (values.arch && values.weights === undefined) throw new UsageError("--arch goes with --weights");
  const kind = values.backend ?? "auto";
  if (!["auto", "webgpu", "cpu"].includes(kind)) throw new UsageError("--backend must be auto, webgpu or cpu");
  const ksGiven = (values.ks ?? "10,20,100,200").split(",").map(Number);
  if (!ksGiven.every((k) => Number.isInteger(k) && k >= 1)) {
    throw new UsageError("--ks: positive integers, comma-separated");
  }
  const temperature = values.temperature === undefined ? 0.07 : Number(values.temperature);
  if (!(temperature > 0)) throw new UsageError("--temperature must be > 0");
  const limits = {
    train: positiveInt("train-limit", values["train-limit"]),
    test: positiveInt("test-limit", values["test-limit"]),
  };
  const presetName = values.preset ?? "embedded-small";
  const preset = PRESETS[presetName];
  if (!preset) throw new UsageError(`--preset: unknown preset '${presetName}' (${Object.keys(PRESETS).join(", ")})`);
  const norm = values.norm ?? "imagenet";
  if (norm !== "imagenet" && norm !== "preset") throw new UsageError("--norm must be imagenet or preset");
  if (values.seed !== undefined) seedFlag(values.seed);

  const backend = await initBackend(kind as "auto" | "webgpu" | "cpu");
  let model: KnnModel | null = null;
  if (values.checkpoint !== undefined) {
    model = await modelFromCheckpoint(values.checkpoint, backend, values.student ?? false);
  } else if (values.weights !== undefined) {
    model = await modelFromWeights(values.weights, backend, {
      arch: values.arch!,
      key: values.key,
      heads: positiveInt("heads", values.heads),
      imgSize: positiveInt("img-size", values["img-size"]),
      skipUnknownGlobals: values["allow-unknown-globals"],
      ...(norm === "preset" ? { mean: preset.augment.mean, std: preset.augment.std } : {}),
    });
  }
  const ds = await loadData(values.data ?? model?.cfg?.data ?? (model ? "embedded" : preset.data));
  const cfgForRandom = model?.cfg ?? preset;
  const spec = model?.spec ?? resolveBackbone(preset, { channels: preset.augment.channels, size: ds.size });
  const inChans = spec.config.inChans;
  if (ds.channels !== inChans && !(ds.channels === 1 && inChans === 3)) {
    throw new UsageError(
      `--data: ${ds.name} has ${ds.channels} channel(s) but the model takes ${inChans}` +
        (model ? ` (${model.description})` : ""),
    );
  }
  const ntrain = Math.min(ds.train.n, limits.train ?? ds.train.n);
  const ntest = Math.min(ds.test.n, limits.test ?? ds.test.n);
  if (ntest === 0) {
    throw new UsageError(
      `--data ${values.data ?? ds.name}: no test images to query (${ds.name} has an empty test split)`,
    );
  }
  const ks = ksGiven.filter((k) => k <= ntrain);
  if (ks.length === 0) throw new UsageError(`--ks: every k exceeds the ${ntrain} training images`);
  const info = (backend as { adapterInfo?: string }).adapterInfo ?? "cpu";
  if (model) log(`model: ${model.description}`);
  log(
    `data: ${ds.name} (${ntrain} train / ${ntest} test, ${ds.numClasses} classes, ${ds.channels}x${ds.size}x${ds.size})` +
      `${ds.channels !== inChans ? ", grey repeated to RGB" : ""}; ${backend.name} [${info}]`,
  );
  const result: KnnCliResult = { model: {}, random: {} };
  if (model) {
    const t0 = performance.now();
    result.model = await knnOf(model, ds, backend, ks, temperature, limits);
    log(`k-NN of the model in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    treeMap((t: Tensor) => t.dispose(), model.params);
  }
  if (values.random) {
    // The random baseline of examples/pretrain.ts: the teacher of initState(cfg, spec, key(seed)), i.e. the
    // training run's own initialisation.
    const seed = seedFlag(values.seed, model?.seed ?? 0);
    const [kb] = random.split(random.key(seed, backend), 3);
    const params = dropMaskToken(initBackbone(kb, withMaskToken(spec, true)));
    const mean = model?.mean ?? cfgForRandom.augment.mean;
    const std = model?.std ?? cfgForRandom.augment.std;
    result.random = await knnOf(
      { spec, params, mean, std, description: "random" },
      ds,
      backend,
      ks,
      temperature,
      limits,
    );
    treeMap((t: Tensor) => t.dispose(), params);
    log(`random network: ${spec.kind === "vit" ? "ViT" : "Swin"} of the same architecture, seed ${seed}`);
  }
  log(`k-NN top-1 (weighted vote, T = ${temperature}, l2-normalised features):`);
  for (const k of ks) {
    const parts = [`  k=${String(k).padEnd(4)}`];
    if (model) parts.push(`model ${(100 * result.model[k]).toFixed(2)}%`);
    if (values.random) parts.push(`random init ${(100 * result.random[k]).toFixed(2)}%`);
    log(parts.join("   "));
  }
  return { code: 0, result };
}

if (import.meta.main) await runCli(async () => (await main()).code, USAGE);
