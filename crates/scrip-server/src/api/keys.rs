//! Master key status and online rotation (admin).

use axum::extract::State;
use axum::response::Response;
use serde::Serialize;
use utoipa::ToSchema;

use super::admin::Empty;
use super::error::ApiError;
use super::extract::{Caller, JsonBody};
use super::openapi::{ReadErrors, WriteErrors};
use super::{ok_json, require_admin, AppState};

#[derive(Serialize, ToSchema)]
#[schema(as = DataKey)]
struct DataKeyView {
    id: String,
    purpose: String,
    master_key: String,
}

#[derive(Serialize, ToSchema)]
#[schema(as = MasterKeys)]
struct KeysView {
    #[schema(example = "keys")]
    object: &'static str,
    active_master_key: String,
    master_keys: Vec<String>,
    data_keys: Vec<DataKeyView>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = KeyRotation)]
struct RotationView {
    #[schema(example = "key_rotation")]
    object: &'static str,
    active_master_key: String,
    rewrapped_data_keys: usize,
    retired_master_keys: Vec<String>,
}

fn key_error(e: crate::keys::KeyError) -> ApiError {
    tracing::error!(error = %e, "key rotation failed");
    ApiError::internal()
}

/// Which master keys exist and which one wraps each data key. Ids only:
/// no key material ever leaves the vault.
#[utoipa::path(get, path = "/v1/keys", tag = "keys",
    responses((status = 200, description = "Master key ids, the active one, and which wraps each data key.", body = KeysView), ReadErrors))]
pub async fn get_keys(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let stored = state.store.data_keys().await?;
    Ok(ok_json(&KeysView {
        object: "keys",
        active_master_key: state.vault.master_key_id(),
        master_keys: state.vault.master_key_ids(),
        data_keys: stored
            .into_iter()
            .map(|w| DataKeyView {
                id: w.id,
                purpose: w.purpose,
                master_key: w.master_key_id,
            })
            .collect(),
    }))
}

/// Makes a new master key active, re-wraps every data key under it while
/// the server keeps serving, and retires master keys nothing uses.
#[utoipa::path(post, path = "/v1/keys/rotate", tag = "keys",
    request_body = Option<Empty>,
    responses((status = 200, description = "The rotation: the new active master key, data keys re-wrapped, versions retired.", body = RotationView), WriteErrors))]
pub async fn rotate(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: JsonBody<Empty>,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    body.value()?;
    let r = crate::keys::rotate(state.keys.as_ref(), &state.vault, state.store.as_ref())
        .await
        .map_err(key_error)?;
    tracing::info!(active = %r.active_master_key, rewrapped = r.rewrapped, retired = ?r.retired, "master key rotated");
    Ok(ok_json(&RotationView {
        object: "key_rotation",
        active_master_key: r.active_master_key,
        rewrapped_data_keys: r.rewrapped,
        retired_master_keys: r.retired,
    }))
}
