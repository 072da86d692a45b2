//! The in-process cluster: one hub, any number of nodes in the same process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::mpsc::error::TrySendError;

use crate::{
    BusMessage, Cluster, ClusterError, Inbox, InboxSender, NodeId, NodeLoad, Owner, SessionCounts, SessionKey,
    ShardedMap, inbox,
};

/// Shared state of an in-process cluster: the ownership table and every node's inbox.
#[derive(Default)]
pub struct MemoryHub {
    owners: ShardedMap<SessionKey, NodeId>,
    inboxes: Mutex<HashMap<NodeId, InboxSender>>,
    loads: Mutex<HashMap<NodeId, SessionCounts>>,
}

impl MemoryHub {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Joins a node with an inbox of `inbox_capacity` messages.
    pub fn join(self: &Arc<Self>, node: NodeId, inbox_capacity: usize) -> MemoryCluster {
        let (tx, rx) = inbox(inbox_capacity);
        self.inboxes.lock().unwrap_or_else(|p| p.into_inner()).insert(node.clone(), tx);
        MemoryCluster { hub: self.clone(), node, inbox: Mutex::new(Some(rx)) }
    }

    /// Removes a node as if it died: its inbox and every session it owned disappear.
    pub fn remove_node(&self, node: &NodeId) {
        self.inboxes.lock().unwrap_or_else(|p| p.into_inner()).remove(node);
        self.loads.lock().unwrap_or_else(|p| p.into_inner()).remove(node);
        self.owners.retain(|_, owner| owner != node);
    }
}

/// One node's handle on a [`MemoryHub`].
pub struct MemoryCluster {
    hub: Arc<MemoryHub>,
    node: NodeId,
    inbox: Mutex<Option<Inbox>>,
}

impl MemoryCluster {
    /// A hub with this node alone: the single-node default.
    pub fn single(node: NodeId, inbox_capacity: usize) -> Self {
        MemoryHub::new().join(node, inbox_capacity)
    }
}

#[async_trait]
impl Cluster for MemoryCluster {
    fn node_id(&self) -> &NodeId {
        &self.node
    }

    async fn claim(&self, key: SessionKey) -> Result<Option<NodeId>, ClusterError> {
        let prev = self.hub.owners.insert(key, self.node.clone());
        Ok(prev.filter(|p| *p != self.node))
    }

    fn release(&self, key: SessionKey) {
        self.hub.owners.remove_if(&key, |owner| *owner == self.node);
    }

    fn report_load(&self, devices: u64, ves: u64) {
        let counts = SessionCounts { devices, ves, reported_at_ms: noc_protocol::clock::unix_ms_i64() };
        self.hub.loads.lock().unwrap_or_else(|p| p.into_inner()).insert(self.node.clone(), counts);
    }

    async fn node_loads(&self) -> Result<Vec<NodeLoad>, ClusterError> {
        let mut nodes: Vec<NodeId> =
            self.hub.inboxes.lock().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect();
        nodes.sort();
        let loads = self.hub.loads.lock().unwrap_or_else(|p| p.into_inner());
        Ok(nodes.into_iter().map(|node| NodeLoad { sessions: loads.get(&node).copied(), node }).collect())
    }

    fn owner(&self, key: &SessionKey) -> Owner {
        match self.hub.owners.with(key, |o| o.cloned()) {
            Some(n) => Owner::Node(n),
            None => Owner::Nobody,
        }
    }

    async fn lookup(&self, key: SessionKey) -> Result<Option<NodeId>, ClusterError> {
        Ok(self.hub.owners.with(&key, |o| o.cloned()))
    }

    fn forget(&self, _key: &SessionKey) {}

    fn publish(&self, node: &NodeId, msg: BusMessage) -> Result<(), ClusterError> {
        let tx = self.hub.inboxes.lock().unwrap_or_else(|p| p.into_inner()).get(node).cloned();
        let tx = tx.ok_or_else(|| ClusterError::NodeUnreachable(node.clone()))?;
        tx.try_send(msg).map_err(|e| match e {
            TrySendError::Full(_) => ClusterError::InboxFull(node.clone()),
            TrySendError::Closed(_) => ClusterError::NodeUnreachable(node.clone()),
        })
    }

    fn take_inbox(&self) -> Option<Inbox> {
        self.inbox.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn healthy(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DeviceItem;

    #[tokio::test]
    async fn every_live_node_is_listed_with_its_last_report() {
        let hub = MemoryHub::new();
        let (a, b) = (hub.join(NodeId::new("a"), 8), hub.join(NodeId::new("b"), 8));
        a.report_load(3, 1);
        let loads = b.node_loads().await.expect("loads");
        assert_eq!(loads.len(), 2);
        assert_eq!(loads[0].sessions.map(|s| (s.devices, s.ves)), Some((3, 1)));
        assert_eq!(loads[1].sessions, None, "b reported nothing yet");
        hub.remove_node(&NodeId::new("a"));
        assert_eq!(b.node_loads().await.expect("loads").len(), 1, "a dead node is gone");
    }
    use noc_protocol::{DeviceId, VesId};

    #[tokio::test]
    async fn claims_move_ownership_and_report_takeover() {
        let hub = MemoryHub::new();
        let a = hub.join(NodeId::new("a"), 8);
        let b = hub.join(NodeId::new("b"), 8);
        let key = SessionKey::Device(DeviceId::random());
        assert_eq!(a.claim(key).await.expect("claim"), None);
        assert_eq!(a.claim(key).await.expect("reclaim"), None, "own claim is not a takeover");
        assert_eq!(b.claim(key).await.expect("claim"), Some(NodeId::new("a")));
        assert_eq!(a.owner(&key), Owner::Node(NodeId::new("b")));
        a.release(key);
        assert_eq!(a.owner(&key), Owner::Node(NodeId::new("b")), "a stale release leaves the new owner");
        b.release(key);
        assert_eq!(a.owner(&key), Owner::Nobody);
    }

    #[tokio::test]
    async fn publish_reaches_the_node_inbox() {
        let hub = MemoryHub::new();
        let a = hub.join(NodeId::new("a"), 1);
        let b = hub.join(NodeId::new("b"), 1);
        let mut inbox = b.take_inbox().expect("inbox");
        assert!(b.take_inbox().is_none());
        let msg = BusMessage::ToDevice { device_id: DeviceId::random(), item: DeviceItem::Ack { frame_id: 1 } };
        a.publish(&NodeId::new("b"), msg.clone()).expect("publish");
        assert!(matches!(a.publish(&NodeId::new("b"), msg.clone()), Err(ClusterError::InboxFull(_))));
        assert_eq!(inbox.recv().await, Some(msg.clone()));
        hub.remove_node(&NodeId::new("b"));
        assert!(matches!(a.publish(&NodeId::new("b"), msg), Err(ClusterError::NodeUnreachable(_))));
        let key = SessionKey::Ves(VesId::random());
        b.claim(key).await.expect("claim");
        hub.remove_node(&NodeId::new("b"));
        assert_eq!(a.owner(&key), Owner::Nobody);
    }
}
