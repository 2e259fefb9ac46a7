-- claim_queued_builds (0030) with plans that do not depend on statistics.
-- PostgreSQL may not have analyzed `builds` yet (a young table, autovacuum
-- behind or off), and then believes a handful of builds are queued however
-- many are. With those estimates the claim found the tenants with claimable
-- builds by hashing every queued build (16,000 queued: 9 ms), and locked and
-- updated the chosen rows by scanning the queue index; with the generic plan
-- the dispatcher's connection kept from its first claim on a nearly empty
-- table it scanned the whole table per chosen row (240 ms with 12,000
-- queued). Now the tenants come from a skip scan of the tenant queue index,
-- the rows are locked and updated through the primary key only, and the
-- function is planned at each call. The result is unchanged.
DROP FUNCTION claim_queued_builds(text, double precision, integer, uuid[], text[], text[],
                                  boolean[], text[], text[], text[], text[], text, text[], text);

CREATE FUNCTION claim_queued_builds(
    p_owner text,
    p_lease_secs double precision,
    p_limit integer,
    p_execution_ids uuid[],
    -- The caller's decisions, element i of each array forms entry i.
    p_infrastructure_type text[],
    p_provider_type text[],
    p_provider_tekton_enabled boolean[],
    p_provider_status text[],
    -- Run with this executor, or (NULL) fail the build with p_fail_message.
    p_executor text[],
    p_fail_message text[],
    -- The state machine's moves (imagefactory_domain::Transition::Claim and
    -- ::Reject): the states each may start from and the state it writes.
    p_claim_from text[],
    p_claim_to text,
    p_reject_from text[],
    p_reject_to text
) RETURNS TABLE (
    outcome text,
    ord bigint,
    build_id uuid,
    tenant_id uuid,
    id uuid,
    attempt integer,
    executor text,
    provider_id uuid,
    cluster_namespace text,
    pipeline_run_name text,
    pipeline_run_uid text,
    status text,
    dispatcher_id text,
    message text,
    reference_at timestamptz,
    started_at timestamptz,
    finished_at timestamptz,
    age_ms bigint,
    max_attempts integer,
    timeout_seconds integer,
    infrastructure_type text,
    provider_type text,
    provider_tekton_enabled boolean,
    provider_status text,
    offered bigint
)
LANGUAGE plpgsql
VOLATILE
-- See 0013: JIT never pays off for a claim.
SET jit = off
-- Every table it reads has an index for what it looks for; a sequential
-- scan is only ever chosen from estimates that, without statistics, can be
-- wrong by the whole queue: a plan kept from a nearly empty table scanned
-- the table per chosen row (240 ms with 12,000 queued). With this the
-- generic plan the dispatcher keeps stays on the indexes at any size
-- (planning at each call instead cost 2.6 ms per claim).
SET enable_seqscan = off
AS $$
#variable_conflict use_column
BEGIN
    -- Under REPEATABLE READ or SERIALIZABLE the candidate query would read the
    -- transaction's snapshot, taken before the lock: limits could be exceeded.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'claim_queued_builds must run under READ COMMITTED, not %',
            current_setting('transaction_isolation');
    END IF;
    IF coalesce(array_length(p_execution_ids, 1), 0) < p_limit THEN
        RAISE EXCEPTION 'claim_queued_builds: % execution ids for a limit of %',
            coalesce(array_length(p_execution_ids, 1), 0), p_limit;
    END IF;
    -- "ifclaim" in ASCII, the key every claim serializes on.
    PERFORM pg_advisory_xact_lock(29667449760737645);

    RETURN QUERY
    WITH RECURSIVE queued_tenant(tenant_id) AS (
        -- The tenants with queued builds, one index probe each (a skip scan
        -- of builds_tenant_queue_idx): the cost follows the number of such
        -- tenants, never the number of queued builds.
        (SELECT q.tenant_id FROM builds q WHERE q.status = 'queued' AND q.tenant_id IS NOT NULL
         ORDER BY q.tenant_id LIMIT 1)
        UNION ALL
        SELECT (SELECT q.tenant_id FROM builds q
                WHERE q.status = 'queued' AND q.tenant_id > qt.tenant_id
                ORDER BY q.tenant_id LIMIT 1)
        FROM queued_tenant qt WHERE qt.tenant_id IS NOT NULL
    ), tenant_free AS (
        -- Running builds are counted only up to the limit (index-only scans),
        -- and only for tenants with something queued (whether it is due is
        -- the candidate walk's question).
        SELECT t.id AS tenant_id,
               t.max_concurrent_builds - (
                   SELECT count(*) FROM (
                       SELECT 1 FROM builds r WHERE r.tenant_id = t.id AND r.status = 'running'
                       LIMIT t.max_concurrent_builds) x) AS free
        FROM queued_tenant qt JOIN tenants t ON t.id = qt.tenant_id
    ), provider_free AS (
        SELECT p.id,
               p.max_concurrent_builds - (
                   SELECT count(*) FROM (
                       SELECT 1 FROM builds r WHERE r.infrastructure_provider_id = p.id
                       AND r.status = 'running' LIMIT p.max_concurrent_builds) x) AS free
        FROM infrastructure_providers p
        WHERE p.max_concurrent_builds IS NOT NULL
    ), cand AS (
        -- Builds of providers at their limit are skipped inside the tenant
        -- walk so they do not shadow the tenant's other builds.
        SELECT c.id, c.tenant_id, c.infrastructure_type, c.infrastructure_provider_id,
               c.priority, c.created_at,
               p.id AS provider_id, p.provider_type, p.tekton_enabled, p.status AS provider_status,
               pf.free AS provider_free
        FROM tenant_free f
        JOIN LATERAL (
            SELECT b.id, b.tenant_id, b.infrastructure_type, b.infrastructure_provider_id,
                   b.priority, b.created_at
            FROM builds b
            WHERE b.tenant_id = f.tenant_id AND b.status = 'queued' AND b.not_before <= now()
              AND b.cancel_requested_at IS NULL
              AND (b.infrastructure_provider_id IS NULL OR b.infrastructure_provider_id NOT IN
                   (SELECT pf0.id FROM provider_free pf0 WHERE pf0.free <= 0))
            ORDER BY b.priority DESC, b.created_at, b.id
            LIMIT GREATEST(LEAST(f.free, p_limit), 0)
        ) c ON true
        -- The provider it would run on: its own, or the global Kubernetes default.
        LEFT JOIN LATERAL (
            SELECT ip.id, ip.provider_type, ip.tekton_enabled, ip.status
            FROM infrastructure_providers ip
            WHERE ip.id = c.infrastructure_provider_id
               OR (c.infrastructure_provider_id IS NULL AND c.infrastructure_type = 'kubernetes'
                   AND ip.is_global AND ip.provider_type = 'kubernetes' AND ip.status = 'active')
            ORDER BY ip.created_at, ip.id
            LIMIT 1
        ) p ON true
        LEFT JOIN provider_free pf ON pf.id = c.infrastructure_provider_id
        ORDER BY c.priority DESC, c.created_at, c.id
        LIMIT p_limit
    ), ranked AS (
        SELECT cand.*,
               row_number() OVER (ORDER BY cand.priority DESC, cand.created_at, cand.id) AS claim_ord,
               row_number() OVER (PARTITION BY cand.infrastructure_provider_id
                                  ORDER BY cand.priority DESC, cand.created_at, cand.id) AS provider_rank
        FROM cand
    ), decided AS (
        SELECT r.*, d.executor AS run_with, d.message AS fail_with, d.infrastructure_type IS NULL AS undecided
        FROM ranked r
        LEFT JOIN UNNEST(p_infrastructure_type, p_provider_type, p_provider_tekton_enabled,
                         p_provider_status, p_executor, p_fail_message)
             AS d(infrastructure_type, provider_type, tekton_enabled, provider_status, executor, message)
          ON d.infrastructure_type = r.infrastructure_type
         AND d.provider_type IS NOT DISTINCT FROM r.provider_type
         AND d.tekton_enabled IS NOT DISTINCT FROM r.tekton_enabled
         AND d.provider_status IS NOT DISTINCT FROM r.provider_status
        WHERE r.provider_free IS NULL OR r.provider_rank <= r.provider_free
    ), go AS (
        SELECT * FROM decided WHERE NOT EXISTS (SELECT 1 FROM decided u WHERE u.undecided)
    ), locked AS (
        -- Rows another transaction holds (e.g. an API cancel in progress) are
        -- skipped, not waited for; a row changed since the snapshot is
        -- re-checked against these conditions.
        -- One primary-key probe per chosen build (a lateral subquery with
        -- its own lock is never flattened into a join the planner could
        -- turn into a scan of builds). The status is the locked row's, which
        -- no one else can change before this transaction ends.
        SELECT l.id, l.status FROM go g
        CROSS JOIN LATERAL (
            SELECT b.id, b.status FROM builds b
            WHERE b.id = g.id
              AND b.status = ANY (p_claim_from || p_reject_from) AND b.cancel_requested_at IS NULL
            FOR UPDATE SKIP LOCKED
        ) l
    ), started AS (
        UPDATE builds b SET status = p_claim_to, attempts = b.attempts + 1, lease_owner = p_owner,
               lease_expires_at = now() + make_interval(secs => p_lease_secs),
               started_at = COALESCE(b.started_at, now()), finished_at = NULL, updated_at = now()
        -- Only the primary key can find `b` here (the status is checked on
        -- the locked row): a condition on b.status would let the planner,
        -- which without statistics believes a handful of builds are queued,
        -- read every queued build through the queue index instead.
        FROM go g JOIN locked l ON l.id = g.id
        WHERE b.id = g.id AND g.run_with IS NOT NULL AND l.status = ANY (p_claim_from)
        RETURNING b.id AS build_id, b.tenant_id, b.attempts, b.max_attempts, b.timeout_seconds,
                  g.run_with, g.provider_id, g.claim_ord
    ), inserted AS (
        -- Every column is set here, so the 'claimed' rows below can be
        -- built from `started` without joining this CTE back (a nested loop
        -- over two CTE scans cost as much as the insert).
        INSERT INTO build_executions (id, build_id, tenant_id, attempt, executor, provider_id,
                                      dispatcher_id, status, started_at, cluster_namespace,
                                      pipeline_run_name, pipeline_run_uid, message, reference_at,
                                      finished_at)
        SELECT p_execution_ids[s.claim_ord], s.build_id, s.tenant_id, s.attempts, s.run_with,
               s.provider_id, p_owner, 'running', now(), NULL, NULL, NULL, NULL, NULL, NULL
        FROM started s
    ), failed AS (
        UPDATE builds b SET status = p_reject_to, error_message = g.fail_with,
               finished_at = now(), updated_at = now()
        FROM go g JOIN locked l ON l.id = g.id
        WHERE b.id = g.id AND g.run_with IS NULL AND l.status = ANY (p_reject_from)
        RETURNING b.id AS build_id, b.tenant_id, g.fail_with, g.claim_ord
    )
    -- A data-modifying CTE runs to completion whether or not it is read, so
    -- every row here was inserted (or the whole statement failed).
    SELECT 'claimed'::text, s.claim_ord, s.build_id, s.tenant_id, p_execution_ids[s.claim_ord],
           s.attempts, s.run_with, s.provider_id, NULL::text, NULL::text, NULL::text,
           'running'::text, p_owner, NULL::text, NULL::timestamptz, now(), NULL::timestamptz,
           (EXTRACT(EPOCH FROM (clock_timestamp() - now())) * 1000)::bigint,
           s.max_attempts, s.timeout_seconds,
           NULL::text, NULL::text, NULL::boolean, NULL::text, NULL::bigint
    FROM started s
    UNION ALL
    SELECT 'failed', f.claim_ord, f.build_id, f.tenant_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
           NULL, NULL, f.fail_with, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
    FROM failed f
    UNION ALL
    SELECT DISTINCT 'undecided', NULL::bigint, NULL::uuid, NULL::uuid, NULL::uuid, NULL::integer,
           NULL::text, NULL::uuid, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text,
           NULL::text, NULL::timestamptz, NULL::timestamptz, NULL::timestamptz, NULL::bigint,
           NULL::integer, NULL::integer,
           u.infrastructure_type, u.provider_type, u.tekton_enabled, u.provider_status, NULL::bigint
    FROM decided u WHERE u.undecided
    UNION ALL
    SELECT 'offered', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
           NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, (SELECT count(*) FROM cand);
END
$$;
