//! Who is acting and in which request, carried implicitly from the HTTP
//! layer to the store's audit log: a task-local set per request by the
//! request middleware, completed with the actor once authentication ran.

use std::sync::{Arc, OnceLock};

/// The actor of work not caused by a request (sweeps, startup).
pub const SYSTEM_ACTOR: &str = "system";

#[derive(Debug, Default)]
pub struct RequestContext {
    pub request_id: String,
    actor: OnceLock<String>,
}

impl RequestContext {
    pub fn new(request_id: String) -> Arc<RequestContext> {
        Arc::new(RequestContext {
            request_id,
            actor: OnceLock::new(),
        })
    }

    /// Records the authenticated actor (the id of the secret's owner, never
    /// the secret). The first authentication of a request wins.
    pub fn set_actor(&self, actor: &str) {
        let _ = self.actor.set(actor.to_owned());
    }
}

tokio::task_local! {
    static CURRENT: Arc<RequestContext>;
}

/// Runs `f` with `ctx` as the current request.
pub async fn scope<F: std::future::Future>(ctx: Arc<RequestContext>, f: F) -> F::Output {
    CURRENT.scope(ctx, f).await
}

/// The current request's context, if running inside one.
pub fn current() -> Option<Arc<RequestContext>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// `(actor, request_id)` for the audit log: the system when outside a
/// request, `anonymous` before authentication.
pub fn audit_identity() -> (String, Option<String>) {
    match current() {
        Some(ctx) => (
            ctx.actor
                .get()
                .cloned()
                .unwrap_or_else(|| "anonymous".to_owned()),
            Some(ctx.request_id.clone()),
        ),
        None => (SYSTEM_ACTOR.to_owned(), None),
    }
}
