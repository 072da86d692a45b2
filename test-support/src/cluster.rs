//! Several relay nodes in one process sharing PostgreSQL and Redis, as a cluster would.

use noc_app::Config;
use noc_app::config::SecretString;

use crate::{TestRelay, TestSchema};

/// The Redis the cluster tests use: `NOC_TEST_REDIS_URL`, default the local server.
pub fn test_redis_url() -> String {
    std::env::var("NOC_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_string())
}

/// Gives a node a direct link listener on a free loopback port and the cluster's link
/// key: frames between nodes that all have it go over links instead of Redis pub/sub.
pub fn with_links(c: &mut Config) {
    c.cluster.link_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    c.cluster.link_key = Some(SecretString::new("the test cluster's link key, 32+ bytes"));
}

/// `n` nodes on one PostgreSQL schema and one Redis, with short leases.
pub struct TestCluster {
    pub nodes: Vec<TestRelay>,
    pub schema: Option<TestSchema>,
}

impl TestCluster {
    /// Starts `n` nodes; `tweak(i, config)` adjusts node `i` (e.g. route it through a proxy).
    pub async fn start(n: usize, tweak: impl Fn(usize, &mut Config)) -> Self {
        let schema = TestSchema::create().await;
        let pg = schema.url(None);
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let pg = pg.clone();
            let node = TestRelay::start_with(|c| {
                c.postgres_url = Some(SecretString::new(pg));
                c.redis_url = Some(SecretString::new(test_redis_url()));
                c.cluster.node_lease_seconds = 3;
                c.cluster.membership_interval_ms = 200;
                tweak(i, c);
            });
            nodes.push(node);
        }
        Self { nodes, schema: Some(schema) }
    }

    /// Stops the nodes and drops the schema.
    pub async fn stop(mut self) {
        self.nodes.clear();
        if let Some(schema) = self.schema.take() {
            schema.drop_schema().await;
        }
    }
}
