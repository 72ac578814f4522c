-- pgward demo schema: a small model of the Dragonfly Civil database that the
-- worker security seeds describe (shared/seeds/worker-security-model.md,
-- security-definer-exceptions.md, database-security-contract.md,
-- rls-invariant-enforcement.md).
--
-- What it sets up, and why pgward cares:
--   * The worker role `dragonfly_app` (LOGIN, password 'dragonfly' for the
--     demo; not superuser, no BYPASSRLS) may only READ the protected tables.
--     Every write goes through a SECURITY DEFINER function with a pinned
--     search_path, as in the seeds. pgward's job is to hold that line even
--     when a grant drifts (sql/test_grants.sql simulates such drift).
--   * Tenant data is guarded by row-level security, ENABLED and FORCED, keyed
--     on the custom setting `app.current_tenant`. With no tenant set, the
--     worker sees no rows at all (current_setting(..., true) is NULL).
--   * Two tenants, `acme` and `globex`, have seed rows so tests can prove
--     isolation in both directions.
--
-- Run it as a superuser (the functions must be owned by one) in a fresh
-- database:  psql -v ON_ERROR_STOP=1 -d dragonfly -f sql/demo.sql
-- It is safe to run again in the same database, and in several databases of
-- one cluster at once (roles are cluster-wide; their creation tolerates a
-- concurrent creator).

\set ON_ERROR_STOP on
SET client_min_messages = warning;

-- ---------------------------------------------------------------------------
-- Roles (cluster-wide)
-- ---------------------------------------------------------------------------
-- Created only when missing, never altered: ALTER ROLE from two sessions at
-- once fails with "tuple concurrently updated", and the test suite loads this
-- file into several databases of one cluster in parallel.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'dragonfly_app') THEN
        CREATE ROLE dragonfly_app LOGIN PASSWORD 'dragonfly'
            NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOREPLICATION INHERIT;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL; -- another session created it first
END
$$;

-- service_role: the backend role of the contract that bypasses RLS. Nobody
-- logs in as it here; it exists so that `SET ROLE service_role` by the worker
-- is a meaningful (and refused) escalation attempt.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        CREATE ROLE service_role NOLOGIN BYPASSRLS
            NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

-- ---------------------------------------------------------------------------
-- Schemas
-- ---------------------------------------------------------------------------
CREATE SCHEMA IF NOT EXISTS ops;
CREATE SCHEMA IF NOT EXISTS intake;
CREATE SCHEMA IF NOT EXISTS enforcement;

-- Zero-trust baseline: nobody creates objects in the shared schemas but the
-- owner (PostgreSQL 15 already revokes CREATE on public from PUBLIC; older
-- servers do not).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
REVOKE ALL ON SCHEMA ops, intake, enforcement FROM PUBLIC;

-- ---------------------------------------------------------------------------
-- public: core domain, tenant-scoped
-- ---------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS public.plaintiffs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   text        NOT NULL,
    name        text        NOT NULL,
    email       text,
    phone       text,
    status      text        NOT NULL DEFAULT 'new'
                CHECK (status IN ('new', 'contacted', 'qualified', 'signed', 'closed')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

CREATE TABLE IF NOT EXISTS public.judgments (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id        text          NOT NULL,
    case_number      text          NOT NULL,
    plaintiff_id     bigint        REFERENCES public.plaintiffs (id),
    debtor_name      text          NOT NULL,
    principal_amount numeric(12,2) NOT NULL CHECK (principal_amount >= 0),
    status           text          NOT NULL DEFAULT 'open'
                     CHECK (status IN ('open', 'enforcing', 'collected', 'closed')),
    judgment_date    date,
    created_at       timestamptz   NOT NULL DEFAULT now(),
    updated_at       timestamptz   NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, case_number)
);

CREATE TABLE IF NOT EXISTS public.enforcement_cases (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    text        NOT NULL,
    judgment_id  bigint      NOT NULL REFERENCES public.judgments (id),
    stage        text        NOT NULL DEFAULT 'discovery'
                 CHECK (stage IN ('discovery', 'levy', 'garnishment', 'settled', 'closed')),
    opened_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, judgment_id)
);

-- ---------------------------------------------------------------------------
-- ops: operational tables, not tenant-scoped
-- ---------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS ops.job_queue (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    job_type    text        NOT NULL,
    payload     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    status      text        NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'processing', 'completed', 'failed')),
    attempts    integer     NOT NULL DEFAULT 0,
    locked_by   text,
    locked_at   timestamptz,
    last_error  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS ops.intake_logs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_type  text        NOT NULL,
    details     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    logged_by   text        NOT NULL DEFAULT session_user,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS ops.worker_heartbeats (
    worker_id   text        PRIMARY KEY,
    status      text        NOT NULL DEFAULT 'alive',
    last_seen   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS ops.ingest_batches (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    source      text        NOT NULL,
    row_count   integer     NOT NULL DEFAULT 0,
    status      text        NOT NULL DEFAULT 'open'
                CHECK (status IN ('open', 'finalized', 'failed')),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- ---------------------------------------------------------------------------
-- intake: FOIL data lineage, tenant-scoped
-- ---------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS intake.foil_datasets (
    id             uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id      text        NOT NULL,
    file_name      text        NOT NULL,
    source_system  text        NOT NULL,
    uploaded_by    text        NOT NULL,
    status         text        NOT NULL DEFAULT 'uploaded'
                   CHECK (status IN ('uploaded', 'mapped', 'processing', 'finalized', 'failed')),
    row_count      integer     NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS intake.foil_raw_rows (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   text        NOT NULL,
    dataset_id  uuid        NOT NULL REFERENCES intake.foil_datasets (id),
    row_number  integer     NOT NULL,
    raw         jsonb       NOT NULL,
    status      text        NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'processed', 'quarantined')),
    UNIQUE (dataset_id, row_number)
);

CREATE TABLE IF NOT EXISTS intake.foil_quarantine (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   text        NOT NULL,
    raw_row_id  bigint      NOT NULL REFERENCES intake.foil_raw_rows (id),
    reason      text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- ---------------------------------------------------------------------------
-- enforcement: collection workflow state, tenant-scoped
-- ---------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS enforcement.actions (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    text        NOT NULL,
    case_id      bigint      NOT NULL REFERENCES public.enforcement_cases (id),
    action_type  text        NOT NULL,
    status       text        NOT NULL DEFAULT 'planned'
                 CHECK (status IN ('planned', 'in_progress', 'done', 'cancelled')),
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS enforcement.outcomes (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    text          NOT NULL,
    case_id      bigint        NOT NULL REFERENCES public.enforcement_cases (id),
    outcome      text          NOT NULL
                 CHECK (outcome IN ('paid', 'partial', 'uncollectible', 'settled')),
    amount       numeric(12,2) NOT NULL DEFAULT 0 CHECK (amount >= 0),
    recorded_by  text          NOT NULL DEFAULT session_user,
    recorded_at  timestamptz   NOT NULL DEFAULT now()
);

-- ---------------------------------------------------------------------------
-- Read surface: a dashboard view. security_invoker makes the view apply the
-- caller's RLS, so it cannot be used to read across tenants.
-- ---------------------------------------------------------------------------
CREATE OR REPLACE VIEW public.v_judgment_pipeline WITH (security_invoker = true) AS
    SELECT tenant_id, status, count(*) AS judgments, sum(principal_amount) AS principal
    FROM public.judgments
    GROUP BY tenant_id, status;

-- ---------------------------------------------------------------------------
-- Row-level security: enabled AND forced everywhere
-- ---------------------------------------------------------------------------
-- FORCE makes the policies bind the table owner too; only superusers and
-- BYPASSRLS roles (service_role) escape them. The SECURITY DEFINER functions
-- below are owned by the superuser that runs this file, which is why they can
-- write.
DO $$
DECLARE
    t regclass;
BEGIN
    FOREACH t IN ARRAY ARRAY[
        'public.plaintiffs', 'public.judgments', 'public.enforcement_cases',
        'ops.job_queue', 'ops.intake_logs', 'ops.worker_heartbeats', 'ops.ingest_batches',
        'intake.foil_datasets', 'intake.foil_raw_rows', 'intake.foil_quarantine',
        'enforcement.actions', 'enforcement.outcomes'
    ]::regclass[]
    LOOP
        EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', t);
    END LOOP;
END
$$;

-- Tenant tables: the worker reads its current tenant's rows, nothing else.
-- current_setting(..., true) yields NULL (no rows) when the tenant is unset,
-- and '' after a SET LOCAL has expired: both match no tenant.
DO $$
DECLARE
    t regclass;
BEGIN
    FOREACH t IN ARRAY ARRAY[
        'public.plaintiffs', 'public.judgments', 'public.enforcement_cases',
        'intake.foil_datasets', 'intake.foil_raw_rows', 'intake.foil_quarantine',
        'enforcement.actions', 'enforcement.outcomes'
    ]::regclass[]
    LOOP
        -- test_grants.sql's write policies go too: a re-run restores the demo.
        EXECUTE format('DROP POLICY IF EXISTS test_write_insert ON %s', t);
        EXECUTE format('DROP POLICY IF EXISTS test_write_update ON %s', t);
        EXECUTE format('DROP POLICY IF EXISTS test_write_delete ON %s', t);
        EXECUTE format('DROP POLICY IF EXISTS tenant_isolation ON %s', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %s FOR SELECT TO dragonfly_app '
            'USING (tenant_id = current_setting(''app.current_tenant'', true))', t);
        EXECUTE format('DROP POLICY IF EXISTS service_role_all ON %s', t);
        EXECUTE format(
            'CREATE POLICY service_role_all ON %s FOR ALL TO service_role '
            'USING (true) WITH CHECK (true)', t);
    END LOOP;
END
$$;

-- ops tables hold no tenant data: the worker may read them whole (it needs
-- to see the queue), but never write them directly.
DO $$
DECLARE
    t regclass;
BEGIN
    FOREACH t IN ARRAY ARRAY[
        'ops.job_queue', 'ops.intake_logs', 'ops.worker_heartbeats', 'ops.ingest_batches'
    ]::regclass[]
    LOOP
        EXECUTE format('DROP POLICY IF EXISTS test_write_insert ON %s', t);
        EXECUTE format('DROP POLICY IF EXISTS test_write_update ON %s', t);
        EXECUTE format('DROP POLICY IF EXISTS test_write_delete ON %s', t);
        EXECUTE format('DROP POLICY IF EXISTS worker_read ON %s', t);
        EXECUTE format(
            'CREATE POLICY worker_read ON %s FOR SELECT TO dragonfly_app USING (true)', t);
        EXECUTE format('DROP POLICY IF EXISTS service_role_all ON %s', t);
        EXECUTE format(
            'CREATE POLICY service_role_all ON %s FOR ALL TO service_role '
            'USING (true) WITH CHECK (true)', t);
    END LOOP;
END
$$;

-- ---------------------------------------------------------------------------
-- SECURITY DEFINER write RPCs
-- ---------------------------------------------------------------------------
-- Every one: validates its parameters, runs no dynamic SQL, names its tables
-- with their schema, and pins search_path (public, pg_temp) so that no object
-- the caller creates can shadow what the function uses.

-- The tenant the caller is acting for; refuses to run without one.
CREATE OR REPLACE FUNCTION ops.require_tenant()
RETURNS text
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    v text := current_setting('app.current_tenant', true);
BEGIN
    IF v IS NULL OR v = '' THEN
        RAISE EXCEPTION 'app.current_tenant is not set'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN v;
END
$$;

CREATE OR REPLACE FUNCTION ops.queue_job(p_job_type text, p_payload jsonb DEFAULT '{}'::jsonb)
RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    v_id uuid;
BEGIN
    IF p_job_type IS NULL OR p_job_type !~ '^[a-z][a-z0-9_]{0,62}$' THEN
        RAISE EXCEPTION 'invalid job_type: %', p_job_type USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_payload IS NULL OR jsonb_typeof(p_payload) <> 'object' THEN
        RAISE EXCEPTION 'payload must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO ops.job_queue (job_type, payload)
    VALUES (p_job_type, p_payload)
    RETURNING id INTO v_id;
    RETURN v_id;
END
$$;

CREATE OR REPLACE FUNCTION ops.claim_pending_job(p_worker_id text, p_job_types text[])
RETURNS ops.job_queue
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    v_job ops.job_queue;
BEGIN
    IF p_worker_id IS NULL OR length(p_worker_id) = 0 OR length(p_worker_id) > 128 THEN
        RAISE EXCEPTION 'invalid worker_id' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE ops.job_queue j
       SET status = 'processing', locked_by = p_worker_id, locked_at = now(),
           attempts = j.attempts + 1, updated_at = now()
     WHERE j.id = (
            SELECT q.id FROM ops.job_queue q
             WHERE q.status = 'pending' AND q.job_type = ANY (p_job_types)
             ORDER BY q.created_at
             LIMIT 1
             FOR UPDATE SKIP LOCKED)
    RETURNING j.* INTO v_job;
    RETURN v_job; -- all-NULL row when nothing was pending
END
$$;

CREATE OR REPLACE FUNCTION ops.update_job_status(p_job_id uuid, p_status text, p_error text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
BEGIN
    IF p_status NOT IN ('pending', 'processing', 'completed', 'failed') THEN
        RAISE EXCEPTION 'invalid status: %', p_status USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE ops.job_queue
       SET status = p_status, last_error = p_error, updated_at = now()
     WHERE id = p_job_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no such job: %', p_job_id USING ERRCODE = 'no_data_found';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION ops.register_heartbeat(p_worker_id text, p_status text DEFAULT 'alive')
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
BEGIN
    IF p_worker_id IS NULL OR length(p_worker_id) = 0 OR length(p_worker_id) > 128 THEN
        RAISE EXCEPTION 'invalid worker_id' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO ops.worker_heartbeats (worker_id, status, last_seen)
    VALUES (p_worker_id, p_status, now())
    ON CONFLICT (worker_id) DO UPDATE SET status = EXCLUDED.status, last_seen = EXCLUDED.last_seen;
END
$$;

CREATE OR REPLACE FUNCTION ops.log_intake_event(p_event_type text, p_details jsonb DEFAULT '{}'::jsonb)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    v_id bigint;
BEGIN
    IF p_event_type IS NULL OR p_event_type !~ '^[a-z][a-z0-9_.]{0,62}$' THEN
        RAISE EXCEPTION 'invalid event_type: %', p_event_type USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO ops.intake_logs (event_type, details)
    VALUES (p_event_type, coalesce(p_details, '{}'::jsonb))
    RETURNING id INTO v_id;
    RETURN v_id;
END
$$;

-- Judgments are written for the caller's current tenant only.
CREATE OR REPLACE FUNCTION ops.upsert_judgment(
    p_case_number text,
    p_debtor_name text,
    p_principal_amount numeric,
    p_status text DEFAULT 'open')
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    v_tenant text := ops.require_tenant();
    v_id bigint;
BEGIN
    IF p_case_number IS NULL OR p_case_number !~ '^[A-Za-z0-9-]{1,64}$' THEN
        RAISE EXCEPTION 'invalid case_number: %', p_case_number USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_principal_amount IS NULL OR p_principal_amount < 0 THEN
        RAISE EXCEPTION 'invalid principal_amount' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO public.judgments (tenant_id, case_number, debtor_name, principal_amount, status)
    VALUES (v_tenant, p_case_number, p_debtor_name, p_principal_amount, p_status)
    ON CONFLICT (tenant_id, case_number) DO UPDATE
       SET debtor_name = EXCLUDED.debtor_name,
           principal_amount = EXCLUDED.principal_amount,
           status = EXCLUDED.status,
           updated_at = now()
    RETURNING id INTO v_id;
    RETURN v_id;
END
$$;

CREATE OR REPLACE FUNCTION intake.create_foil_dataset(p_file_name text, p_source_system text, p_uploaded_by text)
RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    v_tenant text := ops.require_tenant();
    v_id uuid;
BEGIN
    IF coalesce(p_file_name, '') = '' OR coalesce(p_source_system, '') = '' OR coalesce(p_uploaded_by, '') = '' THEN
        RAISE EXCEPTION 'file_name, source_system and uploaded_by are required'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO intake.foil_datasets (tenant_id, file_name, source_system, uploaded_by)
    VALUES (v_tenant, p_file_name, p_source_system, p_uploaded_by)
    RETURNING id INTO v_id;
    RETURN v_id;
END
$$;

-- p_rows: a JSON array of objects, stored in order as rows 1..n.
CREATE OR REPLACE FUNCTION intake.store_foil_raw_rows_bulk(p_dataset_id uuid, p_rows jsonb)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    v_tenant text := ops.require_tenant();
    v_count integer;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM intake.foil_datasets d
                    WHERE d.id = p_dataset_id AND d.tenant_id = v_tenant) THEN
        RAISE EXCEPTION 'no such dataset for this tenant: %', p_dataset_id USING ERRCODE = 'no_data_found';
    END IF;
    IF p_rows IS NULL OR jsonb_typeof(p_rows) <> 'array' THEN
        RAISE EXCEPTION 'rows must be a JSON array' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO intake.foil_raw_rows (tenant_id, dataset_id, row_number, raw)
    SELECT v_tenant, p_dataset_id, r.n::integer, r.value
      FROM jsonb_array_elements(p_rows) WITH ORDINALITY AS r(value, n);
    GET DIAGNOSTICS v_count = ROW_COUNT;
    UPDATE intake.foil_datasets SET row_count = row_count + v_count WHERE id = p_dataset_id;
    RETURN v_count;
END
$$;

CREATE OR REPLACE FUNCTION intake.quarantine_foil_row(p_row_id bigint, p_reason text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    v_tenant text := ops.require_tenant();
    v_id bigint;
BEGIN
    UPDATE intake.foil_raw_rows SET status = 'quarantined'
     WHERE id = p_row_id AND tenant_id = v_tenant;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no such row for this tenant: %', p_row_id USING ERRCODE = 'no_data_found';
    END IF;
    INSERT INTO intake.foil_quarantine (tenant_id, raw_row_id, reason)
    VALUES (v_tenant, p_row_id, coalesce(p_reason, 'unspecified'))
    RETURNING id INTO v_id;
    RETURN v_id;
END
$$;

CREATE OR REPLACE FUNCTION enforcement.record_outcome(p_case_id bigint, p_outcome text, p_amount numeric DEFAULT 0)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    v_tenant text := ops.require_tenant();
    v_id bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM public.enforcement_cases c
                    WHERE c.id = p_case_id AND c.tenant_id = v_tenant) THEN
        RAISE EXCEPTION 'no such case for this tenant: %', p_case_id USING ERRCODE = 'no_data_found';
    END IF;
    IF p_outcome NOT IN ('paid', 'partial', 'uncollectible', 'settled') THEN
        RAISE EXCEPTION 'invalid outcome: %', p_outcome USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO enforcement.outcomes (tenant_id, case_id, outcome, amount)
    VALUES (v_tenant, p_case_id, p_outcome, coalesce(p_amount, 0))
    RETURNING id INTO v_id;
    IF p_outcome IN ('paid', 'settled') THEN
        UPDATE public.enforcement_cases SET stage = 'settled' WHERE id = p_case_id;
    END IF;
    RETURN v_id;
END
$$;

-- ---------------------------------------------------------------------------
-- Grants: usage + SELECT for the worker; EXECUTE only on the RPCs
-- ---------------------------------------------------------------------------
GRANT USAGE ON SCHEMA public, ops, intake, enforcement TO dragonfly_app, service_role;

-- Start from nothing on every table and schema, so a re-run also undoes
-- test_grants.sql.
REVOKE CREATE ON SCHEMA public, ops, intake, enforcement FROM dragonfly_app;
REVOKE ALL ON ALL TABLES IN SCHEMA public, ops, intake, enforcement FROM PUBLIC, dragonfly_app;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public, ops, intake, enforcement FROM PUBLIC, dragonfly_app;
GRANT SELECT ON ALL TABLES IN SCHEMA public, ops, intake, enforcement TO dragonfly_app;
GRANT ALL ON ALL TABLES IN SCHEMA public, ops, intake, enforcement TO service_role;
GRANT ALL ON ALL SEQUENCES IN SCHEMA public, ops, intake, enforcement TO service_role;

-- Functions are executable by PUBLIC by default: take that away first.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA ops, intake, enforcement FROM PUBLIC;
-- ops.require_tenant() is only called from inside the RPCs (as their owner),
-- so the worker needs no EXECUTE on it.
GRANT EXECUTE ON FUNCTION
    ops.queue_job(text, jsonb),
    ops.claim_pending_job(text, text[]),
    ops.update_job_status(uuid, text, text),
    ops.register_heartbeat(text, text),
    ops.log_intake_event(text, jsonb),
    ops.upsert_judgment(text, text, numeric, text),
    intake.create_foil_dataset(text, text, text),
    intake.store_foil_raw_rows_bulk(uuid, jsonb),
    intake.quarantine_foil_row(bigint, text),
    enforcement.record_outcome(bigint, text, numeric)
TO dragonfly_app, service_role;

-- ---------------------------------------------------------------------------
-- Seed data: two tenants. Inserted by the superuser (bypasses RLS); skipped
-- when already present.
-- ---------------------------------------------------------------------------
INSERT INTO public.plaintiffs (tenant_id, name, email, phone, status) VALUES
    ('acme',   'Acme Holdings LLC',     'legal@acme.example',    '555-0100', 'signed'),
    ('acme',   'Road Runner Supply',    'rr@acme.example',       '555-0101', 'qualified'),
    ('globex', 'Globex Corporation',    'legal@globex.example',  '555-0200', 'signed'),
    ('globex', 'Hank Scorpio Ventures', 'hank@globex.example',   '555-0201', 'contacted')
ON CONFLICT (tenant_id, name) DO NOTHING;

INSERT INTO public.judgments (tenant_id, case_number, plaintiff_id, debtor_name, principal_amount, status, judgment_date)
SELECT v.tenant_id, v.case_number, p.id, v.debtor_name, v.principal_amount, v.status, v.judgment_date
  FROM (VALUES
        ('acme',   'ACME-2024-001', 'Acme Holdings LLC',     'Wile E. Coyote',  12500.00, 'open',      DATE '2024-03-01'),
        ('acme',   'ACME-2024-002', 'Acme Holdings LLC',     'Elmer Fudd',       3400.50, 'enforcing', DATE '2024-05-17'),
        ('acme',   'ACME-2024-003', 'Road Runner Supply',    'Yosemite Sam',      980.00, 'collected', DATE '2024-07-09'),
        ('globex', 'GLBX-2024-001', 'Globex Corporation',    'Frank Grimes',    45000.00, 'open',      DATE '2024-02-11'),
        ('globex', 'GLBX-2024-002', 'Hank Scorpio Ventures', 'Homer Simpson',    1999.99, 'enforcing', DATE '2024-08-23')
       ) AS v (tenant_id, case_number, plaintiff_name, debtor_name, principal_amount, status, judgment_date)
  JOIN public.plaintiffs p ON p.tenant_id = v.tenant_id AND p.name = v.plaintiff_name
ON CONFLICT (tenant_id, case_number) DO NOTHING;

INSERT INTO public.enforcement_cases (tenant_id, judgment_id, stage)
SELECT j.tenant_id, j.id, CASE j.case_number WHEN 'ACME-2024-002' THEN 'levy' ELSE 'garnishment' END
  FROM public.judgments j
 WHERE j.case_number IN ('ACME-2024-002', 'GLBX-2024-002')
ON CONFLICT (tenant_id, judgment_id) DO NOTHING;

INSERT INTO enforcement.actions (tenant_id, case_id, action_type, status)
SELECT c.tenant_id, c.id, 'bank_levy', 'in_progress'
  FROM public.enforcement_cases c
 WHERE NOT EXISTS (SELECT 1 FROM enforcement.actions a WHERE a.case_id = c.id);

INSERT INTO intake.foil_datasets (tenant_id, file_name, source_system, uploaded_by, status, row_count)
SELECT 'acme', 'acme-2024-q1.csv', 'simplicity', 'seed', 'finalized', 0
 WHERE NOT EXISTS (SELECT 1 FROM intake.foil_datasets WHERE tenant_id = 'acme' AND file_name = 'acme-2024-q1.csv');

INSERT INTO ops.job_queue (job_type, payload)
SELECT 'enrich_judgment', jsonb_build_object('case_number', 'ACME-2024-001')
 WHERE NOT EXISTS (SELECT 1 FROM ops.job_queue WHERE job_type = 'enrich_judgment');

INSERT INTO ops.worker_heartbeats (worker_id, status)
VALUES ('seed-worker', 'alive')
ON CONFLICT (worker_id) DO NOTHING;
