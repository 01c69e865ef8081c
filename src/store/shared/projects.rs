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
                         RETURNING id, name, remote_url, default_branch, created_at",
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
                        "SELECT id, name, remote_url, default_branch, created_at FROM projects \
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
                        "SELECT id, name, remote_url, default_branch, created_at FROM projects \
                         WHERE id = $1",
                    )
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?
                    .map(|r| project_from_row(&r))
                    .transpose()?
                    .ok_or_else(|| StoreError::UnknownProject(id.to_string()))
                }

                pub async fn list_projects(&self) -> Result<Vec<Project>, StoreError> {
                    let rows = sqlx::query(
                        "SELECT id, name, remote_url, default_branch, created_at FROM projects \
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
