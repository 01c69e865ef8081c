-- The commit an agent's checkout started from (recorded when the worker creates it) and the
-- commit its branch was last pushed at (recorded when a run's publish pushed one): the two
-- ends of the agent's diff, which the API computes from the project's remote.
ALTER TABLE agents ADD COLUMN base_commit TEXT;
ALTER TABLE agents ADD COLUMN pushed_commit TEXT;
