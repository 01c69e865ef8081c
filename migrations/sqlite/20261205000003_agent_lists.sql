-- Lists of agents are read newest first, filtered by status, project or task id and paged
-- by (created_at, id): indexes in that order answer a page without sorting the table. A
-- name prefix (GLOB 'p*') is answered by the index on names.
CREATE INDEX agents_created_idx ON agents (created_at DESC, id DESC);
CREATE INDEX agents_status_created_idx ON agents (status, created_at DESC, id DESC);
CREATE INDEX agents_project_created_idx ON agents (project_id, created_at DESC, id DESC);
CREATE INDEX agents_task_created_idx ON agents (task_id, created_at DESC, id DESC);
