//! What a store operation can fail with, in the user's terms (which name, which agent,
//! which account), and how a caller tells a passing database failure from a lasting one.

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("an agent named '{0}' already exists")]
    NameTaken(String),
    #[error(
        "idempotency_key '{0}' was already used for a different request; send the same \
         request to get its agent, or use a new key"
    )]
    IdempotencyKeyReused(String),
    /// A resume the agent cannot take now; says why.
    #[error("{0}")]
    ResumeRefused(String),
    #[error("a project named '{0}' already exists")]
    ProjectExists(String),
    #[error("unknown project '{0}'")]
    UnknownProject(String),
    #[error(
        "project '{name}' has {live} agent(s) pending or running; stop them first \
         (project remove --force stops them)"
    )]
    ProjectBusy { name: String, live: i64 },
    /// A list's filters or cursor the store cannot use; says which.
    #[error("{0}")]
    InvalidQuery(String),
    #[error("no agent with id or name '{0}'")]
    UnknownAgent(String),
    #[error("an account labelled '{0}' already exists")]
    AccountExists(String),
    #[error("no account '{0}'")]
    UnknownAccount(String),
    #[error("no webhook '{0}'")]
    UnknownWebhook(String),
    #[error("no webhook delivery '{0}'")]
    UnknownDelivery(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A database error shared by several callers (a batched write that failed as one).
    #[error("database: {0}")]
    Shared(String),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database.url '{0}' is neither postgres://… nor sqlite:…")]
    UnsupportedUrl(String),
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
}

impl StoreError {
    /// The database failed, not the caller (a name taken, an agent unknown): what the
    /// backend-error metric counts.
    pub fn is_database_failure(&self) -> bool {
        matches!(self, Self::Database(_) | Self::Shared(_) | Self::Migrate(_))
    }

    /// True when the same operation may well succeed if tried again soon: the connection
    /// broke or could not be had, the server is restarting, or a lock or serialization
    /// conflict. A retry is safe for every fenced or idempotent operation.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Database(e) => match e {
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed => true,
                sqlx::Error::Database(db) => db.code().is_some_and(|code| {
                    // Postgres: connection exceptions, shutdown / starting up, too many
                    // connections, serialization failure, deadlock, lock timeout;
                    // SQLite: busy and locked.
                    code.starts_with("08")
                        || code.starts_with("57P")
                        || matches!(&*code, "53300" | "40001" | "40P01" | "55P03")
                        || matches!(&*code, "5" | "6" | "517" | "262")
                }),
                _ => false,
            },
            Self::Shared(_) => true,
            _ => false,
        }
    }

    /// The store refused the data itself (a value it cannot hold, or one too large), not
    /// the connection or the state: writing the same again fails the same way.
    pub fn rejects_content(&self) -> bool {
        let StoreError::Database(sqlx::Error::Database(e)) = self else {
            return false;
        };
        // Postgres: class 22 (data exception) and 54 (program limit exceeded); SQLite:
        // SQLITE_TOOBIG.
        e.code()
            .is_some_and(|code| code.starts_with("22") || code.starts_with("54") || code == "18")
    }
}
