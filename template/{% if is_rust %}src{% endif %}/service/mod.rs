//! The service part: the team's settings, routes and jobs. This module is the only entry
//! the platform uses; everything below it belongs to the team and `copier update` never
//! touches it.

pub mod api;
pub mod jobs;
pub mod settings;
