-- pgbench custom script (scripts/bench.sh, workload "worker-read"): what a
-- background worker does on every job: read its tenant's open judgments as
-- dragonfly_app, under row-level security keyed on app.current_tenant.
-- The tenant is set with SET LOCAL inside the transaction so the same script
-- works through every target, including PgBouncer in transaction mode (which
-- cannot carry a session setting or a startup option between transactions).
BEGIN;
SET LOCAL app.current_tenant = 'acme';
SELECT id, case_number, debtor_name, principal_amount, status
  FROM public.judgments
 WHERE status <> 'closed'
 ORDER BY id;
COMMIT;
