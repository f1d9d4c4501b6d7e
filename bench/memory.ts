/**
 * Memory stability of long jitted loops. First, 1,000 calls of an SGD step of a small MLP,
 * `jit(step, { donate: [0] })`, with the loss read back only every 100 calls. Reports the process RSS
 * (`Deno.memoryUsage().rss`) at call 100 and call 1000 and its drift, the backend's pooled and live GPU bytes at
 * both points (they should be equal), and the GPU buffers created after the warm-up (calls 101..1000; should
 * be 0). Then `bench/memory_train.ts`: N steps of the default training preset, with the slopes of pooled GPU
 * bytes and RSS per step, with a forced GC and without (`IBOT_BENCH_MEMORY_STEPS`, default 1000).
 *
 * @module
 */
import { type Backend, jit, nn, random, type Tensor, tidy, tree, valueAndGrad, zeros } from "../mod.ts";
import { asWebGpu, fmtMiB, fmtNum, header, machine, mdTable, progress, writeResults } from "./util.ts";
import { TRAIN_STEPS, trainingLoop, trainingTables } from "./memory_train.ts";

const CALLS = 1000;
const READ_EVERY = 100;
const DIMS = { batch: 128, input: 64, hidden: 256, output: 10 };

/** One measurement point. */
interface Point {
  call: number;
  rss: number;
  heapUsed: number;
  pooledBytes: number;
  liveBytes: number;
  buffersCreated: number;
  loss: number;
  msSinceStart: number;
}

/** The result of one 1,000-call loop. */
interface Loop {
  forcedGc: boolean;
  points: Point[];
  driftPercent: number;
  createdAfterWarmup: number;
  gpuAt100: number;
  gpuAt1000: number;
  msPerCall: number;
  plan: { dispatches: number; peakBytes: number } | null;
}

const gcFn = (globalThis as { gc?: () => void }).gc;

/** 1,000 calls of a fresh jitted step on fresh params; with `forcedGc`, a full GC before each RSS reading. */
async function loop(backend: Backend, forcedGc: boolean): Promise<Loop> {
  const gpu = asWebGpu(backend);
  const { batch, input, hidden, output } = DIMS;
  // Set-up intermediates (PRNG composites) are freed by tidy; only the returned tensors stay.
  const init = tidy(() => {
    const keys = random.split(random.key(1, backend), 4);
    return {
      params: {
        w1: random.normal(keys[0], [hidden, input], { std: 0.1 }),
        b1: zeros([hidden], { backend }),
        w2: random.normal(keys[2], [output, hidden], { std: 0.1 }),
        b2: zeros([output], { backend }),
      } as Record<string, Tensor>,
      x: random.normal(keys[3], [batch, input]),
      y: random.normal(random.foldIn(keys[3], 1), [batch, output]),
    };
  });
  let params = init.params;
  const { x, y } = init;

  const loss = (p: Record<string, Tensor>, xb: Tensor, yb: Tensor) => {
    const h = nn.gelu(nn.linear(xb, p.w1, p.b1));
    return nn.linear(h, p.w2, p.b2).sub(yb).pow(2).mean();
  };
  const step = jit((p: Record<string, Tensor>, xb: Tensor, yb: Tensor, lr: number) => {
    const [l, g] = valueAndGrad(loss)(p, xb, yb);
    return [tree.map((w: Tensor, gw: Tensor) => w.sub(gw.mul(lr)), p, g), l];
  }, { donate: [0] });

  const points: Point[] = [];
  const t0 = performance.now();
  for (let call = 1; call <= CALLS; call++) {
    const [next, l] = step(params, x, y, 0.05) as [Record<string, Tensor>, Tensor];
    params = next; // the old params were donated (disposed by the call)
    if (call % READ_EVERY === 0) {
      const value = await l.item();
      l.dispose();
      if (forcedGc) gcFn!();
      const mem = Deno.memoryUsage();
      const s = gpu.stats;
      points.push({
        call,
        rss: mem.rss,
        heapUsed: mem.heapUsed,
        pooledBytes: s.pooledBytes,
        liveBytes: s.liveBytes,
        buffersCreated: s.buffersCreated,
        loss: value,
        msSinceStart: performance.now() - t0,
      });
      if (call % 500 === 0 || call === READ_EVERY) {
        progress(`memory${forcedGc ? " (gc)" : ""}: call ${call}, loss ${value.toFixed(5)}, rss ${fmtMiB(mem.rss)}`);
      }
    } else {
      l.dispose();
    }
  }
  const plan = step.stats().plan ?? null;
  step.dispose();
  for (const t of [...Object.values(params), x, y]) t.dispose();

  const first = points[0];
  const last = points[points.length - 1];
  return {
    forcedGc,
    points,
    driftPercent: (last.rss - first.rss) / first.rss * 100,
    createdAfterWarmup: last.buffersCreated - first.buffersCreated,
    gpuAt100: first.pooledBytes + first.liveBytes,
    gpuAt1000: last.pooledBytes + last.liveBytes,
    msPerCall: (last.msSinceStart - first.msSinceStart) / (last.call - first.call),
    plan: plan && { dispatches: plan.dispatches, peakBytes: plan.peakBytes },
  };
}

/** Runs the memory benchmark and writes `bench/results/memory.{json,md}`. */
export async function run(backend: Backend): Promise<void> {
  const m = machine(backend);
  const loops = [await loop(backend, false)];
  if (gcFn) loops.push(await loop(backend, true));
  const training = [await trainingLoop(backend, false)];
  if (gcFn) training.push(await trainingLoop(backend, true));
  const { batch, input, hidden, output } = DIMS;
  const bytes = (n: number) => `${n.toLocaleString("en-US")} B`;
  const summary = mdTable(
    [
      "RSS read",
      "RSS at 100",
      "RSS at 1000",
      "RSS drift 100→1000",
      "growth per call",
      "GPU pooled + live at 100 / 1000",
      "buffers created after warm-up",
      "ms/call",
      "plan dispatches",
      "plan peak bytes",
    ],
    loops.map((l) => [
      l.forcedGc ? "after a forced full GC" : "as is (no forced GC)",
      fmtMiB(l.points[0].rss),
      fmtMiB(l.points[l.points.length - 1].rss),
      `${l.driftPercent >= 0 ? "+" : ""}${l.driftPercent.toFixed(2)} %`,
      `${((l.points[l.points.length - 1].rss - l.points[0].rss) / (CALLS - READ_EVERY) / 1024).toFixed(1)} KiB`,
      `${bytes(l.gpuAt100)} / ${bytes(l.gpuAt1000)}${l.gpuAt100 === l.gpuAt1000 ? " (constant)" : ""}`,
      l.createdAfterWarmup,
      fmtNum(l.msPerCall, 3),
      l.plan?.dispatches ?? "—",
      l.plan ? fmtMiB(l.plan.peakBytes) : "—",
    ]),
    [false, true, true, true, true, true, true, true, true, true],
  );
  const detail = mdTable(
    ["RSS read", "call", "RSS", "V8 heap used", "GPU pooled", "GPU live", "buffers created (total)", "loss"],
    loops.flatMap((l) =>
      l.points.filter((p) => p.call === READ_EVERY || p.call % 300 === 0 || p.call === CALLS).map((p) => [
        l.forcedGc ? "forced GC" : "as is",
        p.call,
        fmtMiB(p.rss),
        fmtMiB(p.heapUsed),
        bytes(p.pooledBytes),
        bytes(p.liveBytes),
        p.buffersCreated,
        p.loss.toFixed(6),
      ])
    ),
    [false, true, true, true, true, true, true, true],
  );
  const md = header(`memory: 1,000 calls of a jitted SGD step, ${TRAIN_STEPS} training steps`, m, [
    `Step: \`jit(step, { donate: [0] })\` of an MLP ${input}→${hidden}→${output} (GELU, MSE) on a batch of ${batch}: \`valueAndGrad\`,`,
    `then SGD on the params pytree (donated, so updated in place). ${CALLS} calls; the loss is read back every ${READ_EVERY}`,
    "calls (and disposed otherwise). Call 100 is the reference point after warm-up. The loop runs twice with a fresh",
    "jit and fresh params: once reading RSS as it is, once after a forced full GC (`--v8-flags=--expose-gc`), which",
    "separates retained memory from native memory of collectable WebGPU wrappers (bind groups, encoders) that V8's",
    "GC has not finalised yet.",
    "",
    summary,
    "",
    detail,
    "",
    ...trainingTables(training),
  ]);
  await writeResults("memory", {
    machine: m,
    dims: DIMS,
    calls: CALLS,
    readEvery: READ_EVERY,
    loops,
    trainSteps: TRAIN_STEPS,
    training,
  }, md);
}
