/**
 * The one-call device benchmark (`bench/device/run.sh`) cannot rot: its dry mode runs end to end here, on the
 * software adapter at small sizes, and its one results file must hold every section with numbers in it. The
 * completeness check it uses is tested on its own first, so that a missing section does fail.
 */
import assert from "node:assert/strict";
import { checkReport, SECTIONS } from "../bench/device/report.ts";
import { PHASES } from "../bench/device/common.ts";

const ALL_DONE = PHASES.map((phase) => ({ phase, rc: 0, seconds: 1, budget: 10 }));
const fullMd = `# x\n${Object.values(SECTIONS).map((t) => `\n## ${t}\n\ntext\n`).join("")}`;
const fullJson = (): Record<string, unknown> => ({
  ...Object.fromEntries(Object.keys(SECTIONS).map((k) => [k, {}])),
  phases: ALL_DONE,
});

Deno.test("device bench: checkReport names a missing section, a missing key and an unfinished phase", () => {
  assert.deepEqual(checkReport(fullMd, fullJson()), []);
  const noMatmul = fullMd.replace(`## ${SECTIONS.matmul}\n`, "");
  assert.deepEqual(checkReport(noMatmul, fullJson()), [`markdown section "## ${SECTIONS.matmul}"`]);
  const json = fullJson();
  delete json.ibot;
  assert.deepEqual(checkReport(fullMd, json), [`JSON key "ibot"`]);
  const timedOut = { ...fullJson(), phases: ALL_DONE.map((p) => (p.phase === "vit" ? { ...p, rc: 124 } : p)) };
  assert.deepEqual(checkReport(fullMd, timedOut), ["phase vit: exit status 124 (timed out)"]);
  const notRun = { ...fullJson(), phases: ALL_DONE.filter((p) => p.phase !== "torch_step") };
  assert.deepEqual(checkReport(fullMd, notRun), ["phase torch_step: no record"]);
});

const skip = Deno.permissions.querySync({ name: "run", command: "bash" }).state !== "granted"
  ? "needs --allow-run=bash (deno task test grants it)"
  : Deno.env.get("IBOT_TEST_NO_GPU") === "1"
  ? "IBOT_TEST_NO_GPU=1: the benchmark measures the WebGPU backend"
  : null;
if (skip) console.log(`device_bench_test: dry run ignored: ${skip}`);

Deno.test({
  name: "device bench: run.sh --dry writes one results file with every section measured",
  ignore: skip !== null,
  sanitizeResources: false,
  async fn() {
    const out = await Deno.makeTempDir({ prefix: "device-bench-" });
    try {
      const env = { OUT: out, DEVICE_BENCH_DRY: "", DRY: "0", DEVICE_BENCH_MAX_MEMORY: "" };
      const run = await new Deno.Command("bash", {
        args: ["bench/device/run.sh", "--dry"],
        env,
        stdout: "piped",
        stderr: "piped",
      })
        .output();
      const log = new TextDecoder().decode(run.stderr);
      assert(run.success, `run.sh --dry exited with ${run.code}:\n${log.slice(-3000)}`);
      const files = [...Deno.readDirSync(out)].map((e) => e.name).sort();
      assert.deepEqual(files.length, 2, `one results file (.md + .json) in OUT, got ${files.join(", ")}`);
      assert(/^device_.+_dry\.md$/.test(files[1]), `results file name: ${files[1]}`);
      const md = await Deno.readTextFile(`${out}/${files[1]}`);
      const json = JSON.parse(await Deno.readTextFile(`${out}/${files[0]}`));
      assert.deepEqual(checkReport(md, json), []);
      assert(json.dry === true);
      assert(json.adapter.limits.maxStorageBufferBindingSize > 0, "adapter limits recorded");
      // Every shape has a positive rate for every family the code offers, and the families are named.
      assert(json.matmul.families.length >= 1);
      for (const s of json.matmul.shapes) {
        assert.deepEqual(s.families.map((f: { family: string }) => f.family).sort(), [...json.matmul.families].sort());
        for (const f of s.families) assert(f.gflops > 0, `${s.label} ${f.family}: ${f.gflops} GFLOP/s`);
      }
      assert(json.vit.ours.medianMs > 0, `vit: ${JSON.stringify(json.vit.ours).slice(0, 300)}`);
      assert(
        json.vit.ours.attention.medianMs > 0,
        `attention: ${JSON.stringify(json.vit.ours.attention).slice(0, 300)}`,
      );
      assert(json.ibot.ours.medianMs > 0, `ibot: ${JSON.stringify(json.ibot.ours).slice(0, 300)}`);
      // The planner refused the largest batch under the dry run's memory limit and ran the largest that fit.
      const planned: { batch: number; peakBytes?: number }[] = json.ibot.ours.planned;
      const fitting = planned.filter((p) => p.peakBytes !== undefined).map((p) => p.batch);
      assert(planned.some((p) => p.peakBytes === undefined), "some batch refused");
      assert.deepEqual(json.ibot.ours.shape.batch, Math.max(...fitting));
      // PyTorch: measured (on the CPU in the dry run) or the reason it was not.
      assert(/PyTorch (\S+ on cpu|: not measured: )/.test(md), "the PyTorch line says where it ran or why not");
    } finally {
      await Deno.remove(out, { recursive: true });
    }
  },
});
