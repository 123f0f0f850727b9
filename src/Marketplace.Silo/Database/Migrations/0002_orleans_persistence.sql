-- Orleans grain state on PostgreSQL, written for this project.
-- The ADO.NET persistence provider calls these four queries by key with parameters @GrainIdHash, @GrainIdN0,
-- @GrainIdN1, @GrainTypeHash, @GrainTypeString, @GrainIdExtensionString, @ServiceId, @GrainStateVersion and
-- @PayloadBinary, and reads PayloadBinary, Version and NewGrainStateVersion by name. The version is the ETag:
-- a write succeeds only against the version it read; answering the unchanged version tells the provider the
-- write lost a race (it then raises InconsistentStateException).
-- A grain without a key extension stores '' so the whole identity can be the primary key.

CREATE TABLE orleans_grain_state
(
    service_id         varchar(150) NOT NULL,
    grain_type_hash    integer      NOT NULL,
    grain_id_hash      integer      NOT NULL,
    grain_id_n0        bigint       NOT NULL,
    grain_id_n1        bigint       NOT NULL,
    grain_type         varchar(512) NOT NULL,
    grain_id_extension varchar(512) NOT NULL DEFAULT '',
    payload            bytea        NULL,
    version            integer      NOT NULL,
    modified_at        timestamptz  NOT NULL DEFAULT now(),
    PRIMARY KEY (service_id, grain_type_hash, grain_id_hash, grain_id_n0, grain_id_n1, grain_type, grain_id_extension)
);

INSERT INTO OrleansQuery (QueryKey, QueryText) VALUES
('ReadFromStorageKey', $q$
SELECT payload AS PayloadBinary,
       version AS Version
  FROM orleans_grain_state
 WHERE service_id = @ServiceId
   AND grain_type_hash = @GrainTypeHash
   AND grain_id_hash = @GrainIdHash
   AND grain_id_n0 = @GrainIdN0
   AND grain_id_n1 = @GrainIdN1
   AND grain_type = @GrainTypeString
   AND grain_id_extension = coalesce(@GrainIdExtensionString::varchar, '');
$q$),

-- Update when the caller holds a version, insert when it holds none; exactly one row comes back either way.
('WriteToStorageKey', $q$
WITH updated AS (
    UPDATE orleans_grain_state
       SET payload = @PayloadBinary, version = version + 1, modified_at = now()
     WHERE service_id = @ServiceId
       AND grain_type_hash = @GrainTypeHash
       AND grain_id_hash = @GrainIdHash
       AND grain_id_n0 = @GrainIdN0
       AND grain_id_n1 = @GrainIdN1
       AND grain_type = @GrainTypeString
       AND grain_id_extension = coalesce(@GrainIdExtensionString::varchar, '')
       AND @GrainStateVersion::integer IS NOT NULL
       AND version = @GrainStateVersion::integer
    RETURNING version),
inserted AS (
    INSERT INTO orleans_grain_state (service_id, grain_type_hash, grain_id_hash, grain_id_n0, grain_id_n1,
                                     grain_type, grain_id_extension, payload, version)
    SELECT @ServiceId, @GrainTypeHash, @GrainIdHash, @GrainIdN0, @GrainIdN1,
           @GrainTypeString, coalesce(@GrainIdExtensionString::varchar, ''), @PayloadBinary, 1
     WHERE @GrainStateVersion::integer IS NULL
    ON CONFLICT DO NOTHING
    RETURNING version)
SELECT coalesce((SELECT version FROM updated), (SELECT version FROM inserted), @GrainStateVersion::integer)
       AS NewGrainStateVersion;
$q$),

('ClearStorageKey', $q$
UPDATE orleans_grain_state
   SET payload = NULL, version = version + 1, modified_at = now()
 WHERE service_id = @ServiceId
   AND grain_type_hash = @GrainTypeHash
   AND grain_id_hash = @GrainIdHash
   AND grain_id_n0 = @GrainIdN0
   AND grain_id_n1 = @GrainIdN1
   AND grain_type = @GrainTypeString
   AND grain_id_extension = coalesce(@GrainIdExtensionString::varchar, '')
   AND version = @GrainStateVersion::integer
RETURNING version AS NewGrainStateVersion;
$q$),

('DeleteStorageKey', $q$
DELETE FROM orleans_grain_state
 WHERE service_id = @ServiceId
   AND grain_type_hash = @GrainTypeHash
   AND grain_id_hash = @GrainIdHash
   AND grain_id_n0 = @GrainIdN0
   AND grain_id_n1 = @GrainIdN1
   AND grain_type = @GrainTypeString
   AND grain_id_extension = coalesce(@GrainIdExtensionString::varchar, '')
   AND version = @GrainStateVersion::integer
RETURNING version + 1 AS NewGrainStateVersion;
$q$);
