//! The lists callers page through — agents, projects, workers — newest first, one page at a
//! time. Agents are filtered and paged in the store (there may be very many); projects
//! and workers stay few, so they are read whole and paged here.

use super::{Fleet, FleetError, checks, shown};
use crate::domain::{Agent, Cursor, Page, PageRequest, Project, WorkerInfo};
use crate::store::AgentQuery;

impl Fleet {
    /// One page of the agents `query` selects; a filter holding a NUL is refused, naming
    /// it.
    pub async fn list_agents(&self, query: &AgentQuery) -> Result<Page<Agent>, FleetError> {
        for (field, value) in [
            ("project", &query.project),
            ("provider", &query.provider),
            ("task_id", &query.task_id),
            ("name", &query.name_prefix),
            ("search", &query.search),
        ] {
            if let Some(value) = value {
                checks::no_nul(field, value)?;
            }
        }
        Ok(self.store.list_agents(query).await?)
    }

    /// Every agent `query` selects, read page by page (its own page size is the most a
    /// page holds).
    pub async fn all_agents(&self, mut query: AgentQuery) -> Result<Vec<Agent>, FleetError> {
        query.page = PageRequest::all();
        let mut agents = Vec::new();
        loop {
            let page = self.list_agents(&query).await?;
            agents.extend(page.items);
            match page.next_cursor {
                Some(next) => {
                    query.page.after = Some(Cursor::decode(&next).map_err(FleetError::Invalid)?)
                }
                None => return Ok(agents),
            }
        }
    }

    /// One page of the projects as callers see them (see [`shown`]), newest first.
    pub async fn list_projects(&self, page: &PageRequest) -> Result<Page<Project>, FleetError> {
        let projects = self.all_projects().await?;
        Ok(Page::from_all(projects, page, |p: &Project| {
            Cursor::new(p.created_at, p.id)
        }))
    }

    /// Every project as callers see it, newest first.
    pub async fn all_projects(&self) -> Result<Vec<Project>, FleetError> {
        let mut projects: Vec<_> = self
            .store
            .list_projects()
            .await?
            .into_iter()
            .map(shown)
            .collect();
        projects.sort_by_key(|p| std::cmp::Reverse((p.created_at, p.id)));
        Ok(projects)
    }

    /// One page of the workers, newest first: live ones and those that ended in the last
    /// ten minutes, or every one with `all`.
    pub async fn list_workers(
        &self,
        all: bool,
        page: &PageRequest,
    ) -> Result<Page<WorkerInfo>, FleetError> {
        let mut workers = self.store.list_workers().await?;
        if !all {
            workers.retain(WorkerInfo::recently_seen);
        }
        Ok(Page::from_all(workers, page, |w: &WorkerInfo| {
            Cursor::new(w.started_at, &w.id)
        }))
    }
}
