/** The primitive table: exactly one rule per primitive, checked exhaustively by the type `RuleTable`. */
import type { RuleTable } from "./rule.ts";
import { ELEMENTWISE_RULES } from "./rules_elementwise.ts";
import { REDUCE_RULES } from "./rules_reduce.ts";
import { matmulRule } from "./rules_linalg.ts";
import { MOVEMENT_RULES } from "./rules_movement.ts";
import { randomBitsRule } from "./rules_random.ts";

/** Every primitive's shape rule, CPU implementation, VJP and WGSL lowering. */
export const RULES: RuleTable = {
  ...ELEMENTWISE_RULES,
  ...REDUCE_RULES,
  matmul: matmulRule,
  ...MOVEMENT_RULES,
  randomBits: randomBitsRule,
};
