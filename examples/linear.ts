/**
 * Linear probing (ibot-spec §8.2, `eval_linear_multi.py`) on frozen features: for ViT-S and smaller the CLS
 * tokens of the last 4 blocks (each after the final LayerNorm) concatenated, for wider models the last CLS token
 * with the mean patch token. A sweep of linear classifiers (by default the official 45 learning rates
 * `{1..9} x {1e-4, ..., 1} x batch/256`) is trained in parallel: their weights are stacked into one matrix, so a
 * step of all of them is one jitted function (one matmul, softmax cross-entropy, SGD with momentum 0.9, weight
 * decay 0), with the learning rate annealed by a cosine to 0 over the epochs. Reported: top-1 on the test split
 * of every classifier, the best learning rate, and the best over classifiers and evaluations (what the official
 * script reports).
 *
 * Differences from the official protocol, for speed on small data: features are computed once from the
 * unaugmented images (no RandomResizedCrop/flip), and each epoch drops its last partial batch.
 *
 * ```sh
 * deno run --unstable-webgpu --allow-read=runs/emb examples/linear.ts --checkpoint runs/emb/checkpoint.safetensors
 * deno run --unstable-webgpu examples/linear.ts --random                     # a random-init baseline
 * ```
 *
 * @module
 */
import { runCli } from "./lib/cli.ts";
import { splitFeatures as mapSplit } from "../train/features.ts";
import { parseArgs } from "node:util";
import { initBackend, jit } from "../mod.ts";
import type { Tensor } from "../ops/tensor.ts";
import { leaves } from "../autograd/tree.ts";
import { valueAndGrad } from "../autograd/vjp.ts";
import type { Backend } from "../ops/backend.ts";
import * as api from "../ops/api.ts";
import * as nn from "../ops/nn.ts";
import * as random from "../ops/random.ts";
import { fromTyped, zeros } from "../ops/create.ts";
import { normalize } from "../train/augment.ts";
import type { Dataset } from "../train/data/dataset.ts";
import { FMNIST_DIR } from "../train/data/fmnist.ts";
import { loadData } from "./lib/data.ts";
import { epochPermutation } from "../train/data/loader.ts";
import { PRESETS } from "../train/presets.ts";
import type { VitParams } from "../models/vit.ts";
import {
  type Backbone,
  defaultProbeMode,
  disposeTree,
  loadBackbone,
  type ProbeFeatureMode,
  probeFeatures,
  UsageError,
} from "./lib/model.ts";

/** The official sweep: `{1..9} x {1e-4, 1e-3, 1e-2, 1e-1, 1}` (multiply by batch/256). */
export const OFFICIAL_LRS: readonly number[] = [1e-4, 1e-3, 1e-2, 1e-1, 1].flatMap((d) =>
  [1, 2, 3, 4, 5, 6, 7, 8, 9].map((m) => +(m * d).toPrecision(2))
);

/** Options of `linearProbe`. */
export interface LinearProbeOptions {
  /** Base learning rates of the classifiers (multiplied by `batchSize / 256`); default `OFFICIAL_LRS`. */
  lrs?: readonly number[];
  /** Epochs (default 100). */
  epochs?: number;
  /** Images per step (default 128). */
  batchSize?: number;
  /** SGD momentum (default 0.9). */
  momentum?: number;
  /** Weight decay (default 0). */
  weightDecay?: number;
  /** Seed of the initialisation and the batch order (default 0). */
  seed?: number;
  /** Evaluate every this many epochs (default: at the end only). */
  evalEvery?: number;
  /** Called after each evaluation with the epoch and the top-1 of every classifier. */
  onEval?: (epoch: number, top1: Float64Array) => void;
}

/** Result of `linearProbe`. */
export interface LinearProbeResult {
  /** The effective (scaled) learning rate of each classifier. */
  lrs: number[];
  /** Test top-1 of each classifier after the last epoch. */
  top1: Float64Array;
  /** The classifier with the best final top-1. */
  best: { lr: number; top1: number };
  /** The best top-1 over classifiers and evaluations (the number `eval_linear_multi.py` reports). */
  bestOverEpochs: { lr: number; top1: number; epoch: number };
  /** Wall time of the training, seconds. */
  seconds: number;
  /** Steps made. */
  steps: number;
}

interface ProbeState {
  /** `[L * C, F]`: classifier l's class c is row `l * C + c`. */
  w: Tensor;
  /** `[L * C]`. */
  b: Tensor;
  /** Momentum buffers. */
  vw: Tensor;
  vb: Tensor;
}

function logitsOf(s: Pick<ProbeState, "w" | "b">, x: Tensor, L: number, C: number): Tensor {
  return api.reshape(nn.linear(x, s.w, s.b), [x.shape[0], L, C]);
}

/**
 * Trains `lrs.length` linear classifiers on `[N, F]` training features at once and evaluates them on `[M, F]`
 * test features (all on the features' backend): weights `N(0, 0.01^2)`, bias 0, softmax cross-entropy, SGD with
 * momentum, cosine annealing of the learning rate per epoch to 0.
 */
export async function linearProbe(
  trainFeatures: Tensor,
  trainLabels: Int32Array,
  testFeatures: Tensor,
  testLabels: Int32Array,
  numClasses: number,
  opts: LinearProbeOptions = {},
): Promise<LinearProbeResult> {
  const backend = trainFeatures.backend;
  const [N, F] = trainFeatures.shape;
  const M = testFeatures.shape[0];
  const C = numClasses;
  const batch = Math.min(opts.batchSize ?? 128, N);
  const epochs = opts.epochs ?? 100;
  const momentum = opts.momentum ?? 0.9;
  const wd = opts.weightDecay ?? 0;
  const seed = opts.seed ?? 0;
  const lrs = (opts.lrs ?? OFFICIAL_LRS).map((lr) => (lr * batch) / 256);
  const L = lrs.length;
  const evalEvery = opts.evalEvery ?? epochs;
  if (trainLabels.length !== N || testLabels.length !== M) throw new RangeError("linearProbe: labels do not match");
  const stepsPerEpoch = Math.floor(N / batch);

  const onehot = new Float32Array(N * C);
  trainLabels.forEach((y, i) => (onehot[i * C + y] = 1));
  const trainY = fromTyped(onehot, [N, C], "float32", backend);
  const testY = fromTyped(testLabels, [M, 1], "int32", backend);
  const lrRows = new Float32Array(L * C);
  lrs.forEach((lr, l) => lrRows.fill(lr, l * C, (l + 1) * C));
  const lrCol = fromTyped(lrRows, [L * C, 1], "float32", backend);
  const lrVec = fromTyped(lrRows, [L * C], "float32", backend);

  let state: ProbeState = {
    w: random.normal(random.key(seed, backend), [L * C, F], { std: 0.01 }),
    b: zeros([L * C], { backend }),
    vw: zeros([L * C, F], { backend }),
    vb: zeros([L * C], { backend }),
  };
  const loss = (p: { w: Tensor; b: Tensor }, x: Tensor, y: Tensor) => {
    const logp = nn.logSoftmax(logitsOf(p, x, L, C), -1); // [B, L, C]
    // Sum over the classifiers of each one's mean cross-entropy: the gradients stay independent.
    return api.div(api.neg(api.sum(api.mul(logp, api.reshape(y, [x.shape[0], 1, C])))), x.shape[0]);
  };
  const step = jit(
    (s: ProbeState, feats: Tensor, ys: Tensor, idx: Tensor, lrc: Tensor, lrv: Tensor, factor: number) => {
      const x = api.gather(feats, idx, 0);
      const y = api.gather(ys, idx, 0);
      const [l, g] = valueAndGrad(loss)({ w: s.w, b: s.b }, x, y) as [Tensor, { w: Tensor; b: Tensor }];
      const gw = wd ? api.add(g.w, api.mul(s.w, wd)) : g.w;
      const gb = wd ? api.add(g.b, api.mul(s.b, wd)) : g.b;
      const vw = api.add(api.mul(s.vw, momentum), gw);
      const vb = api.add(api.mul(s.vb, momentum), gb);
      return {
        state: {
          w: api.sub(s.w, api.mul(api.mul(lrc, factor), vw)),
          b: api.sub(s.b, api.mul(api.mul(lrv, factor), vb)),
          vw,
          vb,
        },
        loss: l,
      };
    },
    { donate: [0] },
  );
  const chunk = 2048;
  const correct = jit((s: ProbeState, x: Tensor, y: Tensor) => {
    const pred = api.argmax(logitsOf(s, x, L, C), -1); // [m, L]
    return api.sum(api.cast(api.equal(pred, y), "float32"), 0); // [L]
  });
  const evaluate = async (): Promise<Float64Array> => {
    const counts = new Float64Array(L);
    for (let i = 0; i < M; i += chunk) {
      const m = Math.min(chunk, M - i);
      const x = api.slice(testFeatures, [i, 0], [i + m, F]);
      const y = api.slice(testY, [i, 0], [i + m, 1]);
      const c = correct(state, x, y);
      const d = await c.data();
      for (let l = 0; l < L; l++) counts[l] += d[l];
      c.dispose();
      if (x !== testFeatures) x.dispose(); // a full-range slice may return its input
      if (y !== testY) y.dispose();
    }
    return counts.map((c) => c / M);
  };

  const t0 = performance.now();
  let bestOverEpochs = { lr: lrs[0], top1: -1, epoch: 0 };
  let top1: Float64Array = new Float64Array(L);
  let steps = 0;
  for (let e = 0; e < epochs; e++) {
    const factor = 0.5 * (1 + Math.cos((Math.PI * e) / epochs)); // CosineAnnealingLR(T_max = epochs), per epoch
    const perm = epochPermutation(seed, e, N);
    let last: Tensor | null = null;
    for (let s = 0; s < stepsPerEpoch; s++) {
      const idx = fromTyped(perm.subarray(s * batch, (s + 1) * batch), [batch], "int32", backend);
      const out = step(state, trainFeatures, trainY, idx, lrCol, lrVec, factor);
      state = out.state;
      last?.dispose();
      last = out.loss;
      idx.dispose();
      steps++;
    }
    if (last) {
      // Reading the loss once per epoch keeps the device queue short. (A diverged classifier makes the summed
      // loss non-finite without affecting the others, so it is not checked.)
      await last.data();
      last.dispose();
    }
    if ((e + 1) % evalEvery === 0 || e === epochs - 1) {
      top1 = await evaluate();
      top1.forEach((a, l) => {
        if (a > bestOverEpochs.top1) bestOverEpochs = { lr: lrs[l], top1: a, epoch: e + 1 };
      });
      opts.onEval?.(e + 1, top1);
    }
  }
  const seconds = (performance.now() - t0) / 1000;
  let bi = 0;
  top1.forEach((a, l) => (bi = a > top1[bi] ? l : bi));
  step.dispose();
  correct.dispose();
  for (const t of [...leaves<Tensor>(state), trainY, testY, lrCol, lrVec]) t.dispose();
  return { lrs, top1, best: { lr: lrs[bi], top1: top1[bi] }, bestOverEpochs, seconds, steps };
}

/** Linear-probe features of a split, `[n, F]`, on the backbone's backend, in batches of 256. */
export async function splitFeatures(
  bb: Pick<Backbone, "params" | "config" | "cfg">,
  ds: Dataset,
  split: "train" | "test",
  mode: ProbeFeatureMode,
  backend: Backend,
  limit?: number,
): Promise<Tensor> {
  const { mean, std } = bb.cfg.augment;
  const opts = { numHeads: bb.config.numHeads, layerNormEps: bb.config.layerNormEps };
  const fwd = jit((p: VitParams, x: Tensor) => probeFeatures(p, normalize(x, mean, std), opts, mode));
  try {
    return await mapSplit(ds, split, backend, (x) => fwd(bb.params, x), limit);
  } finally {
    fwd.dispose();
  }
}

const USAGE = `Usage: deno run --unstable-webgpu [permissions] examples/linear.ts [options]

Linear probing (ibot-spec 8.2) of a frozen ViT: features = CLS tokens of the last 4 blocks (ViT-S and
smaller) or last CLS + mean patch token (wider), a sweep of linear classifiers trained in parallel in one
jitted step (SGD momentum 0.9, wd 0, cosine lr to 0), top-1 on the test split for each learning rate.

Model (one of):
  --checkpoint FILE   a training checkpoint of examples/pretrain.ts --out (teacher; --student for the
                      student); needs --allow-read=FILE
  --weights FILE      a safetensors file of ViT backbone parameters (--heads N if needed)
  --random            a randomly initialised backbone of --preset (a baseline)
  --preset NAME       ${Object.keys(PRESETS).join(" | ")} (default embedded-small)
  --baseline          also probe a randomly initialised network of the same architecture

Data:
  --data SOURCE       embedded | fmnist | <image folder> (default embedded; fmnist needs
                      --allow-read=${FMNIST_DIR}, a folder --allow-read=<folder>)
  --train-limit N     use the first N training images
  --test-limit N      use the first N test images

Probe:
  --features MODE     auto | cls4 | cls+avg (default auto: cls4 up to width 384, else cls+avg)
  --n-last-blocks N   CLS tokens of the last N blocks (overrides --features)
  --lrs LIST          comma-separated base lrs (x batch/256), or "official" (default: {1..9} x 1e-4..1)
  --epochs N          epochs (default 100)
  --batch-size N      images per step (default 128)
  --wd F              weight decay (default 0)
  --eval-every N      evaluate every N epochs (default: at the end)
  --seed N            seed (default 0)
  --backend NAME      auto | webgpu | cpu (default auto)
  -h, --help          show this help`;

function positiveInt(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`--${name} must be a positive integer, got '${v}'`);
  return n;
}

function table(r: LinearProbeResult, baseLrs: readonly number[]): string {
  const rows = r.lrs.map((lr, l) =>
    `    lr ${String(baseLrs[l]).padEnd(7)} (${lr.toExponential(1)})  ${(100 * r.top1[l]).toFixed(1).padStart(5)}%`
  );
  // Nine per line for the official grid, to keep it short.
  const out: string[] = [];
  const per = baseLrs.length % 9 === 0 ? 9 : baseLrs.length;
  for (let i = 0; i < r.lrs.length; i += per) {
    out.push(
      `  ${baseLrs[i].toExponential(0)}..: ` +
        Array.from({ length: Math.min(per, r.lrs.length - i) }, (_, j) => (100 * r.top1[i + j]).toFixed(1)).join(" "),
    );
  }
  return per === 9 ? out.join("\n") : rows.join("\n");
}

async function probe(
  label: string,
  bb: Backbone,
  ds: Dataset,
  mode: ProbeFeatureMode,
  backend: Backend,
  limits: { train?: number; test?: number },
  opts: LinearProbeOptions,
  baseLrs: readonly number[],
): Promise<LinearProbeResult> {
  const t0 = performance.now();
  const train = await splitFeatures(bb, ds, "train", mode, backend, limits.train);
  const test = await splitFeatures(bb, ds, "test", mode, backend, limits.test);
  const ntr = train.shape[0];
  const nte = test.shape[0];
  console.log(
    `${label}: features [${ntr}, ${train.shape[1]}] train / [${nte}, ${test.shape[1]}] test in ` +
      `${((performance.now() - t0) / 1000).toFixed(1)} s`,
  );
  const r = await linearProbe(
    train,
    ds.train.labels.subarray(0, ntr),
    test,
    ds.test.labels.subarray(0, nte),
    ds.numClasses,
    {
      ...opts,
      onEval: (e, top1) => {
        const best = top1.reduce((b, v, i) => (v > top1[b] ? i : b), 0);
        console.log(`  epoch ${e}: best top-1 ${(100 * top1[best]).toFixed(1)}% (lr ${baseLrs[best]})`);
      },
    },
  );
  train.dispose();
  test.dispose();
  console.log(`  top-1 per base lr (${r.steps} steps of ${r.lrs.length} classifiers in ${r.seconds.toFixed(1)} s):`);
  console.log(table(r, baseLrs));
  console.log(
    `  best: base lr ${baseLrs[r.lrs.indexOf(r.best.lr)]} (scaled ${r.best.lr.toPrecision(3)}) -> top-1 ` +
      `${(100 * r.best.top1).toFixed(1)}% at the end; best over classifiers and evaluations ` +
      `${(100 * r.bestOverEpochs.top1).toFixed(1)}% (base lr ${baseLrs[r.lrs.indexOf(r.bestOverEpochs.lr)]}, ` +
      `epoch ${r.bestOverEpochs.epoch})`,
  );
  return r;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      checkpoint: { type: "string" },
      weights: { type: "string" },
      random: { type: "boolean" },
      student: { type: "boolean" },
      preset: { type: "string" },
      heads: { type: "string" },
      baseline: { type: "boolean" },
      data: { type: "string" },
      "train-limit": { type: "string" },
      "test-limit": { type: "string" },
      features: { type: "string" },
      "n-last-blocks": { type: "string" },
      lrs: { type: "string" },
      epochs: { type: "string" },
      "batch-size": { type: "string" },
      wd: { type: "string" },
      "eval-every": { type: "string" },
      seed: { type: "string" },
      backend: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const kind = values.backend ?? "auto";
  if (!["auto", "webgpu", "cpu"].includes(kind)) throw new UsageError("--backend must be auto, webgpu or cpu");
  const seed = values.seed === undefined ? 0 : Number(values.seed);
  if (!Number.isInteger(seed)) throw new UsageError(`--seed must be an integer`);
  const baseLrs = !values.lrs || values.lrs === "official" ? OFFICIAL_LRS : values.lrs.split(",").map(Number);
  if (!baseLrs.every((x) => x > 0 && Number.isFinite(x))) {
    throw new UsageError("--lrs: positive numbers, comma-separated");
  }
  const wd = values.wd === undefined ? 0 : Number(values.wd);
  if (!(wd >= 0)) throw new UsageError("--wd must be >= 0");
  const opts: LinearProbeOptions = {
    lrs: baseLrs,
    epochs: positiveInt("epochs", values.epochs) ?? 100,
    batchSize: positiveInt("batch-size", values["batch-size"]) ?? 128,
    weightDecay: wd,
    evalEvery: positiveInt("eval-every", values["eval-every"]),
    seed,
  };
  const limits = {
    train: positiveInt("train-limit", values["train-limit"]),
    test: positiveInt("test-limit", values["test-limit"]),
  };
  const heads = positiveInt("heads", values.heads);

  const backend = await initBackend(kind as "auto" | "webgpu" | "cpu");
  const bb = await loadBackbone(
    {
      checkpoint: values.checkpoint,
      weights: values.weights,
      random: values.random,
      preset: values.preset,
      heads,
      seed,
      student: values.student,
    },
    backend,
  );
  const ds = await loadData(values.data ?? "embedded");
  if (ds.channels !== bb.config.inChans) {
    throw new UsageError(`--data: ${ds.name} has ${ds.channels} channel(s), the model takes ${bb.config.inChans}`);
  }
  if (ds.test.n === 0) throw new UsageError(`--data: ${ds.name} has no test images to evaluate the probe on`);
  let mode = defaultProbeMode(bb.config);
  if (values.features === "cls4") mode = { nLastBlocks: Math.min(4, bb.config.depth), avgpool: false };
  else if (values.features === "cls+avg") mode = { nLastBlocks: 1, avgpool: true };
  else if (values.features !== undefined && values.features !== "auto") {
    throw new UsageError(`--features must be auto, cls4 or cls+avg`);
  }
  const nLast = positiveInt("n-last-blocks", values["n-last-blocks"]);
  if (nLast !== undefined) {
    if (nLast > bb.config.depth) throw new UsageError(`--n-last-blocks ${nLast} > depth ${bb.config.depth}`);
    mode = { nLastBlocks: nLast, avgpool: false };
  }
  const info = (backend as { adapterInfo?: string }).adapterInfo ?? "cpu";
  console.log(`model: ${bb.description}`);
  console.log(
    `data: ${ds.name} (${limits.train ?? ds.train.n} train / ${limits.test ?? ds.test.n} test, ${ds.numClasses} ` +
      `classes); features: CLS of the last ${mode.nLastBlocks} block(s)${mode.avgpool ? " + mean patch" : ""}; ` +
      `${baseLrs.length} classifiers, ${opts.epochs} epochs, batch ${opts.batchSize}; ${backend.name} [${info}]`,
  );
  const r = await probe("model", bb, ds, mode, backend, limits, opts, baseLrs);
  disposeTree(bb.params);
  if (values.baseline) {
    const { initVit } = await import("../models/vit.ts");
    const { masked_embed: _m, ...params } = initVit(random.key(seed + 12345, backend), bb.config);
    _m?.dispose();
    const rb = await probe(
      "random init",
      { ...bb, params: params as VitParams },
      ds,
      mode,
      backend,
      limits,
      opts,
      baseLrs,
    );
    disposeTree(params);
    console.log(
      `linear top-1: ${(100 * r.best.top1).toFixed(1)}% vs ${(100 * rb.best.top1).toFixed(1)}% for a random network`,
    );
  }
  return 0;
}

if (import.meta.main) await runCli(main, USAGE);
