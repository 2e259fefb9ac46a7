-- Many builds with their configs by id, in one call (store::build_reads:
-- the `GET /builds/{id}` reads waiting at one moment, answered together).
-- One primary-key probe per id, whatever the tables' statistics: the probe
-- is a LATERAL subquery that OFFSET 0 keeps from being flattened into a
-- join the planner could turn into a scan. A plan of its own, made once:
-- written as a plain statement with an array parameter, PostgreSQL planned
-- it again at every call (its cost grows with the array's length, so the
-- cached generic plan never looked cheaper than a fresh one).
-- The caller matches each row to the tenant that asked for it.
CREATE FUNCTION builds_with_config(p_ids uuid[])
RETURNS TABLE (build builds, config build_configs)
LANGUAGE plpgsql
STABLE
SET jit = off
SET plan_cache_mode = force_generic_plan
-- See 0035: a plan made on a nearly empty table must not scan it later.
SET enable_seqscan = off
AS $$
BEGIN
    RETURN QUERY
        SELECT f.b, f.c
        FROM unnest(p_ids) AS q(id)
        CROSS JOIN LATERAL (
            SELECT b, c
            FROM builds b JOIN build_configs c ON c.build_id = b.id
            WHERE b.id = q.id
            OFFSET 0
        ) f;
END;
$$;
