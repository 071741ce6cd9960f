//! The operator's own credential for each release's write API.
//!
//! The shortener refuses creates without a bearer token, and the smoke test creates a URL.
//! So each release gets a Secret `<release>-api-token` holding a random token: created by
//! the operator (server-side apply) when absent, owned by the release (deleted with it),
//! injected into the release's pods as `SHORTENER_OPERATOR_TOKEN`, and sent by the smoke
//! test. The token is never logged and never put in status or Events.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, Secret, SecretKeySelector};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Api;
use kube::api::{Patch, PatchParams};
use rand::RngCore;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::resources::{MANAGER, base_labels};

/// The key in the Secret's data.
pub const SECRET_KEY: &str = "token";
/// The variable the shortener reads it from (one more accepted token beside its own).
pub const ENV: &str = "SHORTENER_OPERATOR_TOKEN";
/// Random bytes in a token (64 hex digits).
const TOKEN_BYTES: usize = 32;

pub fn secret_name(release: &str) -> String {
    format!("{release}-api-token")
}

/// The pod's env entry: the value comes from the Secret, so the Deployment holds no token.
pub fn env_var(release: &str) -> EnvVar {
    EnvVar {
        name: ENV.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret_name(release),
                key: SECRET_KEY.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The Secret holding `token`, owned by the release.
pub fn secret(release: &str, namespace: &str, token: &str, owner: OwnerReference) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(secret_name(release)),
            namespace: Some(namespace.into()),
            labels: Some(base_labels(release)),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            SECRET_KEY.to_string(),
            ByteString(token.as_bytes().to_vec()),
        )])),
        ..Default::default()
    }
}

/// A new random token: 32 bytes from the OS's generator, hex-encoded.
pub fn new_token() -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The token in a Secret, if it holds a usable one.
pub fn token_of(secret: &Secret) -> Option<String> {
    let raw = secret.data.as_ref()?.get(SECRET_KEY)?;
    let token = std::str::from_utf8(&raw.0).ok()?.trim();
    (token.len() >= 16 && token.bytes().all(|b| b.is_ascii_graphic())).then(|| token.to_owned())
}

/// The release's token: read from its Secret, or a new one written there first.
pub async fn ensure(
    ctx: &Context,
    namespace: &str,
    release: &str,
    owner: OwnerReference,
) -> Result<String> {
    let api = Api::<Secret>::namespaced(ctx.client.clone(), namespace);
    let name = secret_name(release);
    if let Some(existing) = api.get_opt(&name).await?
        && let Some(token) = token_of(&existing)
    {
        return Ok(token);
    }
    let token = new_token();
    let applied = api
        .patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&secret(release, namespace, &token, owner)),
        )
        .await?;
    tracing::info!(secret = %name, "created the release's API token Secret");
    token_of(&applied).ok_or(Error::MissingField("data.token of the API token Secret"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_long() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 2 * TOKEN_BYTES);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn the_secret_round_trips_and_bad_contents_are_not_a_token() {
        let owner = OwnerReference {
            api_version: "shortener.dev/v1alpha1".into(),
            kind: "ShortenerRelease".into(),
            name: "web".into(),
            uid: "u1".into(),
            controller: Some(true),
            ..Default::default()
        };
        let token = new_token();
        let s = secret("web", "ns", &token, owner);
        assert_eq!(s.metadata.name.as_deref(), Some("web-api-token"));
        assert_eq!(s.metadata.owner_references.as_ref().map(Vec::len), Some(1));
        assert_eq!(token_of(&s), Some(token));
        for bad in [&b"short"[..], b"", b"has spaces in it here", &[0xff; 20]] {
            let mut s = s.clone();
            s.data = Some(BTreeMap::from([(
                SECRET_KEY.into(),
                ByteString(bad.to_vec()),
            )]));
            assert_eq!(token_of(&s), None, "{bad:?}");
        }
    }

    #[test]
    fn pods_read_the_token_from_the_secret_not_from_the_template() {
        let e = env_var("web");
        assert_eq!(e.name, ENV);
        assert_eq!(e.value, None);
        let r = e.value_from.unwrap().secret_key_ref.unwrap();
        assert_eq!(
            (r.name.as_str(), r.key.as_str()),
            ("web-api-token", SECRET_KEY)
        );
    }
}
