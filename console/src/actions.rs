//! The operators' actions that reach live sessions: the service layer's call, then what
//! it means for sessions on every node. The API and the consoles both come here, so a
//! suspension from either closes the same sessions.

use noc_protocol::{DeviceId, LicenseId, UserId};
use noc_storage::{AccountError, Feature, Principal, UserRecord};

use crate::state::ConsoleState;

/// Suspends (`true`) or reactivates a user, then closes or restores their sessions.
pub async fn set_suspended(
    state: &ConsoleState,
    p: &Principal,
    user: UserId,
    suspended: bool,
) -> Result<UserRecord, AccountError> {
    let (record, devices) = state.accounts.set_user_suspended_as(p, user, suspended).await?;
    if suspended {
        state.live.user_suspended(&record, &devices);
    } else {
        state.live.user_reactivated(&record);
    }
    Ok(record)
}

/// What an operator does to one of a user's devices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceAction {
    Revoke,
    Wipe,
    Disconnect,
}

/// Does `action` to a user's device.
pub async fn device_action(
    state: &ConsoleState,
    p: &Principal,
    user: UserId,
    device: DeviceId,
    action: DeviceAction,
) -> Result<(), AccountError> {
    match action {
        DeviceAction::Revoke => revoke_device(state, p, user, device).await,
        DeviceAction::Wipe => wipe_device(state, p, user, device).await,
        DeviceAction::Disconnect => disconnect_device(state, p, user, device).await,
    }
}

/// Asks a user's device to erase itself, then closes its session wherever it is.
pub async fn wipe_device(
    state: &ConsoleState,
    p: &Principal,
    user: UserId,
    device: DeviceId,
) -> Result<(), AccountError> {
    let owner = state.accounts.wipe_device_as(p, user, device).await?;
    state.live.device_wipe_requested(&owner, device);
    Ok(())
}

/// Disconnects a user's device wherever it is connected (it reconnects on its own).
pub async fn disconnect_device(
    state: &ConsoleState,
    p: &Principal,
    user: UserId,
    device: DeviceId,
) -> Result<(), AccountError> {
    state.accounts.device_session_action_as(p, user, device, "device.disconnect").await?;
    state.live.disconnect_device(device);
    Ok(())
}

/// A user's devices with the node each is connected to now.
pub async fn devices(
    state: &ConsoleState,
    p: &Principal,
    user: UserId,
) -> Result<Vec<(noc_storage::DeviceRecord, Option<String>)>, AccountError> {
    let devices = state.accounts.devices_of_user_as(p, user).await?;
    let ids: Vec<_> = devices.iter().map(|d| d.id).collect();
    let nodes = state.live.device_nodes(&ids).await;
    Ok(devices.into_iter().zip(nodes).collect())
}

/// A license's VES installations with the node each is connected to now.
pub async fn installations(
    state: &ConsoleState,
    p: &Principal,
    license: LicenseId,
) -> Result<Vec<crate::api::model::VesView>, AccountError> {
    let ves = state.accounts.ves_of_license_as(p, license).await?;
    let ids: Vec<_> = ves.iter().map(|v| v.id).collect();
    let nodes = state.live.ves_nodes(&ids).await;
    Ok(ves
        .into_iter()
        .zip(nodes)
        .map(|(v, node)| crate::api::model::VesView {
            id: v.id.to_string(),
            registered_at: v.registered_at,
            last_seen_at: v.last_seen_at,
            agent: v.agent,
            node,
        })
        .collect())
}

/// Changes a user's profile, then tells their enterprise server; a user who may no longer
/// use ConstantSync loses their device sessions at once.
pub async fn change_user(
    state: &ConsoleState,
    p: &Principal,
    user: UserId,
    change: &noc_storage::UserProfileChange,
) -> Result<UserRecord, AccountError> {
    let record = state.accounts.change_user_as(p, user, change).await?;
    state.live.user_changed(&record);
    if !record.allows(Feature::ConstantSync) {
        let devices = state.accounts.devices_of_user_as(p, user).await?;
        let live: Vec<_> =
            devices.iter().filter(|d| d.revoked_at.is_none() && d.wipe_requested_at.is_none()).map(|d| d.id).collect();
        state.live.devices_disallowed(&live);
    }
    Ok(record)
}

/// Changes a license; when its features changed, its users' enterprise servers hear what
/// now applies, and without ConstantSync its devices' sessions close at once (the nodes'
/// license check catches the same for changes made elsewhere).
pub async fn change_license(
    state: &ConsoleState,
    p: &Principal,
    license: LicenseId,
    change: &noc_storage::LicenseChange,
) -> Result<noc_storage::License, AccountError> {
    let before = state.accounts.license_as(p, license).await?;
    let after = state.accounts.change_license_as(p, license, change).await?;
    if before.features != after.features {
        let (users, devices) = state.accounts.license_population_as(p, license).await?;
        state.live.users_settings_changed(&users);
        if !after.features.contains(Feature::ConstantSync) {
            state.live.devices_disallowed(&devices);
        }
    }
    Ok(after)
}

/// Mails a user a password-recovery link (the operator never sees it).
pub async fn mail_recovery(state: &ConsoleState, p: &Principal, user: UserId) -> Result<(), AccountError> {
    if !state.live.can_mail() {
        return Err(AccountError::Unavailable("no SMTP server is configured ([mail] smtp_host)".into()));
    }
    let recovery = state.accounts.start_recovery_as(p, user).await?;
    state.live.mail_recovery(recovery);
    Ok(())
}

/// Deletes a user, then closes their devices' sessions and tells their enterprise server.
pub async fn delete_user(state: &ConsoleState, p: &Principal, user: UserId) -> Result<(), AccountError> {
    let (record, devices) = state.accounts.delete_user_as(p, user).await?;
    state.live.user_deleted(&record, &devices);
    Ok(())
}

/// Revokes a user's device, then closes its session wherever it is.
pub async fn revoke_device(
    state: &ConsoleState,
    p: &Principal,
    user: UserId,
    device: DeviceId,
) -> Result<(), AccountError> {
    let owner = state.accounts.revoke_device_as(p, user, device).await?;
    state.live.device_revoked(&owner, device);
    Ok(())
}
