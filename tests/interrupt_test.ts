/**
 * Interrupts and resume: SIGINT/SIGTERM on the pretraining CLI (a child process) checkpoint and exit 130/143
 * with one line, and a resume ends in the state of an uninterrupted run; a resumed run cleans stale temporary
 * files, cuts `metrics.jsonl` back to its checkpoint and refuses a contradicting schedule; the first non-finite
 * loss is named exactly, between log steps. CPU backend: these tiny steps run faster there than on lavapipe.
 *
 * Needs `--allow-run` for the deno binary (in the `test` task).
 */
import assert from "node:assert/strict";
import { pretrain } from "../train/pretrain.ts";
import { ScheduleMismatchError } from "../train/run_state.ts";
import { readTrainingStateMeta } from "../train/checkpoint.ts";
import { embeddedDataset } from "../train/data/embedded.ts";
import { parseSafetensors } from "../models/safetensors.ts";
import type { PretrainConfig } from "../train/presets.ts";
import { cpu, tinyPretrainConfig } from "./util.ts";

const ROOT = new URL("../", import.meta.url).pathname;

/** `step` and `loss` of every progress line of a run's metrics. */
async function logged(dir: string): Promise<[number, number][]> {
  const lines = (await Deno.readTextFile(`${dir}/metrics.jsonl`)).trim().split("\n").map((l) => JSON.parse(l));
  return lines.filter((l) => "loss" in l).map((l) => [l.step, l.loss]);
}

/** Asserts two checkpoint files hold the same tensors, bit for bit. */
async function assertSameState(a: string, b: string): Promise<void> {
  const [fa, fb] = [parseSafetensors(await Deno.readFile(a)), parseSafetensors(await Deno.readFile(b))];
  assert.deepEqual([...fa.tensors.keys()], [...fb.tensors.keys()]);
  for (const [name, t] of fa.tensors) {
    const u = fb.tensors.get(name)!;
    const bytes = (x: typeof t) => new Uint8Array(x.data.buffer, x.data.byteOffset, x.data.byteLength);
    assert.ok(bytes(t).every((v, i) => v === bytes(u)[i]), `'${name}' differs`);
  }
}

/**
 * Runs examples/pretrain.ts on the CPU (batch 4, 5 steps, a progress line per step), sends `signal` once the
 * first progress line is out, and returns the exit code and stderr.
 */
async function interruptCli(signal: Deno.Signal, extra: string[], allow: string[]) {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...allow,
      "examples/pretrain.ts",
      ...["--backend", "cpu", "--batch-size", "4", "--steps", "5", "--log-every", "1", ...extra],
    ],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  let stdout = "";
  let sent = false;
  for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
    stdout += chunk;
    if (!sent && /^step 1\/5 /m.test(stdout)) {
      child.kill(signal);
      sent = true;
    }
  }
  const { code } = await child.status;
  assert.ok(sent, `no progress line came:\n${stdout}\n${await stderr}`);
  return { code, stdout, stderr: await stderr };
}

Deno.test("pretrain CLI: SIGINT checkpoints the step and exits 130; the resumed run ends as an uninterrupted one", async () => {
  const dir = await Deno.makeTempDir();
  const allow = [`--allow-read=${ROOT},${dir}`, `--allow-write=${dir}`];
  const { code, stderr } = await interruptCli("SIGINT", ["--out", dir], allow);
  assert.equal(code, 130, stderr);
  // The acknowledgement when the signal arrives, then the one line of the result.
  const lines = stderr.split("\n").filter((l) => l.trim() && !l.startsWith("Download "));
  assert.equal(lines.length, 2, stderr);
  assert.match(lines[0], /^SIGINT: stopping after the current step/);
  const ckpt = `${dir}/checkpoint.safetensors`;
  const m = new RegExp(
    `^interrupted by SIGINT after step (\\d)/5; checkpoint ${ckpt} holds step (\\d) \\(continue with --resume --out ${dir}\\)$`,
  ).exec(lines[1]);
  assert.ok(m && m[1] === m[2], lines[1]);
  const meta = await readTrainingStateMeta(ckpt);
  assert.equal(meta.iteration, Number(m[1]));
  assert.ok(meta.iteration >= 1 && meta.iteration < 5);

  // A flag that contradicts the checkpoint's schedule is one line and exit 2, before any work.
  const bad = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...allow, "examples/pretrain.ts", "--backend", "cpu", "--out", dir, "--resume", "--epochs", "7"],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const badErr = new TextDecoder().decode(bad.stderr).split("\n").filter((l) => l && !l.startsWith("Download "))
    .join("\n");
  assert.equal(bad.code, 2, badErr);
  assert.equal(
    badErr,
    `error: --resume from ${ckpt}: --epochs contradicts it: epochs is 3 there but 7 here; drop the flag to keep ` +
      `the checkpoint's schedule, or add --override-schedule (see --help)`,
  );

  // Resume in-process with the configuration the CLI stored, and compare with an uninterrupted run.
  const cfg = meta.config as PretrainConfig;
  const ds = embeddedDataset({ seed: 0 });
  const common = { backend: cpu, seed: 0, steps: 5, logEvery: 1, evaluate: false };
  await pretrain(cfg, ds, { ...common, out: dir, resume: true });
  const ref = await Deno.makeTempDir();
  await pretrain(cfg, ds, { ...common, out: ref });
  await assertSameState(ckpt, `${ref}/checkpoint.safetensors`);
  assert.deepEqual(await logged(dir), await logged(ref));
  for (const d of [dir, ref]) await Deno.remove(d, { recursive: true });
});

Deno.test("pretrain CLI: SIGTERM without --out exits 143 saying that no checkpoint was written", async () => {
  const { code, stderr } = await interruptCli("SIGTERM", [], [`--allow-read=${ROOT}`]);
  assert.equal(code, 143, stderr);
  const last = stderr.trim().split("\n").at(-1)!;
  assert.match(last, /^interrupted by SIGTERM after step \d\/5; no checkpoint was written \(no --out\)$/);
});

const ds = embeddedDataset({ seed: 3, trainPerClass: 20, testPerClass: 4 });

Deno.test("pretrain: a resume removes stale temporary files, cuts metrics back to its checkpoint, keeps its schedule", async () => {
  const dir = await Deno.makeTempDir();
  const common = { backend: cpu, seed: 2, logEvery: 1, evaluate: false, out: dir };
  await pretrain(tinyPretrainConfig(), ds, { ...common, steps: 2 });
  // What a kill -9 after step 3 (checkpoint at 2) and during a checkpoint write leaves behind.
  await Deno.writeTextFile(`${dir}/metrics.jsonl`, '{"step":3,"loss":999}\n{"step":4,"lo', { append: true });
  const stale = `checkpoint.safetensors.tmp-1700000000000-k3x9`;
  await Deno.writeTextFile(`${dir}/${stale}`, "half a checkpoint");
  await Deno.writeTextFile(`${dir}/notes.tmp-1`, "not ours");

  const longer = { ...tinyPretrainConfig(), epochs: 2 };
  await assert.rejects(
    pretrain(longer, ds, { ...common, steps: 3, resume: true }),
    (e: Error) =>
      e instanceof ScheduleMismatchError && e.differences.length === 1 && e.differences[0].path === "epochs" &&
      /epochs is 1 there but 2 here/.test(e.message),
  );
  // The batch size fixes the data order: no override changes it.
  await assert.rejects(
    pretrain({ ...tinyPretrainConfig(), batchSize: 8 }, ds, {
      ...common,
      steps: 3,
      resume: true,
      overrideSchedule: true,
    }),
    (e: Error) => e instanceof ScheduleMismatchError && /batchSize is 16 there but 8 here/.test(e.message),
  );

  await pretrain(tinyPretrainConfig(), ds, { ...common, steps: 3, resume: true });
  const names = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
  assert.deepEqual(names, ["checkpoint.safetensors", "metrics.jsonl", "notes.tmp-1"]);
  const steps = (await logged(dir)).map(([s, loss]) => (assert.notEqual(loss, 999), s));
  assert.deepEqual(steps, [1, 2, 3]);

  // An explicit override continues with the new schedule.
  const r = await pretrain(longer, ds, { ...common, steps: 4, resume: true, overrideSchedule: true });
  assert.equal(r.steps, 4);
  assert.equal(((await readTrainingStateMeta(`${dir}/checkpoint.safetensors`)).config as PretrainConfig).epochs, 2);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("pretrain: the first non-finite loss is named exactly between log steps, and no missing checkpoint", async () => {
  // No warm-up and an absurd lr: step 1's loss (initial weights) is finite, its update breaks every weight.
  const cfg = { ...tinyPretrainConfig(), lr: 1e30, warmupEpochs: 0 };
  const run = async (opts: { logEvery: number; out?: string }) => {
    let err: Error | null = null;
    await pretrain(cfg, ds, { backend: cpu, seed: 1, steps: 8, evaluate: false, checkpointEvery: 100, ...opts })
      .catch((e) => err = e);
    assert.ok(err && (err as Error).name === "NonFiniteLossError", String(err));
    return err as Error & { step: number; checkpoint: string | null };
  };
  const everyStep = await run({ logEvery: 1 }); // reads every loss: the truth
  const dir = await Deno.makeTempDir();
  const sparse = await run({ logEvery: 3, out: dir });
  assert.ok(everyStep.step % 3 !== 0 && everyStep.step > 1, `step ${everyStep.step} must fall between log steps`);
  assert.equal(sparse.step, everyStep.step);
  assert.match(sparse.message, new RegExp(`at step ${everyStep.step}; no checkpoint was written yet$`));
  assert.equal(sparse.checkpoint, null);
  assert.match(everyStep.message, /no checkpoint was written \(no output folder\)$/);
  await assert.rejects(Deno.stat(`${dir}/checkpoint.safetensors`), Deno.errors.NotFound);
  await Deno.remove(dir, { recursive: true });
});
