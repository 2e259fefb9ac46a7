-- Dispatcher support: the claim path per tenant, running counts for limits,
-- lease ownership, and an explicit marker that an execution's reference
-- (where its work lives) has been persisted, which decides re-attach vs start.

-- Set when the executor reported where the work lives (ExecutionSink::reference).
-- ExecutionRef fields are all optional, so the marker is explicit.
ALTER TABLE build_executions ADD COLUMN reference_at timestamptz;

-- Claim path: per tenant, queued builds by priority then age (the claim query
-- walks each tenant with free capacity, so a full tenant never blocks others).
CREATE INDEX builds_tenant_queue_idx ON builds (tenant_id, priority DESC, created_at, id) WHERE status = 'queued';
-- Concurrency limits count running builds per tenant and per provider.
CREATE INDEX builds_running_tenant_idx ON builds (tenant_id) WHERE status = 'running';
CREATE INDEX builds_running_provider_idx ON builds (infrastructure_provider_id) WHERE status = 'running';
-- Lease renewal and release by owner.
CREATE INDEX builds_lease_owner_idx ON builds (lease_owner) WHERE status = 'running';
-- Queued builds whose cancellation was requested (swept at once).
CREATE INDEX builds_cancel_queued_idx ON builds (id) WHERE status = 'queued' AND cancel_requested_at IS NOT NULL;
