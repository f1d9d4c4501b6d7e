/**
 * The command lines that load a `.pth` (examples/inspect_checkpoint.ts, examples/knn.ts --weights): one-line
 * errors with exit code 2 for a legacy or hostile file, the same message as the library's, the
 * `--allow-unknown-globals` opt-in, and `--summary` collapsing list-like scalars.
 */
import assert from "node:assert/strict";
import { main as knnMain } from "../examples/knn.ts";
import { UsageError } from "../examples/lib/cli.ts";
import { parsePth } from "../mod.ts";
import { Pickle, pthZip } from "./pth_util.ts";

const SCRIPT = new URL("../examples/inspect_checkpoint.ts", import.meta.url).pathname;
const LEGACY = new Uint8Array([0x80, 2, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e]);

async function inspect(...args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-read", SCRIPT, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

async function temp(bytes: Uint8Array, name: string): Promise<string> {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/${name}`;
  await Deno.writeFile(path, bytes);
  return path;
}

Deno.test("inspect_checkpoint / knn --weights: a legacy .pth gets the library's message, one line, exit 2", async () => {
  const path = await temp(LEGACY, "legacy.pth");
  const library = /legacy \(pre-1\.6\) PyTorch checkpoint, which is not supported: re-save it/;
  assert.throws(() => parsePth(LEGACY, path), library);
  const r = await inspect(path);
  assert.equal(r.code, 2);
  assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
  assert.match(r.stderr, new RegExp(`^error: ${path}: expected a PyTorch \\.pth checkpoint`));
  assert.match(r.stderr, library);
  await assert.rejects(
    knnMain(["--weights", path, "--arch", "vit_small", "--backend", "cpu"], () => {}),
    (e: Error) =>
      e instanceof UsageError && e.message.startsWith(`--weights ${path}: expected`) && library.test(e.message),
  );
  await Deno.remove(path.replace(/\/[^/]+$/, ""), { recursive: true });
});

Deno.test("inspect_checkpoint: a pickle calling posix.system is refused unless --allow-unknown-globals", async () => {
  const pkl = new Pickle().proto().emptyDict().str("x").global("posix", "system").mark().str("echo pwned").tuple()
    .reduce().setitem().stop().bytes();
  const path = await temp(pthZip(pkl), "evil.pth");
  const refused = await inspect(path);
  assert.equal(refused.code, 2);
  assert.match(refused.stderr, /^error: .*evil\.pth:archive\/data\.pkl: the pickle references 'posix\.system'/);
  const skipped = await inspect(path, "--allow-unknown-globals");
  assert.equal(skipped.code, 0, skipped.stderr);
  assert.match(skipped.stdout, /skipped \(not tensors\):\n {2}x: posix\.system/);
  await assert.rejects(
    knnMain(["--weights", path, "--arch", "vit_small", "--backend", "cpu"], () => {}),
    /--weights .*evil\.pth:archive\/data\.pkl: the pickle references 'posix\.system'/,
  );
  await Deno.remove(path.replace(/\/[^/]+$/, ""), { recursive: true });
});

Deno.test("inspect_checkpoint --summary: optimizer.param_groups.*.params.* collapse to one line", async () => {
  // {"optimizer": {"param_groups": [{"params": [0, ..., 99], "lr": 0.1}]}, "w": tensor}
  const p = new Pickle().proto().emptyDict().str("optimizer").emptyDict().str("param_groups").raw(0x5d).emptyDict();
  p.str("params").raw(0x5d).mark();
  for (let i = 0; i < 100; i++) p.int(i);
  p.raw(0x65).setitem().raw(0x61).setitem().setitem(); // APPENDS, SETITEM params, APPEND group, SETITEM, SETITEM
  const pkl = p.str("w").tensor({ key: "0", numel: 2, shape: [2] }).setitem().stop().bytes();
  const path = await temp(pthZip(pkl, { 0: new Uint8Array(8) }), "opt.pth");
  const summary = await inspect(path, "--summary");
  assert.equal(summary.code, 0, summary.stderr);
  assert.match(summary.stdout, /^ {2}optimizer\.param_groups\.\*\.params\.\*: 100 values \(0, 1, 2, \.\.\., 99\)$/m);
  assert.doesNotMatch(summary.stdout, /params\.5 =/);
  const full = await inspect(path);
  assert.match(full.stdout, /^ {2}optimizer\.param_groups\.0\.params\.5 = 5$/m);
  await Deno.remove(path.replace(/\/[^/]+$/, ""), { recursive: true });
});
