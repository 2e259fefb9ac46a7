-- Installs of Image Factory's Tekton Task bundle on a provider's cluster
-- (admin API, `imagefactory tekton install --provider`). One running job per
-- provider at a time (the partial unique index). A job whose process died is
-- recovered, not stuck: its owner renews `heartbeat_at` while it runs, and
-- a running job whose heartbeat is older than the lease is marked failed by
-- the next request for that provider.
CREATE TABLE tekton_install_jobs (
    id uuid PRIMARY KEY,
    provider_id uuid NOT NULL REFERENCES infrastructure_providers (id) ON DELETE CASCADE,
    status text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    namespace text,
    dry_run boolean NOT NULL DEFAULT false,
    owner_host text NOT NULL,
    owner_pid integer NOT NULL,
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    -- Per-object results: [{kind, namespace, name, before, action, detail}].
    results jsonb NOT NULL DEFAULT '[]'::jsonb,
    error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    CHECK ((status = 'running') = (finished_at IS NULL))
);

CREATE UNIQUE INDEX tekton_install_jobs_one_running
    ON tekton_install_jobs (provider_id) WHERE status = 'running';
CREATE INDEX tekton_install_jobs_provider ON tekton_install_jobs (provider_id, created_at DESC);
