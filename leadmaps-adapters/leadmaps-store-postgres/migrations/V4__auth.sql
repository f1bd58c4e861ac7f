-- V4: identity tables for authentication: TOTP factors, magic links and sessions.
--
-- Runs as {{owner_role}}, like V1 to V3. These tables are not customer data: they carry no
-- workspace_id (a user or staff member is not a tenant, and a session or link is looked up before
-- anyone is authenticated, by its selector alone), so they have no row-level security. The app role
-- gets exactly the privileges the store's methods need, the lookup role nothing, PUBLIC nothing,
-- nobody TRUNCATE. Secrets never reach these tables in the clear: the TOTP seed is sealed by the
-- caller, links and sessions store only an HMAC of their verifier (a dump cannot be replayed).

-- One factor per subject. Steps are u64 in the API and Unix time / 30 in practice; bigint holds them.
CREATE TABLE leadmaps.totp_factors (
    subject_kind text NOT NULL CHECK (subject_kind IN ('user', 'staff')),
    subject_id uuid NOT NULL,
    sealed_seed bytea NOT NULL CHECK (octet_length(sealed_seed) <= 65536),
    last_step bigint CHECK (last_step >= 0),
    failures integer NOT NULL DEFAULT 0 CHECK (failures >= 0),
    locked_until timestamptz,
    PRIMARY KEY (subject_kind, subject_id)
);

-- Magic links live ten minutes and are consumed by one DELETE ... RETURNING.
CREATE TABLE leadmaps.magic_links (
    selector text COLLATE "C" PRIMARY KEY CHECK (octet_length(selector) BETWEEN 1 AND 128),
    digest_key_id bigint NOT NULL CHECK (digest_key_id BETWEEN 0 AND 4294967295),
    digest_mac bytea NOT NULL CHECK (octet_length(digest_mac) = 32),
    realm text NOT NULL CHECK (realm IN ('customer', 'staff')),
    email text COLLATE "C" NOT NULL CHECK (octet_length(email) BETWEEN 3 AND 254),
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);
-- Rate limits count the links sent to an address since a given time.
CREATE INDEX magic_links_email_created ON leadmaps.magic_links (email, created_at);

CREATE TABLE leadmaps.sessions (
    selector text COLLATE "C" PRIMARY KEY CHECK (octet_length(selector) BETWEEN 1 AND 128),
    digest_key_id bigint NOT NULL CHECK (digest_key_id BETWEEN 0 AND 4294967295),
    digest_mac bytea NOT NULL CHECK (octet_length(digest_mac) = 32),
    subject_kind text NOT NULL CHECK (subject_kind IN ('user', 'staff')),
    subject_id uuid NOT NULL,
    second_factor boolean NOT NULL,
    created_at timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL
);
-- "Sign out everywhere" deletes a subject's sessions.
CREATE INDEX sessions_subject ON leadmaps.sessions (subject_kind, subject_id);

REVOKE ALL ON leadmaps.totp_factors, leadmaps.magic_links, leadmaps.sessions FROM PUBLIC;
REVOKE TRUNCATE ON leadmaps.totp_factors, leadmaps.magic_links, leadmaps.sessions
    FROM PUBLIC, {{app_role}}, {{lookup_role}};

-- Factors are enrolled (insert, or replace every column but the key) and then only their step,
-- failure count and lock change; the app role never deletes one.
GRANT SELECT, INSERT ON leadmaps.totp_factors TO {{app_role}};
GRANT UPDATE (sealed_seed, last_step, failures, locked_until) ON leadmaps.totp_factors TO {{app_role}};
-- Links are inserted, read, and deleted when taken; never updated.
GRANT SELECT, INSERT, DELETE ON leadmaps.magic_links TO {{app_role}};
-- Sessions are inserted, read, touched (last_seen_at only) and deleted.
GRANT SELECT, INSERT, DELETE ON leadmaps.sessions TO {{app_role}};
GRANT UPDATE (last_seen_at) ON leadmaps.sessions TO {{app_role}};
