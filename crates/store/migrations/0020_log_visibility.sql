-- Live log following must not skip a line committed out of id order.
--
-- Several writers append a build's lines at once (one per Tekton step log,
-- each INSERT its own transaction), so line ids are not taken in commit
-- order: T1 takes id 10, T2 takes id 11 and commits, a follower whose cursor
-- is the id reads 11 and moves past 10 before T1 commits it.
--
-- Each line records the transaction that inserted it (`tx`, the top-level
-- xid8, which never wraps). Followers read in (tx, id) order and only lines
-- with tx < pg_snapshot_xmin(pg_current_snapshot()) of the reading
-- statement: every transaction below that horizon has ended (committed and
-- visible, or rolled back), and every transaction that can still commit has,
-- or will be given, an xid at or above it. So the (tx, id) order of the lines
-- below the horizon is final and a cursor in that order never passes a line
-- that commits later. A long unrelated transaction (any database of the
-- cluster) holds the horizon back and only delays live lines.
--
-- Lines stored before this migration all committed (ALTER TABLE waits for
-- their writers) and get tx 0: they come first, in id order. The constant
-- default fills them without rewriting the table; new rows take the
-- inserting transaction's id.
ALTER TABLE build_logs ADD COLUMN tx xid8 NOT NULL DEFAULT '0';
ALTER TABLE build_logs ALTER COLUMN tx SET DEFAULT pg_current_xact_id();

-- The followers' and the plain read's order; also serves the build_id
-- foreign key. It replaces the id-ordered index, which nothing reads any more.
CREATE INDEX build_logs_follow_idx ON build_logs (build_id, tx, id);
DROP INDEX build_logs_build_idx;
