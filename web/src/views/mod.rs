//! One module per page, each beside its template in `templates/`.

pub mod activate;
pub mod devices;
pub mod home;
pub mod question;
pub mod recover;
pub mod settings;
pub mod signin;
pub mod signout;
