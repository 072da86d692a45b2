//! Connections to either Redis deployment, and running many independent commands.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::mpsc;

use crate::ClusterError;
use crate::redis_backend::options::{RedisMode, RedisOptions};

pub(super) fn unavailable(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Unavailable(e.to_string())
}

/// A command connection to either deployment; both reconnect by themselves.
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
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
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// How to reach the server(s) for new connections (the subscription).
#[derive(Clone)]
pub(super) enum Endpoint {
    Single(redis::Client),
    Cluster(Vec<String>),
}

/// The command connection and the endpoint for `opts`.
pub(super) async fn connect(opts: &RedisOptions) -> Result<(Endpoint, Conn), ClusterError> {
    let timeout = opts.command_timeout * 2;
    Ok(match opts.mode {
        RedisMode::Standalone => {
            let client = redis::Client::open(opts.url.as_str()).map_err(unavailable)?;
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
        RedisMode::Cluster => {
            let seeds: Vec<String> =
                opts.url.split(',').map(|u| u.trim().to_string()).filter(|u| !u.is_empty()).collect();
            let client = cluster_client(&seeds, opts, None)?;
            let conn = tokio::time::timeout(timeout, client.get_async_connection())
                .await
                .map_err(|_| ClusterError::Unavailable("timed out connecting to Redis Cluster".into()))?
                .map_err(unavailable)?;
            (Endpoint::Cluster(seeds), Conn::Cluster(conn))
        }
    })
}

pub(super) fn cluster_client(
    seeds: &[String],
    opts: &RedisOptions,
    push: Option<mpsc::UnboundedSender<redis::PushInfo>>,
) -> Result<redis::cluster::ClusterClient, ClusterError> {
    let mut b = redis::cluster::ClusterClientBuilder::new(seeds.to_vec())
        .use_protocol(redis::ProtocolVersion::RESP3)
        .connection_timeout(opts.command_timeout)
        .response_timeout(opts.command_timeout);
    if let Some(tx) = push {
        b = b.push_sender(tx);
    }
    b.build().map_err(unavailable)
}

/// Runs independent commands: one pipeline on a single server; in cluster mode one
/// request each (their keys live on different shards), a bounded number at once.
pub(super) async fn run_each<T: redis::FromRedisValue>(
    conn: &Conn,
    cmds: Vec<redis::Cmd>,
) -> redis::RedisResult<Vec<T>> {
    match conn {
        Conn::Single(_) => {
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
