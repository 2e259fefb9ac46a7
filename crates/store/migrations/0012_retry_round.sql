-- A manual retry starts a new round of automatic requeues: the dispatcher's
-- transient-error budget (min(builds.max_attempts, IF_DISPATCHER_MAX_ATTEMPTS))
-- counts the attempts made since the last retry, not since submission, so a
-- retried build is requeued on a transient error like a new one.
ALTER TABLE builds
    ADD COLUMN attempts_before_retry integer NOT NULL DEFAULT 0
        CONSTRAINT builds_attempts_before_retry_valid
            CHECK (attempts_before_retry >= 0 AND attempts_before_retry <= attempts);
