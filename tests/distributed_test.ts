import assert from "node:assert/strict";
import { init, MpiError } from "../distributed/mod.ts";
import { openMpi } from "../distributed/mpi.ts";
import { tensor } from "../mod.ts";
import { cpu } from "./util.ts";
import { mpiUnavailable, runMpi } from "./mpi/launcher.ts";

const noMpi = mpiUnavailable();
if (noMpi) console.log(`distributed_test: MPI tests ignored (${noMpi})`);

Deno.test("distributed: without a launcher, init() is one process and collectives are identities", async () => {
  const comm = await init({ mpi: "off" });
  assert.deepEqual([comm.rank, comm.size, comm.library], [0, 1, "none"]);
  const x = tensor([[1, 2], [3, 4]], { backend: cpu });
  const { y } = await comm.allReduceMean({ y: x });
  assert.notEqual(y, x, "a new tensor, so that the caller may dispose its input");
  assert.deepEqual(await y.toArray(), [[1, 2], [3, 4]]);
  assert.deepEqual(await comm.allReduceNumbers([2, 3]), [2, 3]);
  await assert.rejects(
    () => comm.allReduceMean([tensor([1], { dtype: "int32", backend: cpu })]),
    /int32.*allReduceSum/,
  );
  await assert.rejects(() => comm.broadcast([x], 1), /root 1 is not a rank of this job \(size 1\)/);
});

Deno.test("distributed: a missing MPI library names the package to install", () => {
  assert.throws(() => openMpi("libmpich-does-not-exist.so.12"), (e) => {
    assert.ok(e instanceof MpiError);
    assert.match(e.message, /no MPI library could be loaded .*libmpich-does-not-exist.*apt-get install mpich/);
    return true;
  });
});

Deno.test({
  name: "distributed: 2 ranks under mpiexec: sum, mean, max, broadcast and numbers over pytrees",
  ignore: noMpi !== undefined,
  async fn() {
    const run = await runMpi(2, ["--allow-ffi", "--allow-env", "--allow-read"], "tests/mpi/collectives_worker.ts");
    assert.equal(run.code, 0, run.stderr);
    const lines = run.stdout.trim().split("\n").map((l) => JSON.parse(l)).sort((a, b) => a.rank - b.rank);
    assert.equal(lines.length, 2, run.stdout);
    for (const [rank, r] of lines.entries()) {
      assert.equal(r.rank, rank);
      assert.equal(r.size, 2);
      assert.match(r.library, /^MPICH /);
      assert.deepEqual(r.sum, { a: [[1, 3], [2, -1]], b0: [3], b0dtype: "int32", b1: [0.25] });
      assert.deepEqual(r.mean, { a: [[0.5, 1.5], [1, -0.5]], c: [0.125] });
      assert.deepEqual(r.max, [1, 0]);
      assert.deepEqual(r.bcast, [11, 21]);
      assert.deepEqual(r.numbers, [1, 2]);
    }
  },
});
