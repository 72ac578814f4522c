-- Test-only grant drift: gives the worker role `dragonfly_app` every write
-- privilege on the protected schemas, and RLS write policies that accept any
-- row. Load it AFTER sql/demo.sql, as a superuser.
--
-- Why: a test that sends `INSERT INTO ops.job_queue ...` through pgward and
-- sees it refused proves nothing if PostgreSQL would have refused it anyway.
-- With this file loaded the database accepts the write, so a refusal can only
-- have come from pgward. (Without pgward these statements succeed: the rig
-- smoke test checks that, so the premise cannot silently rot.)
--
-- Reads stay tenant-scoped: no SELECT policy is added, and permissive
-- policies for other commands do not widen what SELECT returns. Note that
-- UPDATE/DELETE with a WHERE clause also need the row to pass the SELECT
-- policy, i.e. to belong to the current tenant.
--
-- Re-running sql/demo.sql undoes all of this.

\set ON_ERROR_STOP on
SET client_min_messages = warning;

GRANT CREATE ON SCHEMA public, ops, intake, enforcement TO dragonfly_app;
GRANT INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER
    ON ALL TABLES IN SCHEMA public, ops, intake, enforcement TO dragonfly_app;
GRANT USAGE, SELECT, UPDATE
    ON ALL SEQUENCES IN SCHEMA public, ops, intake, enforcement TO dragonfly_app;

DO $$
DECLARE
    t regclass;
BEGIN
    FOR t IN
        SELECT c.oid::regclass
          FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p')
           AND n.nspname IN ('public', 'ops', 'intake', 'enforcement')
    LOOP
        EXECUTE format('DROP POLICY IF EXISTS test_write_insert ON %s', t);
        EXECUTE format('DROP POLICY IF EXISTS test_write_update ON %s', t);
        EXECUTE format('DROP POLICY IF EXISTS test_write_delete ON %s', t);
        EXECUTE format(
            'CREATE POLICY test_write_insert ON %s FOR INSERT TO dragonfly_app WITH CHECK (true)', t);
        EXECUTE format(
            'CREATE POLICY test_write_update ON %s FOR UPDATE TO dragonfly_app USING (true) WITH CHECK (true)', t);
        EXECUTE format(
            'CREATE POLICY test_write_delete ON %s FOR DELETE TO dragonfly_app USING (true)', t);
    END LOOP;
END
$$;
