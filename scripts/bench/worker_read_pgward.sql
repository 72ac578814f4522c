-- pgbench custom script (scripts/bench.sh, workload "worker-read", pgward
-- target): worker_read.sql without the SET LOCAL, which pgward injects itself
-- from the startup option (PGOPTIONS='-c app.current_tenant=acme') and would
-- refuse from the client. The server runs the same statements as for the
-- other targets.
BEGIN;
SELECT id, case_number, debtor_name, principal_amount, status
  FROM public.judgments
 WHERE status <> 'closed'
 ORDER BY id;
COMMIT;
