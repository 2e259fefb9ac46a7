-- A tenant's build list in its exact order (created_at DESC, id DESC): a page,
-- and the keyset condition of the next one, are read straight off the index.
-- The old (tenant_id, created_at DESC) index left ties to a sort, and on a
-- young table (no statistics yet) the planner read every build of the tenant
-- to sort them; a GET by id also took it over the primary key.
CREATE INDEX builds_tenant_list_idx ON builds (tenant_id, created_at DESC, id DESC);
DROP INDEX builds_tenant_created_idx;
