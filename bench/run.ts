/**
 * Benchmarks: eager matmul throughput (GFLOP/s) on the default backend (`initBackend("auto")`) at 256³ and
 * 512³, and on the CPU backend at 128³ for reference. Writes `bench/results/matmul.json` and
 * `bench/results/matmul.md`, and prints the table.
 *
 * Run with `deno task bench`. GPU work is asynchronous: each measurement launches its timed iterations and
 * stops the clock when the last output has been read back (`await out.data()`), so one readback is included,
 * amortised over the iterations. Every configuration is warmed up first (pipeline compilation, buffer pool).
 *
 * @module
 */
import { type Backend, cpu, initBackend, type Tensor, tensor } from "../mod.ts";

/** One measured configuration. */
interface Result {
  backend: string;
  device: string;
  m: number;
  k: number;
  n: number;
  iters: number;
  msPerIter: number;
  gflops: number;
  /** Max |gpu - cpu| / (1 + |cpu|) against the CPU backend on the same inputs (null on the CPU itself). */
  maxRelErrVsCpu: number | null;
}

/** A deterministic matrix of values in [-1, 1). */
function matrix(rows: number, cols: number, seed: number): Float32Array {
  const out = new Float32Array(rows * cols);
  let s = seed >>> 0;
  for (let i = 0; i < out.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 31 - 1;
  }
  return out;
}

function deviceName(backend: Backend): string {
  return (backend as { adapterInfo?: string }).adapterInfo ??
    (backend.name === "cpu" ? "JavaScript (Float32Array)" : "");
}

/** Warm-up, then timed iterations until at least `minMs` have passed (at least `minIters`, at most `maxIters`). */
async function benchMatmul(
  backend: Backend,
  size: number,
  opts: { minMs: number; minIters: number; maxIters: number },
) {
  const m = size, k = size, n = size;
  const ha = matrix(m, k, 1);
  const hb = matrix(k, n, 2);
  const a = tensor(ha, { shape: [m, k], backend });
  const b = tensor(hb, { shape: [k, n], backend });

  // Warm-up: compile the pipeline and fill the buffer pool.
  for (let i = 0; i < 2; i++) {
    const w = a.matmul(b);
    await w.data();
    w.dispose();
  }

  // Calibrate the iteration count from one timed run.
  let t0 = performance.now();
  const probe = a.matmul(b);
  const probeData = await probe.data();
  probe.dispose();
  const once = Math.max(performance.now() - t0, 0.01);
  const iters = Math.min(opts.maxIters, Math.max(opts.minIters, Math.ceil(opts.minMs / once)));

  t0 = performance.now();
  let last: Tensor | null = null;
  for (let i = 0; i < iters; i++) {
    const out = a.matmul(b);
    last?.dispose();
    last = out;
  }
  await last!.data();
  const ms = performance.now() - t0;
  last!.dispose();

  let maxRelErrVsCpu: number | null = null;
  if (backend !== cpu) {
    const ca = tensor(ha, { shape: [m, k], backend: cpu });
    const cb = tensor(hb, { shape: [k, n], backend: cpu });
    const ref = await ca.matmul(cb).data();
    maxRelErrVsCpu = 0;
    for (let i = 0; i < ref.length; i++) {
      const e = Math.abs(Number(probeData[i]) - Number(ref[i])) / (1 + Math.abs(Number(ref[i])));
      maxRelErrVsCpu = Math.max(maxRelErrVsCpu, Number.isNaN(e) ? Infinity : e);
    }
  }
  a.dispose();
  b.dispose();

  const msPerIter = ms / iters;
  const result: Result = {
    backend: backend.name,
    device: deviceName(backend),
    m,
    k,
    n,
    iters,
    msPerIter,
    gflops: (2 * m * k * n) / (msPerIter * 1e6),
    maxRelErrVsCpu,
  };
  return result;
}

function table(results: Result[]): string {
  const rows = results.map((r) =>
    `| ${r.backend} | ${r.device} | ${r.m}×${r.k}×${r.n} | ${r.iters} | ${r.msPerIter.toFixed(2)} | ${
      r.gflops.toFixed(2)
    } | ${r.maxRelErrVsCpu === null ? "—" : r.maxRelErrVsCpu.toExponential(1)} |`
  );
  return [
    "| backend | device | m×k×n | iters | ms/iter | GFLOP/s | max rel err vs cpu |",
    "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ...rows,
  ].join("\n");
}

async function main(): Promise<void> {
  const backend = await initBackend("auto");
  const results: Result[] = [];
  for (const size of [256, 512]) {
    results.push(await benchMatmul(backend, size, { minMs: 1000, minIters: 5, maxIters: 500 }));
    console.error(`measured ${backend.name} ${size}³`);
  }
  results.push(await benchMatmul(cpu, 128, { minMs: 1000, minIters: 3, maxIters: 200 }));
  console.error("measured cpu 128³");

  const meta = {
    date: new Date().toISOString(),
    deno: Deno.version.deno,
    os: `${Deno.build.os}-${Deno.build.arch}`,
    defaultBackend: backend.name,
    device: deviceName(backend),
    note: "eager matmul, float32; time from the first launch until the last output is read back, per iteration",
  };
  const md = [
    "# matmul benchmark",
    "",
    `Eager float32 matmul, default backend \`${backend.name}\` on **${meta.device}**, CPU backend for reference.`,
    `Measured ${meta.date} with Deno ${meta.deno} on ${meta.os}. Time per iteration runs from the first launch`,
    "until the last output is read back (`await out.data()`), after a warm-up; GFLOP/s = 2mkn / time.",
    "",
    table(results),
    "",
  ].join("\n");

  const dir = new URL("./results/", import.meta.url);
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(new URL("matmul.json", dir), JSON.stringify({ ...meta, results }, null, 2) + "\n");
  await Deno.writeTextFile(new URL("matmul.md", dir), md);
  console.log(md);
  console.log("wrote bench/results/matmul.json and bench/results/matmul.md");
}

await main();
