-- One row: the global policy revision (bumped by every change) and document settings.
CREATE TABLE policy_state (
    id integer PRIMARY KEY CHECK (id = 1),
    revision bigint NOT NULL,
    default_action text NOT NULL DEFAULT 'allow' CHECK (default_action IN ('allow', 'deny')),
    anonymous_clients jsonb
);
INSERT INTO policy_state (id, revision) VALUES (1, 0);

CREATE TABLE users (
    id bigserial PRIMARY KEY,
    name text NOT NULL UNIQUE,
    password_hash text NOT NULL,
    enabled boolean NOT NULL DEFAULT true,
    max_tunnels integer CHECK (max_tunnels > 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Ordered rules; user_id NULL means global.
CREATE TABLE acl_rules (
    id bigserial PRIMARY KEY,
    user_id bigint REFERENCES users (id) ON DELETE CASCADE,
    position integer NOT NULL,
    rule jsonb NOT NULL
);
CREATE INDEX acl_rules_scope ON acl_rules (user_id, position);

CREATE TABLE api_keys (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    role text NOT NULL CHECK (role IN ('admin', 'reader')),
    key_hash bytea NOT NULL UNIQUE,
    prefix text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

-- Written in the same transaction as the change; the publisher sends and marks rows.
CREATE TABLE outbox (
    revision bigint PRIMARY KEY,
    event jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at timestamptz
);
CREATE INDEX outbox_unsent ON outbox (revision) WHERE sent_at IS NULL;

CREATE TABLE audit_log (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    actor text NOT NULL,
    action text NOT NULL,
    target text NOT NULL,
    revision bigint,
    details jsonb NOT NULL DEFAULT '{}'
);
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END
$$;
CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
