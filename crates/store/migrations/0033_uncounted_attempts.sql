-- An attempt that ended before anything of it existed on the cluster,
-- because the cluster could not be reached (exec's `Outcome::Unreachable`),
-- is not counted toward the build's automatic-requeue budget: an outage of
-- the cluster must not use up a build's attempts. The dispatcher bounds how
-- long such attempts go on (`IF_DISPATCHER_UNREACHABLE_GRACE`, counted from
-- the first of a series in a row) by reading this column back
-- (`store::queue::round_so_far`). Existing rows were all counted.
ALTER TABLE build_executions ADD COLUMN counted boolean NOT NULL DEFAULT true;
