//! The ports' conformance suites, each test run against every adapter so the adapters
//! cannot drift: `store` against Postgres and SQLite, `queue` against apalis-redis and the
//! embedded queue. They drive the library directly, not the binary.

/// The parts of the tests' shared harness (`tests/common/`) used here: each binary declares
/// only the modules it uses whole, so a helper no test uses still warns.
#[path = "../common"]
mod common {
    pub mod databases;
    pub mod fresh_store;
}

mod queue;
mod store;
mod store_webhooks;
