-- A claim handles a few dozen rows; JIT compiling its plan never pays off
-- and, with the planner's estimates for fresh (unanalyzed) tables, the
-- generic plan's cost can pass jit_above_cost and cost seconds per call.
ALTER FUNCTION claim_queued_builds(text, double precision, integer, uuid[], text[], text[],
                                   boolean[], text[], text[], text[]) SET jit = off;
