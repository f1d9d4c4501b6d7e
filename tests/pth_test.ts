/**
 * `.pth` reading against a checkpoint written by PyTorch (tests/fixtures/make_pth.py): nested student/teacher
 * dicts, float16/bfloat16/float64 storages, transposed and offset views sharing a storage, int64 buffers (in and
 * out of the int32 range), bools, parameters, scalars, and the skipped `argparse.Namespace`; pickle protocols
 * 2 and 4.
 */
import assert from "node:assert/strict";
import { CheckpointError, loadPth, parsePth, readModelWeights, stateDict, unpickle } from "../mod.ts";
import { ZipArchive } from "../models/zip.ts";
import { zip } from "./pth_util.ts";

const DIR = new URL("./fixtures/pth/", import.meta.url);
const EXPECTED = JSON.parse(await Deno.readTextFile(new URL("expected.json", DIR))) as {
  tensors: Record<string, { shape: number[]; values: (number | boolean)[] }>;
};

for (const file of ["checkpoint.pth", "checkpoint_proto4.pth"]) {
  Deno.test(`pth: ${file} has every tensor with PyTorch's values`, async () => {
    const ckpt = await loadPth(new URL(file, DIR).pathname);
    assert.deepEqual([...ckpt.tensors.keys()].sort(), Object.keys(EXPECTED.tensors).sort());
    for (const [name, want] of Object.entries(EXPECTED.tensors)) {
      const got = ckpt.tensors.get(name)!;
      assert.deepEqual(got.shape, want.shape, name);
      const values = want.values.map(Number);
      // float32 (and float16/bfloat16 widened to float32) are exact; float64 exact; int64 exact.
      assert.deepEqual(Array.from(got.data, Number), values, name);
    }
    assert.equal(ckpt.torchDtypes.get("student.module.backbone.half"), "float16");
    assert.equal(ckpt.tensors.get("student.module.backbone.half")!.dtype, "float32");
    assert.equal(ckpt.tensors.get("teacher.backbone.bf16")!.dtype, "float32");
    assert.equal(ckpt.tensors.get("teacher.backbone.double")!.dtype, "float64");
    assert.equal(
      ckpt.tensors.get("student.module.backbone.layers.0.blocks.0.attn.relative_position_index")!.dtype,
      "int32",
    );
    assert.equal(ckpt.tensors.get("misc.big")!.dtype, "float64"); // int64 beyond int32
    assert.equal(ckpt.tensors.get("misc.flags")!.dtype, "bool");
    assert.equal(ckpt.values.get("epoch"), 3);
    assert.equal(ckpt.values.get("optimizer.state.0.step"), 3);
    assert.equal(ckpt.values.get("misc.values.2"), null);
    assert.equal(ckpt.skipped.get("args"), "argparse.Namespace");
  });
}

Deno.test("pth: stateDict selects student/teacher and strips module.", async () => {
  const ckpt = await readModelWeights(new URL("checkpoint.pth", DIR).pathname);
  assert.equal(ckpt.format, "pth");
  const student = stateDict(ckpt.tensors, "student");
  assert.deepEqual([...student.keys()].slice(0, 2), ["backbone.cls_token", "backbone.half"]);
  const teacher = stateDict(ckpt.tensors, "teacher");
  assert.deepEqual([...teacher.keys()], [
    "backbone.cls_token",
    "backbone.double",
    "backbone.bf16",
    "head.last_layer2.weight_g",
  ]);
  assert.deepEqual(teacher.get("head.last_layer2.weight_g")!.shape, []);
});

Deno.test("pth: clear errors for non-zip and corrupt files", () => {
  assert.throws(
    () => parsePth(new Uint8Array([0x80, 2, 0x7d, 0x2e]), "old.pth"),
    /old\.pth: expected a PyTorch \.pth checkpoint \(zip\), but this is a bare Python pickle/,
  );
  assert.throws(() => parsePth(new Uint8Array([0x50, 0x4b, 3, 4, 0, 0]), "bad.pth"), /bad\.pth/);
});

Deno.test("pth: unpickler basics (protocol 0 text opcodes, memo, nested containers)", () => {
  // pickle.dumps({'a': [1, 2.5, 'x'], 'b': (True, None)}, protocol=0)
  const p0 = "(dp0\nVa\np1\n(lp2\nI1\naF2.5\naVx\np3\nasVb\np4\n(I01\nNtp5\ns.";
  const v = unpickle(new TextEncoder().encode(p0), () => null) as Map<string, unknown>;
  assert.deepEqual(v.get("a"), [1, 2.5, "x"]);
  assert.deepEqual(v.get("b"), [true, null]);
  // LONG1 with a value beyond 2^53 stays exact as a bigint: pickle.dumps(2**70, protocol=2)
  const big = new Uint8Array([0x80, 2, 0x8a, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 0x2e]);
  assert.equal(unpickle(big, () => null), 2n ** 70n);
});

Deno.test("pth: a zip64 archive (sizes and offsets in zip64 fields) reads as the plain one", () => {
  const bytes = Deno.readFileSync(new URL("checkpoint.pth", DIR));
  const archive = new ZipArchive(bytes, "checkpoint.pth");
  const entries = [...archive.entries.values()].map((e) => ({ name: e.name, data: archive.read(e).slice() }));
  const plain = parsePth(zip(entries), "plain.pth");
  const wide = parsePth(zip(entries, true), "zip64.pth");
  assert.deepEqual([...wide.tensors], [...plain.tensors]);
  assert.equal(plain.tensors.size, Object.keys(EXPECTED.tensors).length);
});

Deno.test("pth: 600 structural mutations of the fixtures' pickles are read or refused with a CheckpointError", () => {
  const archives = ["checkpoint.pth", "checkpoint_proto4.pth", "swin_tiny.pth"].map((f) => {
    const bytes = Deno.readFileSync(new URL(f, DIR));
    const archive = new ZipArchive(bytes, f);
    return [...archive.entries.values()].map((e) => ({ name: e.name, data: archive.read(e).slice() }));
  });
  let seed = 7;
  const rand = (n: number) => Math.floor((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x80000000 * n);
  const outcomes = { read: 0, refused: 0 };
  const t0 = performance.now();
  for (let it = 0; it < 600; it++) {
    const entries = archives[it % 3].map((e) => ({ ...e }));
    const pkl = entries.find((e) => e.name.endsWith("/data.pkl"))!;
    const p = Array.from(pkl.data);
    for (let k = 0, edits = 1 + rand(3); k < edits; k++) {
      const at = rand(p.length), len = 1 + rand(12), how = rand(4);
      if (how === 0) p.splice(at, len); // delete
      else if (how === 1) p.splice(at, 0, ...p.slice(rand(p.length)).slice(0, len)); // duplicate a run
      else if (how === 2) p.splice(at, 0, ...Array.from({ length: len }, () => rand(256))); // insert noise
      else p[at] = rand(256);
    }
    pkl.data = new Uint8Array(p);
    try {
      parsePth(zip(entries), `mutant${it}.pth`);
      outcomes.read++;
    } catch (e) {
      if (!(e instanceof CheckpointError)) throw new Error(`mutant ${it}: ${(e as Error).stack}`);
      assert.match(e.message, new RegExp(`^mutant${it}\\.pth`));
      outcomes.refused++;
    }
  }
  assert.ok(outcomes.read > 0 && outcomes.refused > 0, JSON.stringify(outcomes));
  assert.ok(performance.now() - t0 < 20_000, `${performance.now() - t0} ms`);
});
