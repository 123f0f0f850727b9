-- The marketplace's own tables. Admin changes are audited here; later migrations add the call log and rollups.

CREATE TABLE marketplace_audit_log
(
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz  NOT NULL DEFAULT now(),
    track_id    varchar(64)  NOT NULL,
    actor       varchar(100) NOT NULL,
    action      varchar(100) NOT NULL,
    entity_kind varchar(40)  NOT NULL,
    entity_id   varchar(100) NOT NULL,
    detail      jsonb        NULL
);

CREATE INDEX ix_marketplace_audit_log_entity ON marketplace_audit_log (entity_kind, entity_id, at);
