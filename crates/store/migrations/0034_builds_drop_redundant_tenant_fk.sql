-- A build's tenant is already checked by builds_project_fk: (tenant_id,
-- project_id) must name a project of that tenant, projects reference their
-- tenant, and deleting a tenant deletes its projects and, through that key,
-- their builds. The second check cost every submit a foreign-key lookup
-- (a key-share lock on the tenant's row, shared by all its concurrent
-- submits) for nothing.
ALTER TABLE builds DROP CONSTRAINT builds_tenant_id_fkey;
