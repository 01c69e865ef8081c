//! Projects (the repositories agents work on): the same SQL in both dialects.

/// The project operations, expanded in `postgres/projects.rs` and `sqlite/projects.rs`.
macro_rules! shared_projects {
    ($store:ty) => {
        const _: () = {
            use uuid::Uuid;

            use crate::domain::Project;
            use crate::store::StoreError;
            use crate::store::rows::project_from_row;

            impl $store {
                pub async fn add_project(
                    &self,
                    name: &str,
                    remote_url: &str,
                    default_branch: &str,
                ) -> Result<Project, StoreError> {
                    let row = sqlx::query(
                        "INSERT INTO projects (id, name, remote_url, default_branch) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING \
                         RETURNING id, name, remote_url, default_branch, created_at, daily_cost_usd, max_concurrent",
                    )
                    .bind(Uuid::now_v7())
                    .bind(name)
                    .bind(remote_url)
                    .bind(default_branch)
                    .fetch_optional(&self.pool)
                    .await?;
                    row.map(|r| project_from_row(&r))
                        .transpose()?
                        .ok_or_else(|| StoreError::ProjectExists(name.to_string()))
                }

                pub async fn project(&self, name: &str) -> Result<Project, StoreError> {
                    sqlx::query(
                        "SELECT id, name, remote_url, default_branch, created_at, daily_cost_usd, max_concurrent FROM projects \
                         WHERE name = $1",
                    )
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await?
                    .map(|r| project_from_row(&r))
                    .transpose()?
                    .ok_or_else(|| StoreError::UnknownProject(name.to_string()))
                }

                pub async fn project_by_id(&self, id: Uuid) -> Result<Project, StoreError> {
                    sqlx::query(
                        "SELECT id, name, remote_url, default_branch, created_at, daily_cost_usd, max_concurrent FROM projects \
                         WHERE id = $1",
                    )
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?
                    .map(|r| project_from_row(&r))
                    .transpose()?
                    .ok_or_else(|| StoreError::UnknownProject(id.to_string()))
                }

                /// Changes a project's remote and/or default branch (None: kept).
                pub async fn update_project(
                    &self,
                    name: &str,
                    remote_url: Option<&str>,
                    default_branch: Option<&str>,
                ) -> Result<Project, StoreError> {
                    sqlx::query(
                        "UPDATE projects SET \
                         remote_url = COALESCE(CAST($2 AS TEXT), remote_url), \
                         default_branch = COALESCE(CAST($3 AS TEXT), default_branch) \
                         WHERE name = $1 \
                         RETURNING id, name, remote_url, default_branch, created_at, daily_cost_usd, max_concurrent",
                    )
                    .bind(name)
                    .bind(remote_url)
                    .bind(default_branch)
                    .fetch_optional(&self.pool)
                    .await?
                    .map(|r| project_from_row(&r))
                    .transpose()?
                    .ok_or_else(|| StoreError::UnknownProject(name.to_string()))
                }

                /// Sets (or with None, removes) a project's daily budget.
                pub async fn set_project_daily_budget(
                    &self,
                    name: &str,
                    daily_cost_usd: Option<f64>,
                ) -> Result<Project, StoreError> {
                    sqlx::query(
                        "UPDATE projects SET daily_cost_usd = $2 WHERE name = $1 \
                         RETURNING id, name, remote_url, default_branch, created_at, daily_cost_usd, max_concurrent",
                    )
                    .bind(name)
                    .bind(daily_cost_usd)
                    .fetch_optional(&self.pool)
                    .await?
                    .map(|r| project_from_row(&r))
                    .transpose()?
                    .ok_or_else(|| StoreError::UnknownProject(name.to_string()))
                }

                /// Sets (or with None, removes) a project's cap on its agents running at once.
                pub async fn set_project_max_concurrent(
                    &self,
                    name: &str,
                    max_concurrent: Option<i32>,
                ) -> Result<Project, StoreError> {
                    sqlx::query(
                        "UPDATE projects SET max_concurrent = $2 WHERE name = $1 \
                         RETURNING id, name, remote_url, default_branch, created_at, \
                         daily_cost_usd, max_concurrent",
                    )
                    .bind(name)
                    .bind(max_concurrent)
                    .fetch_optional(&self.pool)
                    .await?
                    .map(|r| project_from_row(&r))
                    .transpose()?
                    .ok_or_else(|| StoreError::UnknownProject(name.to_string()))
                }

                /// Removes a project with the records of its agents (events, requests,
                /// agents), in one transaction; refused (`ProjectBusy`, nothing removed)
                /// while any of its agents is pending, starting or running. Returns how
                /// many agents' records went.
                pub async fn remove_project(&self, name: &str) -> Result<i64, StoreError> {
                    let mut tx = self.begin_write().await?;
                    let id: Uuid = sqlx::query_scalar("SELECT id FROM projects WHERE name = $1")
                        .bind(name)
                        .fetch_optional(&mut *tx)
                        .await?
                        .ok_or_else(|| StoreError::UnknownProject(name.to_string()))?;
                    let live: i64 = sqlx::query_scalar(
                        "SELECT COUNT(*) FROM agents WHERE project_id = $1 \
                         AND status IN ('pending', 'starting', 'running')",
                    )
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
                    if live > 0 {
                        return Err(StoreError::ProjectBusy {
                            name: name.to_string(),
                            live,
                        });
                    }
                    let mut agents = 0;
                    for sql in [
                        "DELETE FROM agent_events WHERE agent_id IN \
                         (SELECT id FROM agents WHERE project_id = $1)",
                        "DELETE FROM requests WHERE agent_id IN \
                         (SELECT id FROM agents WHERE project_id = $1)",
                        "DELETE FROM agents WHERE project_id = $1",
                        "DELETE FROM projects WHERE id = $1",
                    ] {
                        let done = sqlx::query(sql).bind(id).execute(&mut *tx).await?;
                        if sql.starts_with("DELETE FROM agents") {
                            agents = done.rows_affected() as i64;
                        }
                    }
                    tx.commit().await?;
                    Ok(agents)
                }

                pub async fn list_projects(&self) -> Result<Vec<Project>, StoreError> {
                    let rows = sqlx::query(
                        "SELECT id, name, remote_url, default_branch, created_at, daily_cost_usd, max_concurrent FROM projects \
                         ORDER BY name",
                    )
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter().map(project_from_row).collect()
                }
            }
        };
    };
}
