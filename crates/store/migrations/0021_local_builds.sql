-- Local builds run on the dispatcher's host: git, the container CLI and
-- packer as the dispatcher's user, and packer templates from the tenant's
-- repository can run shell-local provisioners, i.e. any command there. That
-- is host access, so it is the platform admin's to grant, per tenant; no
-- tenant has it until granted (existing tenants included).
ALTER TABLE tenants ADD COLUMN allow_local_builds boolean NOT NULL DEFAULT false;
