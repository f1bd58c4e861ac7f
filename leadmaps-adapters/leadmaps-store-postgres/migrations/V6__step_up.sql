-- V6: staff step-up grants: one grant buys one use of one sensitive action until it expires.
--
-- Runs as {{owner_role}}, like V1 to V5. Identity data like the V4 tables: a grant belongs to a
-- staff member, who is no tenant, so there is no workspace_id and no row-level security; the gate
-- is privileges. The app role may insert a grant, read grants and delete one when it is taken;
-- never update one (a grant cannot be extended or moved to another action or person). The lookup
-- role gets nothing, PUBLIC nothing, nobody but the owner TRUNCATE.

CREATE TABLE leadmaps.step_up_grants (
    -- Several live grants of one action may coexist; each is taken once, by its id.
    id uuid PRIMARY KEY,
    staff_id uuid NOT NULL,
    -- SensitiveAction::as_str names.
    action text COLLATE "C" NOT NULL CHECK (octet_length(action) BETWEEN 1 AND 64),
    expires_at timestamptz NOT NULL
);
-- take_step_up finds the live grant of a staff member and action that expires first.
CREATE INDEX step_up_grants_staff_action_expires
    ON leadmaps.step_up_grants (staff_id, action, expires_at);

REVOKE ALL ON leadmaps.step_up_grants FROM PUBLIC;
REVOKE TRUNCATE ON leadmaps.step_up_grants FROM PUBLIC, {{app_role}}, {{lookup_role}};

-- Granted (insert), found (select) and consumed (delete); never updated.
GRANT SELECT, INSERT, DELETE ON leadmaps.step_up_grants TO {{app_role}};
