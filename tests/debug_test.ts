import assert from "node:assert/strict";
import { assertFinite, cpu, enableFiniteCheck, NonFiniteError, tensor } from "../mod.ts";
import { gpu } from "./util.ts";

Deno.test("finite check names the first op that produced a non-finite value", async (t) => {
  await t.step("cpu: throws at the op", () => {
    enableFiniteCheck(true);
    try {
      const x = tensor([4, 1], { backend: cpu }).sqrt();
      assert.throws(() => x.sub(1).log(), (e: Error) => e instanceof NonFiniteError && /'log'/.test(e.message));
    } finally {
      enableFiniteCheck(false);
    }
  });
  await t.step("webgpu: flagged on the device, reported by assertFinite", async () => {
    const backend = await gpu();
    enableFiniteCheck(true);
    try {
      const x = tensor([1, -1, 2], { backend });
      const y = x.add(1).sqrt(); // sqrt(0) is finite
      const z = y.sub(1).log(); // log(-1) = NaN, log(0) = -inf: first bad op
      z.exp();
      if (backend.name === "webgpu") {
        await assert.rejects(assertFinite(), (e: Error) => e instanceof NonFiniteError && /'log'/.test(e.message));
      }
      await assertFinite(); // the flag was reset
    } finally {
      enableFiniteCheck(false);
    }
  });
});
