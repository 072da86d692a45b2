//! One module per page, each beside its template in `templates/`.

pub mod activate;
pub mod alert_confirm;
pub mod alerts;
pub mod calendar;
pub mod compose;
pub mod contacts;
pub mod devices;
pub mod home;
pub mod mail;
pub mod pda;
pub mod question;
pub mod recover;
pub mod settings;
pub mod signin;
pub mod signout;
pub mod small;
pub mod wap;
