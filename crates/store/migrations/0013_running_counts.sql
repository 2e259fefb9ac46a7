-- Running builds per tenant and per provider, kept by statement triggers on
-- builds, so a claim reads one row per tenant (and limited provider) instead
-- of counting running builds (a tenant with a high limit made every claim
-- walk all of its running builds).
--
-- The triggers see every change of `builds` (claim, finish, requeue, cancel,
-- retry, takeover, deletes, TRUNCATE, an operator's UPDATE): a count is the
-- number of rows with status 'running' for that tenant_id /
-- infrastructure_provider_id. A count changes in the transaction that
-- changes those rows, and its row stays locked until that transaction ends,
-- so a claim (which reads the counts under the claim lock, in a snapshot
-- taken after it) sees the same number a count of the rows would give, or
-- a higher one while a finishing build's transaction has not committed yet
-- (as the count did).

CREATE TABLE tenant_running_builds (
    tenant_id   uuid PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    running     integer NOT NULL CONSTRAINT tenant_running_builds_not_negative CHECK (running >= 0)
);

CREATE TABLE provider_running_builds (
    provider_id uuid PRIMARY KEY REFERENCES infrastructure_providers(id) ON DELETE CASCADE,
    running     integer NOT NULL CONSTRAINT provider_running_builds_not_negative CHECK (running >= 0)
);

-- Apply per-key changes (ids sorted, no zero deltas). Existing counter rows
-- are locked in key order first, so statements that change several counts
-- cannot deadlock on them; a missing row is created for a positive change
-- (concurrent creators meet in ON CONFLICT). A negative change for a missing
-- row means its tenant / provider is being deleted with its builds (the
-- counter row went first, by cascade): nothing to count any more.
CREATE FUNCTION builds_running_counts_apply(
    p_tenants uuid[], p_tenant_deltas integer[],
    p_providers uuid[], p_provider_deltas integer[]
) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_tenants IS NOT NULL THEN
        IF array_length(p_tenants, 1) > 1 THEN
            PERFORM 1 FROM tenant_running_builds c WHERE c.tenant_id = ANY (p_tenants)
            ORDER BY c.tenant_id FOR NO KEY UPDATE;
        END IF;
        WITH s AS (
            SELECT * FROM unnest(p_tenants, p_tenant_deltas) AS s(id, delta)
        ), updated AS (
            UPDATE tenant_running_builds c SET running = c.running + s.delta
            FROM s WHERE c.tenant_id = s.id
            RETURNING c.tenant_id
        )
        INSERT INTO tenant_running_builds AS c (tenant_id, running)
        SELECT s.id, s.delta FROM s
        WHERE s.delta > 0 AND s.id NOT IN (SELECT u.tenant_id FROM updated u)
        ON CONFLICT (tenant_id) DO UPDATE SET running = c.running + EXCLUDED.running;
    END IF;
    IF p_providers IS NOT NULL THEN
        IF array_length(p_providers, 1) > 1 THEN
            PERFORM 1 FROM provider_running_builds c WHERE c.provider_id = ANY (p_providers)
            ORDER BY c.provider_id FOR NO KEY UPDATE;
        END IF;
        WITH s AS (
            SELECT * FROM unnest(p_providers, p_provider_deltas) AS s(id, delta)
        ), updated AS (
            UPDATE provider_running_builds c SET running = c.running + s.delta
            FROM s WHERE c.provider_id = s.id
            RETURNING c.provider_id
        )
        INSERT INTO provider_running_builds AS c (provider_id, running)
        SELECT s.id, s.delta FROM s
        WHERE s.delta > 0 AND s.id NOT IN (SELECT u.provider_id FROM updated u)
        ON CONFLICT (provider_id) DO UPDATE SET running = c.running + EXCLUDED.running;
    END IF;
END
$$;

-- One statement's net change: -1 per old row that was running, +1 per new
-- row that is running, summed per tenant and per provider (a lease renewal
-- or any update that leaves running builds running sums to nothing).
CREATE FUNCTION builds_running_counts_update() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    t_ids uuid[]; t_deltas integer[]; p_ids uuid[]; p_deltas integer[];
BEGIN
    SELECT array_agg(id ORDER BY id), array_agg(delta ORDER BY id) INTO t_ids, t_deltas
    FROM (SELECT id, sum(n)::integer AS delta FROM (
              SELECT o.tenant_id AS id, -1 AS n FROM old_rows o WHERE o.status = 'running'
              UNION ALL
              SELECT r.tenant_id, 1 FROM new_rows r WHERE r.status = 'running') d
          GROUP BY id HAVING sum(n) <> 0) s;
    SELECT array_agg(id ORDER BY id), array_agg(delta ORDER BY id) INTO p_ids, p_deltas
    FROM (SELECT id, sum(n)::integer AS delta FROM (
              SELECT o.infrastructure_provider_id AS id, -1 AS n FROM old_rows o
              WHERE o.status = 'running' AND o.infrastructure_provider_id IS NOT NULL
              UNION ALL
              SELECT r.infrastructure_provider_id, 1 FROM new_rows r
              WHERE r.status = 'running' AND r.infrastructure_provider_id IS NOT NULL) d
          GROUP BY id HAVING sum(n) <> 0) s;
    IF t_ids IS NOT NULL OR p_ids IS NOT NULL THEN
        PERFORM builds_running_counts_apply(t_ids, t_deltas, p_ids, p_deltas);
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION builds_running_counts_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    t_ids uuid[]; t_deltas integer[]; p_ids uuid[]; p_deltas integer[];
BEGIN
    SELECT array_agg(id ORDER BY id), array_agg(delta ORDER BY id) INTO t_ids, t_deltas
    FROM (SELECT r.tenant_id AS id, count(*)::integer AS delta FROM new_rows r
          WHERE r.status = 'running' GROUP BY r.tenant_id) s;
    SELECT array_agg(id ORDER BY id), array_agg(delta ORDER BY id) INTO p_ids, p_deltas
    FROM (SELECT r.infrastructure_provider_id AS id, count(*)::integer AS delta FROM new_rows r
          WHERE r.status = 'running' AND r.infrastructure_provider_id IS NOT NULL
          GROUP BY r.infrastructure_provider_id) s;
    IF t_ids IS NOT NULL OR p_ids IS NOT NULL THEN
        PERFORM builds_running_counts_apply(t_ids, t_deltas, p_ids, p_deltas);
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION builds_running_counts_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    t_ids uuid[]; t_deltas integer[]; p_ids uuid[]; p_deltas integer[];
BEGIN
    SELECT array_agg(id ORDER BY id), array_agg(delta ORDER BY id) INTO t_ids, t_deltas
    FROM (SELECT o.tenant_id AS id, -count(*)::integer AS delta FROM old_rows o
          WHERE o.status = 'running' GROUP BY o.tenant_id) s;
    SELECT array_agg(id ORDER BY id), array_agg(delta ORDER BY id) INTO p_ids, p_deltas
    FROM (SELECT o.infrastructure_provider_id AS id, -count(*)::integer AS delta FROM old_rows o
          WHERE o.status = 'running' AND o.infrastructure_provider_id IS NOT NULL
          GROUP BY o.infrastructure_provider_id) s;
    IF t_ids IS NOT NULL OR p_ids IS NOT NULL THEN
        PERFORM builds_running_counts_apply(t_ids, t_deltas, p_ids, p_deltas);
    END IF;
    RETURN NULL;
END
$$;

-- TRUNCATE removes every build at once (it takes an exclusive lock on
-- builds, so no build changes meanwhile).
CREATE FUNCTION builds_running_counts_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM tenant_running_builds;
    DELETE FROM provider_running_builds;
    RETURN NULL;
END
$$;

CREATE TRIGGER builds_running_counts_update AFTER UPDATE ON builds
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION builds_running_counts_update();
CREATE TRIGGER builds_running_counts_insert AFTER INSERT ON builds
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION builds_running_counts_insert();
CREATE TRIGGER builds_running_counts_delete AFTER DELETE ON builds
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION builds_running_counts_delete();
CREATE TRIGGER builds_running_counts_truncate AFTER TRUNCATE ON builds
    FOR EACH STATEMENT EXECUTE FUNCTION builds_running_counts_truncate();

-- Start from the builds running now (the migration runs in one transaction;
-- the lock keeps builds from changing between this count and the triggers).
LOCK TABLE builds IN SHARE ROW EXCLUSIVE MODE;
INSERT INTO tenant_running_builds (tenant_id, running)
SELECT tenant_id, count(*) FROM builds WHERE status = 'running' GROUP BY tenant_id;
INSERT INTO provider_running_builds (provider_id, running)
SELECT infrastructure_provider_id, count(*) FROM builds
WHERE status = 'running' AND infrastructure_provider_id IS NOT NULL
GROUP BY infrastructure_provider_id;
