//! The webhook dispatcher: claims due deliveries from the store, POSTs each
//! event signed with its endpoint's secret, and records the outcome with the
//! next retry (exponential backoff with jitter, for three days).
//!
//! Deliveries live in the store, so a restart resumes them. Concurrency is
//! bounded overall and per endpoint, so a slow endpoint holds at most a few
//! slots and cannot starve the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use rand::Rng;
use scrip_core::limits;
use scrip_core::webhook::next_attempt;
use sha2::Sha256;
use tokio::sync::{watch, Semaphore};

use crate::clock::system_now;
use crate::store::model::{AttemptOutcome, DeliveryAttempt, DeliveryJob};
use crate::store::Store;
use crate::vault::Vault;

/// How long the dispatcher sleeps when nothing is due.
const IDLE_POLL: Duration = Duration::from_millis(200);

/// `t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn signature_header(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return format!("t={timestamp},v1="),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

#[derive(Clone)]
pub struct Dispatcher {
    store: Arc<dyn Store>,
    vault: Arc<Vault>,
    http: reqwest::Client,
    slots: Arc<Semaphore>,
    per_endpoint: Arc<Mutex<HashMap<String, usize>>>,
}

impl Dispatcher {
    pub fn new(
        store: Arc<dyn Store>,
        vault: Arc<Vault>,
        timeout: Duration,
    ) -> Result<Dispatcher, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("Scrip-Webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Dispatcher {
            store,
            vault,
            http,
            slots: Arc::new(Semaphore::new(limits::WEBHOOK_IN_FLIGHT_MAX)),
            per_endpoint: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// Runs until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            let claimed = self.dispatch_due().await;
            if claimed == 0 {
                tokio::select! {
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }

    /// Claims what is due and free slots allow; returns how many started.
    async fn dispatch_due(&self) -> usize {
        let free = self.slots.available_permits();
        if free == 0 {
            return 0;
        }
        let in_flight = match self.per_endpoint.lock() {
            Ok(map) => map.clone(),
            Err(_) => return 0,
        };
        let jobs = match self
            .store
            .claim_deliveries(system_now(), free, in_flight)
            .await
        {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::error!(error = %e, "claiming webhook deliveries failed");
                return 0;
            }
        };
        let mut started = 0;
        for job in jobs {
            if let Ok(mut map) = self.per_endpoint.lock() {
                *map.entry(job.endpoint_id.clone()).or_default() += 1;
            }
            let Ok(permit) = self.slots.clone().acquire_owned().await else {
                return started;
            };
            started += 1;
            let this = self.clone();
            tokio::spawn(async move {
                let endpoint = job.endpoint_id.clone();
                this.deliver(job).await;
                if let Ok(mut map) = this.per_endpoint.lock() {
                    if let Some(n) = map.get_mut(&endpoint) {
                        *n = n.saturating_sub(1);
                        if *n == 0 {
                            map.remove(&endpoint);
                        }
                    }
                }
                drop(permit);
            });
        }
        started
    }

    async fn deliver(&self, job: DeliveryJob) {
        let now = system_now();
        let outcome = match self.vault.open_sealed(&job.sealed_secret, &job.endpoint_id) {
            Ok(secret) => self.attempt(&job, &secret, now).await,
            Err(e) => {
                tracing::error!(error = %e, endpoint = %job.endpoint_id, "cannot open the endpoint's signing secret");
                (
                    false,
                    None,
                    0,
                    Some("Scrip could not sign this delivery".to_owned()),
                )
            }
        };
        let (succeeded, status_code, latency_ms, error) = outcome;
        let failures = u32::try_from(job.attempt_count + 1).unwrap_or(u32::MAX);
        let retry_at = if succeeded {
            None
        } else {
            next_attempt(
                failures,
                job.first_attempt_at.unwrap_or(now),
                system_now(),
                rand::thread_rng().gen::<f64>(),
            )
        };
        let outcome = AttemptOutcome {
            succeeded,
            attempt: DeliveryAttempt {
                attempted_at: now,
                status_code,
                latency_ms,
                error,
            },
            retry_at,
        };
        if let Err(e) = self
            .store
            .record_delivery_attempt(&job.delivery_id, outcome, system_now())
            .await
        {
            tracing::error!(error = %e, delivery = %job.delivery_id, "recording a webhook attempt failed");
        }
    }

    async fn attempt(
        &self,
        job: &DeliveryJob,
        secret: &[u8],
        now: i64,
    ) -> (bool, Option<u16>, i64, Option<String>) {
        let started = Instant::now();
        let result = self
            .http
            .post(&job.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(
                "Scrip-Signature",
                signature_header(secret, now, job.body.as_bytes()),
            )
            .body(job.body.clone())
            .send()
            .await;
        let latency_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        match result {
            Ok(response) => {
                let status = response.status();
                let ok = status.is_success();
                tracing::debug!(delivery = %job.delivery_id, status = status.as_u16(), latency_ms, "webhook delivered");
                (
                    ok,
                    Some(status.as_u16()),
                    latency_ms,
                    (!ok).then(|| format!("the endpoint answered HTTP {}", status.as_u16())),
                )
            }
            Err(e) => {
                let why = if e.is_timeout() {
                    "no answer within the delivery timeout".to_owned()
                } else if e.is_connect() {
                    "could not connect to the endpoint".to_owned()
                } else {
                    "the request to the endpoint failed".to_owned()
                };
                tracing::debug!(delivery = %job.delivery_id, error = %why, "webhook attempt failed");
                (false, None, latency_ms, Some(why))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_reference_hmac() {
        // HMAC-SHA256("whsec_test", "1700000000.{}") computed independently.
        let header = signature_header(b"whsec_test", 1_700_000_000, b"{}");
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(b"whsec_test").unwrap_or_else(|_| unreachable!());
        mac.update(b"1700000000.{}");
        let expected = hex::encode(mac.finalize().into_bytes());
        assert_eq!(header, format!("t=1700000000,v1={expected}"));
        assert_ne!(signature_header(b"other", 1_700_000_000, b"{}"), header);
    }
}
