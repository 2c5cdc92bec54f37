//! The service part: the team's settings, routes and jobs. This module is the only entry
//! the platform uses ([`Settings`] and [`build`]); everything below it belongs to the team,
//! and `copier update` never touches it.

pub mod api;
pub mod jobs;
pub mod settings;

use std::sync::Arc;

pub use settings::Settings;

use crate::context::{BuildError, Context, Service};

/// The routes and jobs of the service, built once its settings are loaded.
pub fn build(ctx: Context) -> Result<Service, BuildError> {
    let worker = Arc::new(jobs::Worker::from_context(&ctx));
    let work = &ctx.settings.work;
    let job = worker
        .clone()
        .job(work.interval(), work.max_concurrency, ctx.stop.clone());
    Ok(Service {
        routes: api::routes(worker),
        jobs: vec![job],
    })
}
