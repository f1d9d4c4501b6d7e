/**
 * The main job: iBOT self-supervised pretraining. NOT IMPLEMENTED YET.
 *
 * Until the models and the training loop exist, this placeholder trains something small but real end to end
 * with the engine, so the whole stack (backend selection, PRNG, `valueAndGrad`, `jit`, pytrees, readback) is
 * exercised by one command: a 2-layer MLP classifier on a procedurally generated 2-D "three spirals" data set,
 * full-batch plain SGD.
 *
 * Run with: `deno run --unstable-webgpu examples/pretrain.ts` (no permissions needed), or `deno task pretrain`.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { argmax, cast, equal, initBackend, jit, nn, random, type Tensor, tensor, tree, valueAndGrad } from "../mod.ts";

const USAGE = `Usage: deno run --unstable-webgpu examples/pretrain.ts [options]

iBOT pretraining is not implemented yet. This placeholder trains a 2-layer MLP on a
generated 2-D three-spirals data set with jit(valueAndGrad) and plain SGD, as a demo.

Options:
  --steps N                 SGD steps (default 600)
  --seed N                  seed of the data set and the initial weights (default 0)
  --backend auto|cpu|webgpu backend (default auto: WebGPU if an adapter exists, else CPU)
  -h, --help                show this help
`;

/** Model parameters: a pytree of tensors. */
interface Params {
  w1: Tensor;
  b1: Tensor;
  w2: Tensor;
  b2: Tensor;
}

const CLASSES = 3;
const POINTS_PER_CLASS = 128;
const HIDDEN = 64;
const LR = 0.5;

/** A small deterministic host PRNG (mulberry32) for the data set. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Three interleaved noisy spirals in the plane: points `[n, 2]`, one-hot targets `[n, 3]`, labels `[n]`. */
function spirals(seed: number): { x: Float32Array; onehot: Float32Array; labels: Int32Array; n: number } {
  const rand = mulberry32(seed);
  const n = CLASSES * POINTS_PER_CLASS;
  const x = new Float32Array(n * 2);
  const onehot = new Float32Array(n * CLASSES);
  const labels = new Int32Array(n);
  for (let c = 0; c < CLASSES; c++) {
    for (let i = 0; i < POINTS_PER_CLASS; i++) {
      const k = c * POINTS_PER_CLASS + i;
      const r = i / POINTS_PER_CLASS;
      const theta = (c * 2 * Math.PI) / CLASSES + r * 4 + (rand() - 0.5) * 0.4;
      x[2 * k] = r * Math.cos(theta);
      x[2 * k + 1] = r * Math.sin(theta);
      onehot[k * CLASSES + c] = 1;
      labels[k] = c;
    }
  }
  return { x, onehot, labels, n };
}

function initParams(seed: number): Params {
  const [k1, k2] = random.split(random.key(seed));
  return {
    w1: random.normal(k1, [HIDDEN, 2], { std: Math.sqrt(2 / 2) }),
    b1: tensor(new Float32Array(HIDDEN)),
    w2: random.normal(k2, [CLASSES, HIDDEN], { std: Math.sqrt(1 / HIDDEN) }),
    b2: tensor(new Float32Array(CLASSES)),
  };
}

function forward(p: Params, x: Tensor): Tensor {
  const h = nn.gelu(nn.linear(x, p.w1, p.b1));
  return nn.linear(h, p.w2, p.b2);
}

/** Mean cross-entropy, with the predicted classes as auxiliary output. */
function lossFn(p: Params, x: Tensor, onehot: Tensor): [Tensor, Tensor] {
  const logits = forward(p, x);
  const loss = nn.softCrossEntropy(onehot, logits).mean();
  return [loss, argmax(logits, -1)];
}

/** One full-batch SGD step, traced once and replayed. */
const step = jit((p: Params, x: Tensor, onehot: Tensor, labels: Tensor, lr: number) => {
  const [[loss, pred], g] = valueAndGrad(lossFn, { hasAux: true })(p, x, onehot);
  const acc = cast(equal(pred, labels), "float32").mean();
  const next = tree.map((w: Tensor, gw: Tensor) => w.sub(gw.mul(lr)), p, g) as unknown as Params;
  return { params: next, loss, acc };
});

function disposeTree(t: unknown): void {
  for (const leaf of tree.leaves<unknown>(t)) {
    if (leaf && typeof leaf === "object" && "dispose" in leaf) (leaf as Tensor).dispose();
  }
}

async function main(): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: Deno.args,
      options: {
        steps: { type: "string", default: "600" },
        seed: { type: "string", default: "0" },
        backend: { type: "string", default: "auto" },
        help: { type: "boolean", short: "h", default: false },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (e) {
    console.error(`error: ${(e as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const steps = Number(values.steps);
  const seed = Number(values.seed);
  const kind = values.backend;
  if (!Number.isInteger(steps) || steps < 1) {
    console.error(`error: --steps must be a positive integer, got '${values.steps}'\n\n${USAGE}`);
    return 2;
  }
  if (!Number.isInteger(seed) || seed < 0) {
    console.error(`error: --seed must be a non-negative integer, got '${values.seed}'\n\n${USAGE}`);
    return 2;
  }
  if (kind !== "auto" && kind !== "cpu" && kind !== "webgpu") {
    console.error(`error: --backend must be auto, cpu or webgpu, got '${kind}'\n\n${USAGE}`);
    return 2;
  }

  console.log("NOTE: iBOT pretraining is not implemented yet; running a small placeholder demo instead.");
  const backend = await initBackend(kind);
  const device = (backend as { adapterInfo?: string }).adapterInfo;
  console.log(`backend: ${backend.name}${device ? ` (${device})` : ""}`);

  const data = spirals(seed);
  const x = tensor(data.x, { shape: [data.n, 2] });
  const onehot = tensor(data.onehot, { shape: [data.n, CLASSES] });
  const labels = tensor(data.labels, { shape: [data.n], dtype: "int32" });
  let params = initParams(seed);
  console.log(
    `task: 3-class spirals, ${data.n} points; model: MLP 2-${HIDDEN}-${CLASSES} (gelu); full-batch SGD, lr ${LR}`,
  );

  const every = Math.max(1, Math.round(steps / 10));
  const t0 = performance.now();
  let last = { loss: NaN, acc: NaN };
  for (let i = 1; i <= steps; i++) {
    const out = step(params, x, onehot, labels, LR);
    disposeTree(params);
    params = out.params;
    if (i % every === 0 || i === steps || i === 1) {
      const [loss, acc] = await Promise.all([out.loss.item(), out.acc.item()]);
      last = { loss, acc };
      const secs = (performance.now() - t0) / 1000;
      console.log(
        `step ${String(i).padStart(5)}/${steps}  loss ${loss.toFixed(4)}  accuracy ${(acc * 100).toFixed(1)}%  ` +
          `[${backend.name}, ${secs.toFixed(1)} s]`,
      );
    }
    out.loss.dispose();
    out.acc.dispose();
  }
  const secs = (performance.now() - t0) / 1000;
  const stats = step.stats();
  const plan = stats.plan ? `, ${stats.plan.dispatches} GPU dispatches per step` : "";
  console.log(
    `done: ${steps} steps in ${secs.toFixed(1)} s on ${backend.name}; final loss ${last.loss.toFixed(4)}, ` +
      `accuracy ${(last.acc * 100).toFixed(1)}% (jit: ${stats.traces} trace, ${stats.eqns} ops per step${plan})`,
  );
  if (!Number.isFinite(last.loss)) {
    console.error("error: the loss is not finite");
    return 1;
  }
  console.log("iBOT pretraining is not implemented yet: this was the placeholder demo.");
  disposeTree(params);
  return 0;
}

try {
  Deno.exitCode = await main();
} catch (e) {
  console.error(`error: ${(e as Error)?.stack ?? e}`);
  Deno.exitCode = 1;
}
