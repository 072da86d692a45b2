//! Settings of the Redis backend.

use std::time::Duration;

use crate::redis_backend::link::LinkOptions;

/// How Redis is deployed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedisMode {
    /// One server (or a primary with replicas behind one address): `PUBLISH`/`SUBSCRIBE`.
    #[default]
    Standalone,
    /// Redis Cluster: keys spread over shards, the bus on sharded pub/sub
    /// (`SPUBLISH`/`SSUBSCRIBE`, RESP3).
    Cluster,
    /// A primary with replicas watched by Redis Sentinel: the URLs name the sentinels, which
    /// name the primary; after a failover the nodes follow them to the promoted replica.
    Sentinel,
}

/// Settings of the Redis backend.
#[derive(Clone, Debug)]
pub struct RedisOptions {
    /// `redis://host:port/db` (credentials allowed in the URL); in cluster mode a
    /// comma-separated list of seed nodes; in sentinel mode a comma-separated list of
    /// sentinels, whose credentials and database are also used for the primary.
    pub url: String,
    pub mode: RedisMode,
    /// The name the sentinels monitor the primary under (sentinel mode).
    pub sentinel_master: String,
    /// A node not seen for this long is dead.
    pub node_lease: Duration,
    /// How often a node renews its lease and refreshes its view of live nodes.
    pub membership_interval: Duration,
    /// Expiry of session ownership keys (renewed by their owner at a third of it).
    pub session_key_ttl: Duration,
    /// How long a looked-up remote owner is trusted before it is looked up again (in the
    /// background while traffic to it flows; one unused for twice this is forgotten).
    pub owner_cache_ttl: Duration,
    /// Messages received and not yet handled by the router.
    pub inbox_capacity: usize,
    /// Messages waiting to be published.
    pub publish_queue: usize,
    /// Timeout of one Redis command.
    pub command_timeout: Duration,
    /// Direct links between nodes for the bus's messages; none: all of them over pub/sub.
    pub links: Option<LinkOptions>,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379/".into(),
            mode: RedisMode::Standalone,
            sentinel_master: "mymaster".into(),
            node_lease: Duration::from_secs(10),
            membership_interval: Duration::from_secs(1),
            session_key_ttl: Duration::from_secs(3600),
            owner_cache_ttl: Duration::from_secs(30),
            inbox_capacity: 65_536,
            publish_queue: 65_536,
            command_timeout: Duration::from_secs(2),
            links: None,
        }
    }
}
