//! Connection to the cluster the way kubectl finds it, and API errors in the user's terms.

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use super::args::Cli;
use super::error::{CliError, Result};

pub struct Connection {
    pub client: Client,
    pub namespace: String,
    cluster_url: String,
}

pub async fn connect(cli: &Cli) -> Result<Connection> {
    let options = KubeConfigOptions {
        context: cli.context.clone(),
        ..Default::default()
    };
    let config = match &cli.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|e| {
                CliError::NotConnected(format!("cannot read kubeconfig {}: {e}", path.display()))
            })?;
            from_kubeconfig(kc, &options).await?
        }
        None => match Kubeconfig::read() {
            Ok(kc) => from_kubeconfig(kc, &options).await?,
            // Inside a pod there is no kubeconfig but a service account: use it as kubectl does.
            Err(_) if cli.context.is_none() => Config::incluster().map_err(|_| {
                CliError::NotConnected(
                    "no kubeconfig found (set KUBECONFIG, pass --kubeconfig, or create ~/.kube/config)"
                        .into(),
                )
            })?,
            Err(e) => return Err(CliError::NotConnected(format!("no kubeconfig: {e}"))),
        },
    };
    let namespace = cli
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let cluster_url = config.cluster_url.to_string();
    let client = Client::try_from(config)
        .map_err(|e| CliError::NotConnected(format!("cannot build a client: {e}")))?;
    Ok(Connection {
        client,
        namespace,
        cluster_url,
    })
}

async fn from_kubeconfig(kc: Kubeconfig, options: &KubeConfigOptions) -> Result<Config> {
    Config::from_custom_kubeconfig(kc, options)
        .await
        .map_err(|e| CliError::NotConnected(format!("unusable kubeconfig: {e}")))
}

impl Connection {
    /// Translates a failed call of `verb` on `resource` into the error a user can act on.
    pub fn error(&self, verb: &'static str, resource: &'static str, e: kube::Error) -> CliError {
        translate(&self.namespace, &self.cluster_url, verb, resource, e)
    }
}

pub fn translate(
    namespace: &str,
    cluster_url: &str,
    verb: &'static str,
    resource: &'static str,
    e: kube::Error,
) -> CliError {
    match e {
        kube::Error::Api(status) if status.code == 403 => CliError::Forbidden {
            verb,
            resource,
            namespace: namespace.into(),
        },
        kube::Error::Api(status) if status.code == 401 => CliError::NotConnected(format!(
            "the API server at {cluster_url} rejected the credentials: {}",
            status.message
        )),
        kube::Error::HyperError(_) | kube::Error::Service(_) => {
            CliError::NotConnected(format!("cannot reach the API server at {cluster_url}: {e}"))
        }
        e => CliError::Api {
            verb,
            resource,
            source: e,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> kube::Error {
        let status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "code": code, "reason": "Forbidden",
            "message": "shortenerreleases.shortener.dev \"web\" is forbidden",
        }))
        .unwrap();
        kube::Error::Api(Box::new(status))
    }

    #[test]
    fn forbidden_names_the_missing_verb_and_resource() {
        let e = translate(
            "prod",
            "https://k:6443/",
            "patch",
            "shortenerreleases.shortener.dev",
            api_error(403),
        );
        assert_eq!(
            e.to_string(),
            "not permitted: your account cannot patch shortenerreleases.shortener.dev in namespace \"prod\" (ask for RBAC on it)"
        );
        let e = translate(
            "prod",
            "https://k:6443/",
            "get",
            "configmaps",
            api_error(401),
        );
        assert!(
            e.to_string()
                .starts_with("not connected: the API server at https://k:6443/ rejected")
        );
    }
}
