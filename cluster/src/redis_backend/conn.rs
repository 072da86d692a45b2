//! Connections to either Redis deployment, and running many independent commands.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{AsyncConnectionConfig, IntoConnectionInfo};
use tokio::sync::mpsc;

use crate::ClusterError;
use crate::redis_backend::options::{RedisMode, RedisOptions};

pub(super) fn unavailable(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Unavailable(e.to_string())
}

/// A command connection to any deployment; each reconnects by itself.
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
    Sentinel(SentinelConn),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Sentinel(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Sentinel(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Sentinel(c) => c.get_db(),
        }
    }
}

/// How to reach the server(s) for new connections (the subscription).
#[derive(Clone)]
pub(super) enum Endpoint {
    Single(redis::Client),
    Cluster(Vec<String>),
    /// The primary the sentinels name at the time of each (re)subscription.
    Sentinel(SentinelConn),
}

/// The command connection and the endpoint for `opts`.
pub(super) async fn connect(opts: &RedisOptions) -> Result<(Endpoint, Conn), ClusterError> {
    let timeout = opts.command_timeout * 2;
    Ok(match opts.mode {
        RedisMode::Standalone => {
            let client = standalone_client(&opts.url)?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(opts.command_timeout))
                .set_response_timeout(Some(opts.command_timeout))
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_secs(2));
            let conn = tokio::time::timeout(timeout, ConnectionManager::new_with_config(client.clone(), config))
                .await
                .map_err(|_| ClusterError::Unavailable("timed out connecting to Redis".into()))?
                .map_err(unavailable)?;
            (Endpoint::Single(client), Conn::Single(conn))
        }
        RedisMode::Sentinel => {
            let conn = SentinelConn::new(opts)?;
            // Connect now, so that a wrong address or master name fails the start.
            tokio::time::timeout(timeout, conn.connection())
                .await
                .map_err(|_| ClusterError::Unavailable("timed out connecting to Redis through the sentinels".into()))?
                .map_err(unavailable)?;
            (Endpoint::Sentinel(conn.clone()), Conn::Sentinel(conn))
        }
        RedisMode::Cluster => {
            let seeds = split_urls(&opts.url);
            let client = cluster_client(&seeds, opts, None)?;
            let conn = tokio::time::timeout(timeout, client.get_async_connection())
                .await
                .map_err(|_| ClusterError::Unavailable("timed out connecting to Redis Cluster".into()))?
                .map_err(unavailable)?;
            (Endpoint::Cluster(seeds), Conn::Cluster(conn))
        }
    })
}

/// The TCP settings of every connection to a Redis server: `TCP_NODELAY` on, which
/// redis-rs leaves off. Without it, a command written while an earlier one on the same
/// connection is still unacknowledged waits in the kernel for that acknowledgement
/// (Nagle's algorithm), and the connections here carry overlapping commands: the shared
/// one takes every worker's claims and lookups and the membership's renewals, and a
/// worker's publish connection sends one pipeline per target node at once.
pub(super) fn tcp_settings() -> redis::io::tcp::TcpSettings {
    redis::io::tcp::TcpSettings::default().set_nodelay(true)
}

/// A client for one server at `url`, with [`tcp_settings`].
pub(super) fn standalone_client(url: &str) -> Result<redis::Client, ClusterError> {
    let info = url.into_connection_info().map_err(unavailable)?.set_tcp_settings(tcp_settings());
    redis::Client::open(info).map_err(unavailable)
}

/// The URLs of a comma-separated list.
fn split_urls(urls: &str) -> Vec<String> {
    urls.split(',').map(|u| u.trim().to_string()).filter(|u| !u.is_empty()).collect()
}

pub(super) fn cluster_client(
    seeds: &[String],
    opts: &RedisOptions,
    push: Option<mpsc::UnboundedSender<redis::PushInfo>>,
) -> Result<redis::cluster::ClusterClient, ClusterError> {
    let mut b = redis::cluster::ClusterClientBuilder::new(seeds.to_vec())
        .use_protocol(redis::ProtocolVersion::RESP3)
        .tcp_settings(tcp_settings())
        .connection_timeout(opts.command_timeout)
        .response_timeout(opts.command_timeout);
    if let Some(tx) = push {
        b = b.push_sender(tx);
    }
    b.build().map_err(unavailable)
}

/// A command connection to the current master of a Sentinel-monitored group. It asks the
/// sentinels for the master on first use, and again after a connection error, a timeout
/// or a `READONLY` answer (a failover demoted the server it was talking to); until then
/// every command shares one multiplexed connection.
#[derive(Clone)]
pub(super) struct SentinelConn {
    inner: Arc<SentinelInner>,
}

struct SentinelInner {
    sentinels: tokio::sync::Mutex<SentinelClient>,
    /// The master connection and its generation (a failure on an older one is ignored).
    current: std::sync::Mutex<Option<(u64, MultiplexedConnection)>>,
    generation: AtomicU64,
    config: AsyncConnectionConfig,
    timeout: Duration,
    db: i64,
}

impl SentinelConn {
    fn new(opts: &RedisOptions) -> Result<Self, ClusterError> {
        let urls = split_urls(&opts.url);
        let first = urls.first().ok_or_else(|| unavailable("no sentinel address in redis_url"))?;
        // The master is reached with the credentials and database of the sentinel URLs.
        let info = first.as_str().into_connection_info().map_err(unavailable)?;
        let node = SentinelNodeConnectionInfo::default()
            .set_redis_connection_info(info.redis_settings().clone())
            .set_tcp_settings(tcp_settings());
        let sentinels =
            SentinelClient::build(urls, opts.sentinel_master.clone(), Some(node), SentinelServerType::Master)
                .map_err(unavailable)?;
        Ok(Self {
            inner: Arc::new(SentinelInner {
                sentinels: tokio::sync::Mutex::new(sentinels),
                current: std::sync::Mutex::new(None),
                generation: AtomicU64::new(0),
                config: AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(opts.command_timeout))
                    .set_response_timeout(Some(opts.command_timeout)),
                timeout: opts.command_timeout * 2,
                db: info.redis_settings().db(),
            }),
        })
    }

    /// A client for the current master, as the sentinels name it now (for subscriptions).
    pub(super) async fn master_client(&self) -> redis::RedisResult<redis::Client> {
        let mut sentinels = self.inner.sentinels.lock().await;
        sentinels.async_get_client().await
    }

    async fn connection(&self) -> redis::RedisResult<(u64, MultiplexedConnection)> {
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let mut sentinels = self.inner.sentinels.lock().await;
        if let Some(c) = self.current() {
            return Ok(c); // another command reconnected while this one waited
        }
        let client = tokio::time::timeout(self.inner.timeout, sentinels.async_get_client())
            .await
            .map_err(|_| timed_out("asking the sentinels for the master"))??;
        let conn = client.get_multiplexed_async_connection_with_config(&self.inner.config).await?;
        let generation = self.inner.generation.fetch_add(1, Ordering::Relaxed) + 1;
        *self.inner.current.lock().unwrap_or_else(|p| p.into_inner()) = Some((generation, conn.clone()));
        tracing::info!(master = %client.get_connection_info().addr(), "connected to the Redis master named by the sentinels");
        Ok((generation, conn))
    }

    fn current(&self) -> Option<(u64, MultiplexedConnection)> {
        self.inner.current.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Forgets the connection of `generation` after an error that says it no longer leads
    /// to the master; the next command asks the sentinels again.
    fn failed(&self, generation: u64, e: &redis::RedisError) {
        let stale = e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.code() == Some("READONLY");
        if stale {
            let mut current = self.inner.current.lock().unwrap_or_else(|p| p.into_inner());
            if current.as_ref().is_some_and(|(g, _)| *g == generation) {
                tracing::warn!(error = %e, "Redis master lost; asking the sentinels again");
                *current = None;
            }
        }
    }
}

fn timed_out(what: &str) -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("timed out {what}")))
}

impl redis::aio::ConnectionLike for SentinelConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        Box::pin(async move {
            let (generation, mut conn) = self.connection().await?;
            let result = conn.req_packed_command(cmd).await;
            if let Err(e) = &result {
                self.failed(generation, e);
            }
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        Box::pin(async move {
            let (generation, mut conn) = self.connection().await?;
            let result = conn.req_packed_commands(cmd, offset, count).await;
            if let Err(e) = &result {
                self.failed(generation, e);
            }
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.db
    }
}

impl Conn {
    /// How many of `wanted` keys, hashing anywhere, one command may name: a Redis Cluster
    /// takes only keys of one hash slot per command.
    pub(super) fn keys_per_command(&self, wanted: usize) -> usize {
        match self {
            Conn::Cluster(_) => 1,
            Conn::Single(_) | Conn::Sentinel(_) => wanted.max(1),
        }
    }
}

/// Runs independent commands: one pipeline on a single server; in cluster mode one
/// request each (their keys live on different shards), a bounded number at once.
pub(super) async fn run_each<T: redis::FromRedisValue>(
    conn: &Conn,
    cmds: Vec<redis::Cmd>,
) -> redis::RedisResult<Vec<T>> {
    match conn {
        Conn::Single(_) | Conn::Sentinel(_) => {
            let mut pipe = redis::pipe();
            for c in cmds {
                pipe.add_command(c);
            }
            let mut conn = conn.clone();
            pipe.query_async(&mut conn).await
        }
        Conn::Cluster(_) => {
            let mut out = Vec::with_capacity(cmds.len());
            for chunk in cmds.chunks(64) {
                let futs = chunk.iter().map(|c| {
                    let mut conn = conn.clone();
                    async move { c.query_async::<T>(&mut conn).await }
                });
                for r in futures_util::future::join_all(futs).await {
                    out.push(r?);
                }
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_servers_connections_send_without_delay_and_keep_the_urls_parts() {
        let client = standalone_client("redis://user:secret@redis.example:6380/3").expect("client");
        let info = client.get_connection_info();
        assert!(info.tcp_settings().nodelay());
        assert_eq!(info.addr().to_string(), "redis.example:6380");
        assert_eq!(info.redis_settings().db(), 3);
        assert_eq!(info.redis_settings().username(), Some("user"));
        assert!(tcp_settings().nodelay());
    }

    #[test]
    fn a_url_that_is_not_redis_is_refused() {
        assert!(matches!(standalone_client("http://redis.example/"), Err(ClusterError::Unavailable(_))));
    }
}
