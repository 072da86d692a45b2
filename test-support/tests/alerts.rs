//! The data channel's `Alert` at the relay: only for the VES's own users, and taken only
//! when the user has somewhere for it to go.

use noc_protocol::rts::{AccountActivationResponse, AlertResponse, DataRequest, ProvisionedUser, Secret};
use noc_test_support::TestRelay;
use serde_json::json;

fn alert(user: noc_protocol::UserId) -> DataRequest {
    DataRequest::Alert { user_id: user, from: "a@x.example".into(), subject: "urgent".into(), excerpt: None }
}

#[tokio::test]
async fn alerts_are_taken_only_for_the_servers_own_users_with_a_destination() {
    let relay = TestRelay::start();
    relay.create_license("acme", "acme-license-pw", 10).await;
    let mut ves = relay.ves();
    ves.license("acme", "acme-license-pw").await.expect("license");
    let _channel = ves.open().await.expect("channel");
    let mut other = relay.ves();
    other.license("acme", "acme-license-pw").await.expect("license");
    let _other_channel = other.open().await.expect("channel");
    let user: ProvisionedUser = ves
        .data(&DataRequest::ProvisionUser {
            email: "kim@acme.example".into(),
            password: Some(Secret("user-password-1".into())),
            first_name: "Kim".into(),
            last_name: "Lo".into(),
        })
        .await
        .expect("provision");
    let _: AccountActivationResponse = ves
        .post_json(
            "/account/v1/activate",
            &json!({"Login": "kim@acme.example", "Password": "user-password-1", "Msisdn": "+15550009", "TimeZone": "UTC"}),
        )
        .await
        .expect("activate");

    // Another enterprise server cannot alert this user; an unknown user is no one's.
    let refused = other.data::<AlertResponse>(&alert(user.user_id)).await.expect_err("not its user");
    assert_eq!((refused.status, refused.code.as_str()), (404, "not_found"));
    let unknown = ves.data::<AlertResponse>(&alert(noc_protocol::UserId::random())).await.expect_err("unknown");
    assert_eq!(unknown.status, 404);
    // Its own user, with no destination set: taken, and delivered nowhere (counted).
    let answer: AlertResponse = ves.data(&alert(user.user_id)).await.expect("alert");
    assert!(!answer.accepted);
    assert_eq!(relay.metric("noc_alerts_skipped_total", &[("reason", "no_destination")]), 1.0);
}
