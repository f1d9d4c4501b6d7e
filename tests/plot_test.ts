/**
 * examples/plot.ts: parsing metrics.jsonl (resumed runs, the k-NN line, malformed lines), nice ticks and labels,
 * and writeCurves on a small synthetic run: a valid PNG of the expected size whose pixels include the series
 * colours (not only the background and the greys of the frames).
 */
import assert from "node:assert/strict";
import { CURVES_SIZE, curvesSvg, niceTicks, parseMetrics, tickLabel, writeCurves } from "../examples/plot.ts";
import { pngChunks } from "../examples/lib/png.ts";
import { decodeImage } from "../train/data/imagefolder.ts";

function synthetic(steps: number, knn = true): string {
  const lines: string[] = [];
  for (let s = 1; s <= steps; s += 5) {
    lines.push(JSON.stringify({
      step: s,
      totalSteps: steps,
      epoch: Math.floor(s / 10),
      loss: 8 - 3 * (s / steps),
      cls: 5 - 2 * (s / steps),
      patch: 3 - (s / steps),
      lr: 1e-4 * Math.min(1, s / 20),
      wd: 0.04,
      momentum: 0.99,
      teacherTemp: 0.04,
      teacherEntropy: 3 + s / steps,
      agreement: 0.1 + 0.5 * (s / steps),
      imagesPerSecond: 20 + (s % 7),
      etaSeconds: steps - s,
    }));
  }
  if (knn) {
    lines.push(JSON.stringify({ step: steps, knn: { 10: 0.4, 20: 0.42 }, knnRandom: { 10: 0.15, 20: 0.16 } }));
  }
  return lines.join("\n") + "\n";
}

Deno.test("plot: parseMetrics keeps the last report of a repeated step, reads the k-NN line, names bad lines", () => {
  const text = synthetic(20) + JSON.stringify({ step: 6, loss: 1 }) + "\n\n";
  const m = parseMetrics(text);
  assert.deepEqual(m.rows.map((r) => r.step), [1, 6, 11, 16]);
  assert.equal(m.rows[1].loss, 1);
  assert.equal(m.knn.length, 1);
  assert.equal(m.knn[0].knn["20"], 0.42);
  assert.equal(parseMetrics(JSON.stringify({ step: 3, knn: {}, knnRandom: {} })).knn.length, 0, "empty k-NN");
  assert.throws(() => parseMetrics('{"step": 1}\n{oops\n', "m.jsonl"), /m\.jsonl:2: not JSON/);
  assert.throws(() => parseMetrics('{"loss": 1}\n', "m.jsonl"), /m\.jsonl:1: expected an object/);
});

Deno.test("plot: nice ticks cover the range with 1/2/5 steps; labels fit the step", () => {
  const t = niceTicks(0.13, 7.9, 4);
  assert.equal(t.step, 2);
  assert.deepEqual(t.ticks, [0, 2, 4, 6, 8]);
  const lr = niceTicks(0, 2.4e-4, 4);
  assert.ok(Math.abs(lr.step - 1e-4) < 1e-12);
  assert.deepEqual(lr.ticks.map((v) => tickLabel(v, lr.step, 3e-4)), ["0", "1e-4", "2e-4", "3e-4"]);
  assert.equal(tickLabel(0.25, 0.05), "0.25");
  assert.equal(tickLabel(15000, 5000), "15k");
  const flat = niceTicks(3, 3);
  assert.ok(flat.lo < 3 && flat.hi > 3, "a constant series still gets a range");
});

Deno.test("plot: writeCurves writes a PNG of the expected size with the series drawn", async () => {
  const dir = await Deno.makeTempDir({ prefix: "plot_test_" });
  try {
    const metrics = `${dir}/metrics.jsonl`;
    await Deno.writeTextFile(metrics, synthetic(60));
    const w = await writeCurves(metrics, `${dir}/curves.png`);
    assert.equal(w.format, "png");
    assert.equal(w.path, `${dir}/curves.png`);
    assert.deepEqual([w.width, w.height], [CURVES_SIZE.width, CURVES_SIZE.height]);
    const bytes = await Deno.readFile(w.path);
    assert.ok(pngChunks(bytes).every((c) => c.crcOk));
    const img = await decodeImage(bytes);
    assert.deepEqual([img.width, img.height], [CURVES_SIZE.width, CURVES_SIZE.height]);
    // Count saturated pixels (the series and bars; the background, frames, grid and text are grey).
    let coloured = 0;
    let blue = 0;
    for (let i = 0; i < img.data.length; i += 4) {
      const [r, g, b] = [img.data[i], img.data[i + 1], img.data[i + 2]];
      if (Math.max(r, g, b) - Math.min(r, g, b) > 60) coloured++;
      if (b > 150 && r < 40) blue++; // #0072B2: the total loss, the lr and the "trained" bars
    }
    assert.ok(coloured > 5000, `coloured pixels: ${coloured}`);
    assert.ok(blue > 1000, `blue pixels: ${blue}`);

    const svg = await writeCurves(metrics, `${dir}/curves.svg`, { width: 900, height: 600 });
    assert.equal(svg.format, "svg");
    const text = await Deno.readTextFile(svg.path);
    assert.match(text, /^<svg [^>]*width="900" height="600"/);
    assert.match(text, /k-NN top-1 \(%\) at step 60/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("plot: a run without k-NN or with one report still draws", () => {
  const svg = curvesSvg(parseMetrics(synthetic(3, false)));
  assert.match(svg, /no k-NN line in the metrics/);
  assert.match(svg, /<circle/); // a single point is a dot
});
