-- pgbench custom script (scripts/bench.sh, workload "worker-read-options"):
-- the same read as worker_read.sql, but the tenant comes from the startup
-- packet (PGOPTIONS='-c app.current_tenant=acme'), so each transaction is one
-- statement. Only for targets that relay startup options: PostgreSQL directly
-- and pgward (PgBouncer rejects or drops the `options` startup parameter).
SELECT id, case_number, debtor_name, principal_amount, status
  FROM public.judgments
 WHERE status <> 'closed'
 ORDER BY id;
